"""Every consumer of the served path goes through `served.py`'s interface: decode, eval's served
metrics, downstream HiRE scoring, the recall curve and the latency benchmark. The low-level
served methods of the model are guarded so that a call from anywhere else fails; a planted
second path (a consumer that calls the model's served methods itself) is caught."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hire_cli.evals import downstream, latency, metrics, recall_curve
from hire_cli.lib import sharding, state
from hire_cli.nn import decode, ffn, model, served, softmax
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig

# Who may call the model's served methods: the interface itself and the layers it is built of.
ALLOWED = {"hire_cli.nn.served", "hire_cli.nn.softmax", "hire_cli.nn.mesh_serve",
           "hire_cli.nn.model", "hire_cli.nn.ffn"}
GUARDED = [(model.Transformer, "served"), (softmax.HiReSoftmaxHead, "served_top_k"),
           (softmax.HiReSoftmaxHead, "candidates"), (softmax.HiReSoftmaxHead, "served_scores"),
           (ffn.HiReFfn, "served")]
INTERFACE = ("hidden", "select", "approx_scores", "next_token", "forward")


@pytest.fixture
def guarded(monkeypatch):
  """{interface function: calls}; a served method called from outside ALLOWED raises."""
  calls = dict.fromkeys(INTERFACE, 0)
  for cls, name in GUARDED:
    original = getattr(cls, name)

    def check(*args, _original=original, _name=f"{cls.__name__}.{name}", **kwargs):
      caller = sys._getframe(1).f_globals.get("__name__")
      assert caller in ALLOWED, f"{_name} called from {caller}, not through hire_cli.nn.served"
      return _original(*args, **kwargs)

    monkeypatch.setattr(cls, name, check)
  for name in INTERFACE:
    original = getattr(served, name)

    def counted(*args, _original=original, _name=name, **kwargs):
      calls[_name] += 1
      return _original(*args, **kwargs)

    monkeypatch.setattr(served, name, counted)
  for fn in (decode._fns, decode._forced_fn, downstream.make_score_fn, recall_curve._rank_fn):
    fn.cache_clear()  # each consumer is traced again, under the guard
  jax.clear_caches()
  return calls


@pytest.fixture(scope="module")
def hire_model(request):
  from hire_cli.nn.config import ModelConfig
  cfg = ModelConfig(vocab_size=89, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64,
                    max_len=24)
  cfg = dataclasses.replace(
      cfg, hire_softmax=HiReSoftmaxConfig(k=4, k_prime=12, approx=ApproxConfig(rank=4)),
      hire_ffn=HiReFfnConfig(approx=ApproxConfig(rank=4)))
  graphdef, params = state.init_params(cfg, 0, sharding.make_mesh(sharding.MeshConfig()))
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (2, 9)), jnp.int32)
  return cfg, graphdef, params, tokens


def _decode(cfg, graphdef, params, tokens):
  decode.generate(graphdef, params, cfg, tokens[:, :4], 3, served=True)
  decode.teacher_forced_greedy(graphdef, params, cfg, tokens[:, :4], tokens[:, 4:],
                               served=True)


def _eval(cfg, graphdef, params, tokens):
  metrics.make_eval_fn(graphdef)(params, tokens[:, :-1], tokens[:, 1:])


def _downstream(cfg, graphdef, params, tokens):
  downstream.make_score_fn(graphdef)(params, tokens[:, :-1], tokens[:, 1:],
                                     jnp.ones_like(tokens[:, 1:]))


def _recall_curve(cfg, graphdef, params, tokens):
  recall_curve._rank_fn(graphdef, 4, 12)(params, tokens)


def _bench(cfg, graphdef, params, tokens):
  """What bench-latency times: its served runner (as `runs/bench.py` builds it) timed."""
  graphdef, params = served.prepare(graphdef, params)
  runner = (cfg, params, *decode.prefill_and_step(graphdef, served=True))
  latency.time_interleaved({"hire": runner}, tokens[:1, :4], warmup=0, steps=1, repeats=0)


CONSUMERS = {"decode": (_decode, {"hidden", "next_token", "select"}),
             "eval": (_eval, {"forward", "hidden", "select"}),
             "downstream": (_downstream, {"forward", "hidden", "select"}),
             "recall_curve": (_recall_curve, {"hidden", "approx_scores"}),
             "bench": (_bench, {"hidden", "next_token", "select"})}


@pytest.mark.slow
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_consumer_takes_the_one_served_interface(guarded, hire_model, consumer):
  run, needs = CONSUMERS[consumer]
  run(*hire_model)
  assert {n for n in needs if not guarded[n]} == set(), guarded


def _second_path(m, tokens_BxL, cache=None, index=None, *, hire=True, measure=False):
  """A planted consumer-side copy of the served body: the model's served forward called from
  outside the interface (here, from the test module)."""
  return m.served(tokens_BxL, cache, index)


@pytest.mark.slow
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_a_planted_second_path_fails(guarded, hire_model, monkeypatch, consumer):
  monkeypatch.setattr(served, "hidden", _second_path)
  with pytest.raises(AssertionError, match="not through hire_cli.nn.served"):
    CONSUMERS[consumer][0](*hire_model)


def test_forward_leaves_no_state_and_serves_what_decoding_serves(hire_model):
  """A measuring forward (which sows the selection's recall) changes nothing on the module; its
  greedy token is `select`'s, the token `next_token` decodes, and the candidate of largest exact
  logit."""
  cfg, graphdef, params, tokens = hire_model
  bound = served.bind(graphdef, params)
  snapshot = lambda: jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(bound)))
  attrs = lambda: [sorted(vars(b.ffn)) for b in bound.blocks] + [sorted(vars(bound.head))]
  before, names = snapshot(), attrs()
  out = nnx.jit(lambda m, t: served.forward(m, t, measure_selection=True))(bound, tokens)
  jax.tree.map(np.testing.assert_array_equal, before, snapshot())
  assert names == attrs()
  h_BxLxD = out["h"]
  b, l, d = h_BxLxD.shape
  step = nnx.jit(lambda m, h: served.next_token(m, h, None))(bound, h_BxLxD.reshape(b * l, 1, d))
  step = step.reshape(b, l)
  np.testing.assert_array_equal(out["top1"], step)
  z_BxLxKp = jnp.take_along_axis(out["logits"], out["cand"], -1)
  best = jnp.take_along_axis(out["cand"], jnp.argmax(z_BxLxKp, -1)[..., None], -1)[..., 0]
  assert float(jnp.mean(best == out["top1"])) > 0.9  # equal up to float ties
