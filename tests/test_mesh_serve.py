"""HiRE decoding on a model-parallel mesh (nn/mesh_serve.py): DA-TOP-k inside the model, on 8 CPU
devices with vocabulary rows and FFN units sharded over the `model` axis."""

import dataclasses

import jax
import numpy as np
import pytest

from hire_cli import errors
from hire_cli.lib import sharding, state
from hire_cli.nn import decode, served, topk
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig
from tests.conftest import CpuDevices

# A tiny HiRE model whose V (512), F (256 = 64 groups of 4) and heads (8) split over 8 devices;
# k' = 16 tokens and k'_g = 12 groups (k_g = 6, 2 static groups).
_MODEL = r"""
import json, re, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from hire_cli.evals import program
from hire_cli.lib import sharding, state
from hire_cli.nn import decode, mesh_serve, served, topk
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig
from tests.conftest import CpuDevices

assert jax.device_count() == 8, jax.devices()

def model(kind="lr", method="da_top_k", k_loc=0, activation="relu"):
  ap = ApproxConfig(kind=kind, rank=8)
  return ModelConfig(
      vocab_size=512, d_model=32, n_layers=2, n_heads=8, d_head=8, d_ff=256, max_len=32,
      activation=activation,
      hire_softmax=HiReSoftmaxConfig(approx=ap, k=4, k_prime=16, topk_method=method, k_loc=k_loc),
      hire_ffn=HiReFfnConfig(approx=ap, group_size=4, k_fraction=0.1, n_static=2,
                             topk_method=method, k_loc=k_loc))

ONE = sharding.make_mesh(sharding.MeshConfig(data=1, model=1), jax.devices()[:1])
MESH = sharding.make_mesh(sharding.MeshConfig(data=1, model=8))

def served_model(cfg, mesh):
  graphdef, params = state.init_params(cfg, 0, mesh)
  return served.prepare(graphdef, params, mesh)
out = {}
"""

_EXACT_TOKENS = r"""
prompt = np.random.default_rng(0).integers(3, 512, (2, 6)).astype(np.int32)
for kind, method, act in [("lr", "da_top_k", "relu"), ("q", "da_top_k", "swiglu"),
                          ("lr_q", "gather_then_top_k", "relu")]:
  cfg = model(kind, method, k_loc=16, activation=act)  # k_loc >= k' (16) and k'_g (12): exact
  single = served_model(cfg, ONE)
  sharded = served_model(cfg, MESH)
  # The graphdef records which layers serve on the mesh; one device serves as before.
  m1, m8 = (nnx.merge(*s) for s in (single, sharded))
  out[f"{kind}/on_mesh"] = [m1.head.mesh is None and m1.blocks[0].ffn.mesh is None,
                            m8.head.mesh is MESH and m8.blocks[1].ffn.mesh is MESH]
  a, b = (np.asarray(decode.greedy(g, p, cfg, prompt, 12, served=True)).tolist()
          for g, p in (single, sharded))
  out[f"{kind}/{method}"] = [a, b]
"""


@pytest.fixture(scope="module")
def mesh_runs():
  """The three 8-device scripts below in one subprocess (one JAX start): their `out` dicts."""
  parts = {"exact": _EXACT_TOKENS, "recall": _RECALL, "hlo": _HLO}
  script = _MODEL + "results = {}\n" + "".join(
      f"out = {{}}\n{body}\nresults[{name!r}] = out\n" for name, body in parts.items())
  return CpuDevices().run(script + 'print("RESULT" + json.dumps(results))\n', timeout=600)


@pytest.mark.slow
def test_da_top_k_decoding_gives_the_tokens_of_one_device(mesh_runs):
  """With k_loc >= k' DA-TOP-k selects the exact top-k', so decoding on 8 devices must give
  exactly the greedy tokens of one device (the exact step's partial sums only reorder)."""
  out = mesh_runs["exact"]
  for name, (single, sharded) in out.items():
    if name.endswith("on_mesh"):
      assert single and sharded, name
      continue
    assert single == sharded, (name, single, sharded)
    assert len(set(single[0] + single[1])) > 4, "degenerate decoding proves nothing"


_RECALL = r"""
# Kind q scores with W itself quantized: rows of W (D = 64, Gaussian) have nearly equal norms, so
# the true top-k' sit at close to random positions, which is what the formula assumes.
for k_loc in (10, 64):
  cfg = ModelConfig(vocab_size=4096, d_model=64, n_layers=1, n_heads=8, d_head=8, d_ff=64,
                    max_len=32, hire_softmax=HiReSoftmaxConfig(
                        approx=ApproxConfig(kind="q"), k=4, k_prime=64, topk_method="da_top_k",
                        k_loc=k_loc))
  graphdef, params = state.init_params(cfg, 0, MESH)
  head = served.bind(graphdef, params, MESH).head
  h_RxD = jax.random.normal(jax.random.key(1), (1024, 64))
  cand, _, true = jax.jit(lambda h: mesh_serve.softmax_serve(head, h, exact_too=True))(h_RxD)
  per_row = np.asarray(jax.vmap(lambda c, t: topk.recall(c[None], t[None]))(cand, true))
  out[k_loc] = [float(per_row.mean()), float(per_row.std() / np.sqrt(per_row.size)),
                mesh_serve.expected_recall(cfg.hire_softmax, 4096, 64, 8)]
# What `hire eval` reports on a mesh: the selection's recall next to the formula's.
from hire_cli.evals import metrics
cfg = model("lr", "da_top_k", k_loc=3)
graphdef, params = state.init_params(cfg, 0, MESH)
tokens = np.random.default_rng(0).integers(3, 512, (2, 16)).astype(np.int32)
found = metrics.make_eval_fn(graphdef, mesh=MESH)(params, tokens, tokens)
out["eval"] = {k: float(v) for k, v in found.items() if "selection" in k}
out["eval_formula"] = [topk.expected_recall(512, 16, 8, 3), topk.expected_recall(64, 12, 8, 3)]
"""


@pytest.mark.slow
def test_da_top_k_candidate_recall_matches_the_formula(mesh_runs):
  """k_loc = 10 of k' = 64 over 8 shards of V = 4096: the formula expects 0.955. Tolerance: 4
  standard errors of the mean over 1024 independent rows (about 0.004) plus 0.002 for the
  fixed W, whose rows are not exactly exchangeable (seeds 0-2 measured within 0.002)."""
  out = mesh_runs["recall"]
  measured, se, expected = out["10"]
  assert 0.9 < expected < 0.99
  assert abs(measured - expected) < 4 * se + 0.002, (measured, se, expected)
  assert out["64"][0] == 1.0 and out["64"][2] == 1.0  # k_loc = k': exact
  ev, (softmax_formula, ffn_formula) = out["eval"], out["eval_formula"]
  assert ev["expected_selection_recall/softmax"] == pytest.approx(softmax_formula)
  assert ev["expected_selection_recall/ffn"] == pytest.approx(ffn_formula)
  for layer in ("softmax", "ffn"):  # 32 tokens: only a loose check of the measured value
    assert 0.5 < ev[f"selection_recall/{layer}"] < 1.0, ev


_HLO = r"""
b = 2
for method in ("da_top_k", "gather_then_top_k"):
  cfg = model("lr", method, k_loc=5)
  graphdef, params = served_model(cfg, MESH)
  hlo = decode.compiled_step(graphdef, params, cfg, b, served=True).as_text()
  out[method] = program.collectives(hlo)
"""


@pytest.mark.slow
def test_sharded_step_gathers_only_k_loc_pairs_per_device(mesh_runs):
  """The compiled DA-TOP-k step all-gathers at most D k_loc (value or id) entries per token:
  never scores, W or W_in. The other collectives are all-reduces of B x D (attention, FFN and
  embedding partial sums, as sharded dense does) and of B x k' (the exact logits). The same
  check run on the gather-then-top-k step must fail, or it could not see a gathered score
  vector."""
  out = mesh_runs["hlo"]
  b, devices, k_loc, d_model, k_prime = 2, 8, 5, 32, 16

  def too_big(colls):
    return [c for c in colls if c["op"] not in ("all-gather", "all-reduce")
            or (c["op"] == "all-gather" and c["elements"] > b * devices * k_loc)
            or (c["op"] == "all-reduce" and c["elements"] > b * max(d_model, k_prime))]

  da = out["da_top_k"]
  assert [c for c in da if c["op"] == "all-gather"], "DA-TOP-k gathers its candidates"
  assert not too_big(da), too_big(da)
  gathered = too_big(out["gather_then_top_k"])
  assert any(c["op"] == "all-gather" and c["elements"] >= b * 512 for c in gathered), gathered


@pytest.mark.slow
def test_one_device_serves_da_top_k_as_exact(tiny_cfg):
  """One device (or a model axis of 1) is one shard: DA-TOP-k is the exact top-k there."""
  cfgs = {m: dataclasses.replace(tiny_cfg, hire_softmax=HiReSoftmaxConfig(
      approx=ApproxConfig(rank=8), k=4, k_prime=16, topk_method=m)) for m in ("exact", "da_top_k")}
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, model=1), jax.devices()[:1])
  tokens = {}
  for m, cfg in cfgs.items():
    graphdef, params = served.prepare(*state.init_params(cfg, 0, mesh), mesh)
    assert served.bind(graphdef, params, mesh).head.mesh is None
    tokens[m] = np.asarray(decode.greedy(graphdef, params, cfg, np.full((1, 3), 5), 6, True))
  np.testing.assert_array_equal(tokens["exact"], tokens["da_top_k"])
  x = jax.random.normal(jax.random.key(0), (3, 97))
  for m in topk.MESH_METHODS:
    np.testing.assert_array_equal(topk.top_k(x, 7, m)[1], topk.exact_top_k(x, 7)[1])


def test_da_top_k_settings_are_checked():
  with pytest.raises(errors.UserError, match="k_loc"):
    ModelConfig(vocab_size=97, d_model=32, d_ff=64,
                hire_softmax=HiReSoftmaxConfig(approx=ApproxConfig(rank=8), k=4, k_prime=16,
                                               topk_method="da_top_k", k_loc=-1))
  with pytest.raises(errors.UserError, match="da_recall"):
    ModelConfig(vocab_size=97, d_model=32, d_ff=64,
                hire_ffn=HiReFfnConfig(approx=ApproxConfig(rank=8), topk_method="da_top_k",
                                       da_recall=1.5))
