"""HiRE-FFN: gathered == masked dense, exactness at k'_g = all, sparsity, dynamic overlap,
stop-gradient approximator loss, config errors, bytes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hire_cli import errors
from hire_cli.nn import cost, ffn, ffn_groups
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, ModelConfig

D, F, G_SIZE = 16, 64, 4  # G = 16 groups


def _hire(**hire):
  kw = dict(approx=ApproxConfig(rank=4), group_size=G_SIZE, k_fraction=0.25, k_prime_factor=1.5,
            n_static=2)  # k_g = 4, k'_g = 6, budget = 12
  kw.update(hire)
  return HiReFfnConfig(**kw)


def _cfg(activation="relu", **hire):
  return ModelConfig(vocab_size=97, d_model=D, n_layers=2, n_heads=2, d_head=8, d_ff=F,
                     max_len=32, activation=activation, hire_ffn=_hire(**hire))


def _x(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


@nnx.jit
def _call(m, x):
  return m(x)


@nnx.jit
def _served(m, x):
  return m.served(x)


@nnx.jit
def _with_aux(m, x):
  """(y, the one `hire_aux` {"loss", "metrics"} that `with_aux` sowed)."""
  y, sown = nnx.capture(m.with_aux, nnx.Intermediate)(x)
  (aux,) = sown["hire_aux"].get_value()
  return y, aux


def _recall(m, x):
  return float(_with_aux(m, x)[1]["metrics"]["recall@k"])


@nnx.jit(static_argnames=("shared",))
def _groups(m, x, shared=False):
  return m.inference_groups(x, shared=shared)


def _np(a):
  return np.asarray(a)


def _groups_of(a_XxF):
  return a_XxF.reshape(*a_XxF.shape[:-1], F // G_SIZE, G_SIZE)


@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
def test_gathered_forward_equals_masked_dense(activation):
  m = ffn.HiReFfn(_cfg(activation), rngs=nnx.Rngs(0))
  s = m.sizes
  x = _x((2, 5, D))
  out = _groups(m, x)
  read, kept = _np(out["read"]), _np(out["kept"])
  assert read.shape == (2, 5, s.n_static + s.k_prime_g)
  assert kept.shape == (2, 5, s.n_static + s.k_g)
  # Reference: the dense FFN's activations with every group outside `kept` zeroed.
  act = _groups_of(_np(m.hidden(x)))
  mask = np.zeros(act.shape[:-1], bool)
  np.put_along_axis(mask, kept, True, axis=-1)
  want = np.einsum("blf,fd->bld", (act * mask[..., None]).reshape(2, 5, F), _np(m.w_out[...]))
  np.testing.assert_allclose(out["y"], want, atol=1e-5)
  # ... and `kept` is the exact top-k_g among the candidates, static groups included.
  score = np.linalg.norm(act, axis=-1)
  for b, t in np.ndindex(2, 5):
    cand = read[b, t, s.n_static:]
    best = cand[np.argsort(-score[b, t, cand])[:s.k_g]]
    assert set(kept[b, t]) == set(range(s.n_static)) | set(best)


@pytest.mark.parametrize("activation", ["relu", "swiglu"])
@pytest.mark.parametrize("shared", [False, True])
def test_all_candidates_is_exactly_the_topk_ffn(activation, shared):
  m = ffn.HiReFfn(_cfg(activation, k_prime_factor=100.0), rngs=nnx.Rngs(1))
  assert m.sizes.k_prime_g == m.sizes.budget_g == m.sizes.dynamic
  m.dynamic_overlap = shared
  x = _x((3, 4, D), seed=1)
  want = _call(m, x)
  np.testing.assert_allclose(_served(m, x), want, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_looped_and_batched_exact_steps_agree(monkeypatch, shared):
  """CPU loops over the candidate sets, accelerators gather them all at once: same result."""
  m = ffn.HiReFfn(_cfg("swiglu"), rngs=nnx.Rngs(5))
  x = _x((3, 4, D), seed=5)
  got = {}
  for looped in (True, False):
    monkeypatch.setattr(ffn_groups, "one_set_at_a_time", lambda looped=looped: looped)
    got[looped] = jax.tree.map(np.asarray, m.inference_groups(x, shared=shared))
  np.testing.assert_allclose(got[True]["y"], got[False]["y"], atol=1e-5)
  np.testing.assert_array_equal(got[True]["kept"], got[False]["kept"])


def test_small_k_prime_is_not_secretly_exact():
  m = ffn.HiReFfn(_cfg(k_prime_factor=1.0), rngs=nnx.Rngs(2))  # random approximator, k'_g = k_g
  x = _x((4, 8, D), seed=2)
  exact, aux = _with_aux(m, x)
  np.testing.assert_array_equal(exact, _call(m, x))  # sowing the objective changes nothing
  r = float(aux["metrics"]["recall@k"])
  assert 0.0 <= r < 1.0
  assert float(aux["loss"]) > 0
  assert np.abs(_np(_served(m, x)) - _np(exact)).max() > 1e-3


def test_post_hoc_svd_init_raises_recall():
  m = ffn.HiReFfn(_cfg(approx=ApproxConfig(rank=12)), rngs=nnx.Rngs(3))
  x = _x((4, 8, D), seed=3)

  before = _recall(m, x)
  m.init_from_weights()
  after = _recall(m, x)
  assert after > before and after > 0.8, (before, after)


def test_quantized_approximator_follows_w_in_and_stays_approximate():
  """HiRE-Q for the FFN: no parameters of its own, it quantizes the current W_in, so its recall
  stays high when W_in changes; at k'_g = k_g and 4 bits it is still not exact."""
  m = ffn.HiReFfn(_cfg(approx=ApproxConfig(kind="q", bits=4), k_prime_factor=1.0),
                  rngs=nnx.Rngs(4))
  assert not jax.tree.leaves(nnx.state(m.approx, nnx.Param))
  x = _x((8, 16, D), seed=4)

  first = _recall(m, x)
  m.w_in[...] = -m.w_in[...][::-1]  # another W_in: the quantized copy follows it
  second = _recall(m, x)
  lr = ffn.HiReFfn(_cfg(k_prime_factor=1.0), rngs=nnx.Rngs(4))  # untrained rank-4 LR
  lr_recall = _recall(lr, x)
  assert 0.8 < first < 1.0 and 0.8 < second < 1.0, (first, second)
  assert first > lr_recall + 0.2, (first, lr_recall)


def test_dynamic_overlap_bounds_bytes_as_batch_grows():
  m = ffn.HiReFfn(_cfg(), rngs=nnx.Rngs(4))
  s = m.sizes
  static = set(range(s.n_static))
  x = _x((64, 1, D), seed=4)
  # Per-token candidates are independent across tokens: the first b rows serve batch b.
  per_token = _np(jax.jit(m.candidates)(x))[:, 0]
  unions = []
  for b in (1, 4, 16, 64):
    out = _groups(m, x[:b], shared=True)
    read = _np(out["read"])
    assert read.shape == (1, s.n_static + s.budget_g)  # one set for the whole batch
    read_set = set(read[0])
    assert len(read_set) == s.n_static + s.budget_g and static <= read_set
    for row in _np(out["kept"])[:, 0]:
      assert static <= set(row) and set(row) <= read_set and len(set(row)) == len(row)
    unions.append(len(static | set(per_token[:b].ravel())))
  assert unions == sorted(unions) and unions[-1] > unions[0], unions
  assert unions[-1] > s.n_static + s.budget_g, unions  # per-token sets outgrow the budget
  # The served path of 16 tokens decoding together (B x 1 x D) is that shared computation.
  want = _groups(m, x[:16], shared=True)["y"]
  m.dynamic_overlap = True
  np.testing.assert_allclose(_served(m, x[:16]), want, atol=1e-6)


@pytest.mark.parametrize("score", ["l2", "sum"])
def test_training_path_keeps_exactly_k_groups(score):
  m = ffn.HiReFfn(_cfg("gelu", score=score), rngs=nnx.Rngs(5))  # gelu: no group is exactly 0
  s = m.sizes
  act, exact, top = jax.jit(lambda x: m.topk_hidden(x))(_x((3, 7, D), seed=5))
  nonzero = np.abs(_groups_of(_np(act))).sum(-1) > 0
  assert (nonzero.sum(-1) == s.n_static + s.k_g).all()
  assert nonzero[..., :s.n_static].all()
  # The kept dynamic groups are the top-k_g by score.
  exact = _np(exact)[..., s.n_static:]
  kth = np.sort(exact, axis=-1)[..., -s.k_g]
  np.testing.assert_array_equal(nonzero[..., s.n_static:], exact >= kth[..., None])
  assert set(np.unique(_np(top))) <= set(range(s.dynamic))


@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_approximator_loss_never_moves_the_model(activation):
  m = ffn.HiReFfn(_cfg(activation), rngs=nnx.Rngs(6))
  graphdef, params, rest = nnx.split(m, nnx.Param, ...)
  x = _x((2, 6, D), seed=6)

  def with_aux(params, x):
    return nnx.capture(nnx.merge(graphdef, params, rest).with_aux, nnx.Intermediate)(x)

  def sown_loss(params, x):
    return with_aux(params, x)[1]["hire_aux"].get_value()[0]["loss"]

  def out_sum(params, x):
    return jnp.sum(with_aux(params, x)[0] ** 2)

  g_params, g_x = jax.jit(jax.grad(sown_loss, argnums=(0, 1)))(params, x)
  model_weights = ["w_in", "w_out"] + (["w_gate"] if activation == "swiglu" else [])
  for name in model_weights:
    assert not np.any(_np(g_params[name].get_value())), name
  assert not np.any(_np(g_x))
  for name in ("a", "b"):
    assert np.abs(_np(g_params["approx"]["lr"][name].get_value())).sum() > 0, name
  # The model's own output does train the weights (and not the approximator).
  g_out = jax.jit(jax.grad(out_sum))(params, x)
  assert np.abs(_np(g_out["w_in"].get_value())).sum() > 0
  assert not np.any(_np(g_out["approx"]["lr"]["a"].get_value()))


@pytest.mark.parametrize("hire,match", [
    (dict(group_size=6), "group_size=6 must divide d_ff=64"),
    (dict(k_fraction=0.9, n_static=4), "k_g \\+ n_static"),
    (dict(n_static=16), "n_static=16"),
    (dict(k_prime_factor=0.5), "k_prime_factor"),
    (dict(batch_budget_factor=0.5), "batch_budget_factor"),
    (dict(score="max"), "score"),
    (dict(topk_method="sort"), "topk_method"),
    (dict(approx=ApproxConfig(rank=32)), "rank=32"),
])
def test_bad_configs_are_user_errors(hire, match):
  with pytest.raises(errors.UserError, match=match):
    _hire(**hire).validate(F, D)
  with pytest.raises(errors.UserError, match=match):  # the model checks it when built
    _cfg(**hire)


def test_validate_accepts_the_test_config_and_sizes_follow():
  _hire().validate(F, D)
  assert ffn.ffn_sizes(_cfg()) == ffn.FfnSizes(groups=16, k_g=4, k_prime_g=6, n_static=2,
                                               budget_g=12)


def test_make_ffn_picks_the_layer():
  cfg = _cfg()
  assert type(ffn.make_ffn(cfg, rngs=nnx.Rngs(0))) is ffn.HiReFfn
  dense = dataclasses.replace(cfg, hire_ffn=None)
  assert type(ffn.make_ffn(dense, rngs=nnx.Rngs(0))) is ffn.Ffn


def test_bytes_per_token():
  wb = 2
  b = cost.ffn_bytes_per_token(_cfg(), weight_bytes=wb)
  r, kp, st, bud, g = 4, 6, 2, 12, G_SIZE
  assert b["dense"] == 2 * F * D * wb
  assert b["approx"] == r * (F + D) * wb
  assert b["hire"] == r * (F + D) * wb + 2 * (kp + st) * g * D * wb
  assert b["hire_batch"] == r * (F + D) * wb + 2 * (bud + st) * g * D * wb
  assert cost.ffn_bytes_per_token(_cfg("swiglu"))["dense"] == 3 * F * D * 2
  assert cost.ffn_bytes_per_token(dataclasses.replace(_cfg(), hire_ffn=None)) == {
      "dense": 2 * F * D * 2}


def test_transformer_with_hire_ffn_sows_one_aux_per_layer():
  from hire_cli.nn.model import Transformer
  cfg = _cfg()
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  tokens = jnp.ones((2, 5), jnp.int32)
  logits, sown = nnx.jit(lambda m, t: m.logits_with_aux(t))(model, tokens)
  aux = [v.get_value() for _, v in nnx.to_flat_state(sown)]
  assert len(aux) == cfg.n_layers and all(len(a) == 1 for a in aux)
  h = nnx.jit(lambda m, t: m(t)[0])(model, tokens)
  np.testing.assert_allclose(model.logits(h), logits, atol=1e-6)  # the model as trained
  h_served = nnx.jit(lambda m, t: m.served(t)[0])(model, tokens)
  assert h_served.shape == h.shape and np.isfinite(_np(h_served)).all()
  assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))  # no forward leaves state


@pytest.mark.parametrize("budget_factor", [1.0, 100.0])
def test_shared_set_recall_is_reported_with_dynamic_overlap(budget_factor):
  """Eval reports what serving uses: with dynamic overlap, the recall of the batch's one shared
  set next to the per-token one (all groups shared: 1; one token's worth for 8 tokens: less)."""
  from hire_cli.nn import loss
  from hire_cli.nn.model import Transformer
  cfg = _cfg(dynamic_overlap=True, batch_budget_factor=budget_factor)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  tokens_BxL = jnp.asarray(np.random.default_rng(0).integers(0, 97, (8, 6)), jnp.int32)
  _, metrics = loss.collect_aux(model.logits_with_aux(tokens_BxL)[1])
  shared, own = float(metrics["recall_shared/ffn@k"]), float(metrics["recall/ffn@k"])
  if budget_factor > 10:
    assert shared == 1.0
  else:
    assert shared < 1.0 and 0 < own < 1.0, (shared, own)
  plain = Transformer(_cfg(), rngs=nnx.Rngs(0))
  assert "recall_shared/ffn@k" not in loss.collect_aux(plain.logits_with_aux(tokens_BxL)[1])[1]
