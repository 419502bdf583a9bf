"""Approximators: int4 packing, quantization error bounds, SVD recall, gradients, config, bytes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hire_cli import errors
from hire_cli.nn import approx, cost, quant, topk


def _normal(shape, seed=0):
  # Test-side arithmetic stays in numpy: each distinct eager jax op costs a CPU compile.
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


# --------------------------------------------------------------------------------------------
# Packing and quantization.


def test_int4_pack_round_trips_all_16_values():
  q = jnp.array([list(range(-8, 8)), list(range(7, -9, -1))], jnp.int8)
  packed = quant.pack_int4(q)
  assert packed.dtype == jnp.uint8 and packed.shape == (2, 8)
  np.testing.assert_array_equal(quant.unpack_int4(packed), q)
  # Layout: column 2j in the low nibble, 2j+1 in the high one (two's complement).
  assert int(quant.pack_int4(jnp.array([[1, -1]], jnp.int8))[0, 0]) == 0xF1


def test_int4_pack_round_trips_random():
  q = jnp.asarray(np.random.default_rng(1).integers(-8, 8, (5, 3, 34)), jnp.int8)
  packed = quant.pack_int4(q)
  assert packed.shape == (5, 3, 17)
  np.testing.assert_array_equal(quant.unpack_int4(packed), q)


@pytest.mark.parametrize("bits,group_size", [(4, 0), (4, 8), (8, 0), (8, 16)])
def test_quantize_is_exact_on_its_grid(bits, group_size):
  # A matrix already on the quantization grid (each group's max hits the top level) comes back
  # unchanged, so the stored ints and scales carry all of it.
  qmax = 2**(bits - 1) - 1
  n, d = 6, 32
  gs = group_size or d
  q_NxD = np.random.default_rng(bits).integers(-qmax, qmax + 1, (n, d))
  q_NxD[:, ::gs] = qmax
  scale_NxG = np.exp(_normal((n, d // gs), seed=3))
  w_NxD = (q_NxD.reshape(n, d // gs, gs) * scale_NxG[..., None]).astype(np.float32)
  qm = quant.quantize(w_NxD.reshape(n, d), bits, group_size)
  if bits == 4:
    assert qm.packed.dtype == jnp.uint8 and qm.packed.shape == (n, d // 2)
  else:
    assert qm.packed.dtype == jnp.int8 and qm.packed.shape == (n, d)
  assert qm.scale_NxG.shape == (n, d // gs) and qm.group_size == gs
  np.testing.assert_allclose(qm.scale_NxG, scale_NxG, rtol=1e-6)
  np.testing.assert_allclose(quant.dequantize(qm), w_NxD.reshape(n, d), rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [0, 8])
def test_quantized_scores_within_rounding_bound(bits, group_size):
  n, d = 300, 64
  # Columns of very different magnitude: per-group scales should then beat per-row ones.
  w_NxD = _normal((n, d), seed=1) * np.exp(2 * _normal((1, d), seed=2))
  h_BxD = _normal((7, d), seed=3)
  qm = quant.quantize(w_NxD, bits, group_size)
  s_BxN = np.asarray(quant.quantized_scores(h_BxD, qm))
  # Rounding moves each weight by at most half its scale: |err_bn| <= sum_j |h_bj| scale_nj / 2.
  scale_NxD = np.repeat(np.asarray(qm.scale_NxG), qm.group_size, axis=1)
  bound_BxN = np.abs(h_BxD) @ scale_NxD.T / 2
  err_BxN = np.abs(s_BxN - h_BxD @ w_NxD.T)
  assert np.all(err_BxN <= bound_BxN * (1 + 1e-4) + 1e-4)
  assert err_BxN.max() > 0  # it did quantize
  np.testing.assert_allclose(s_BxN, h_BxD @ np.asarray(quant.dequantize(qm)).T, rtol=1e-4,
                             atol=1e-3)


def test_int8_much_more_accurate_than_int4_and_groups_help():
  h_BxD = _normal((16, 64), seed=6)

  @jax.jit
  def rms_errs(w_NxD):
    exact_BxN = h_BxD @ w_NxD.T
    errs = {}
    for bits, group_size in [(4, 0), (8, 0), (4, 8)]:
      s_BxN = quant.quantized_scores(h_BxD, quant.quantize(w_NxD, bits, group_size))
      errs[bits, group_size] = jnp.sqrt(jnp.mean((s_BxN - exact_BxN)**2))
    return errs

  # Gaussian rows: the step sizes differ by 127/7 ~ 18x.
  errs = rms_errs(_normal((256, 64), seed=4))
  assert float(errs[4, 0]) > 12 * float(errs[8, 0])
  # Columns of very different magnitude: a scale per group of 8 columns beats one per row.
  errs = rms_errs(_normal((256, 64), seed=4) * np.exp(2 * _normal((1, 64), seed=5)))
  assert float(errs[4, 8]) < 0.7 * float(errs[4, 0])


def test_q_follows_w_and_passes_no_gradient():
  cfg = approx.ApproxConfig(kind="q", bits=8)
  ap = approx.Approximator(cfg, 128, 32, "vocab", rngs=nnx.Rngs(0))
  assert not jax.tree.leaves(nnx.state(ap, nnx.Param))
  w_NxD, h_BxD = _normal((128, 32)), _normal((4, 32), seed=1)
  s1, s2 = ap.scores(h_BxD, w_NxD), ap.scores(h_BxD, 3 * w_NxD)
  np.testing.assert_allclose(s2, 3 * s1, rtol=1e-5, atol=1e-4)
  grad = jax.grad(lambda w: jnp.sum(ap.scores(h_BxD, w)**2))(w_NxD)
  assert not np.any(grad)


# --------------------------------------------------------------------------------------------
# Recall of the candidates.


def _structured_w(n=2048, d=64, true_rank=16, noise=0.3):
  """A rank-16 matrix plus noise: the singular values drop ~3x after the 16th."""
  u_NxR, v_RxD = _normal((n, true_rank), seed=10), _normal((true_rank, d), seed=11)
  return u_NxR @ v_RxD / 4 + noise * _normal((n, d), seed=12)


@jax.jit
def _recall_at_8(s_BxN, w_NxD, h_BxD):
  """recall@8 of the top k'=64 approximate scores."""
  _, true_BxK = topk.exact_top_k(h_BxD @ w_NxD.T, 8)
  _, cand_BxKp = topk.exact_top_k(s_BxN, 64)
  return topk.recall(cand_BxKp, true_BxK)


def _recall(s_BxN, w_NxD, h_BxD):
  return float(_recall_at_8(s_BxN, w_NxD, h_BxD))


@pytest.fixture(scope="module")
def structured():
  return _structured_w(), _normal((64, 64), seed=13)


def test_svd_init_reaches_high_recall(structured):
  w_NxD, h_BxD = structured
  a_Nxr, b_rxD = approx.svd_init(w_NxD, 16)
  assert a_Nxr.shape == (2048, 16) and b_rxD.shape == (16, 64)
  assert _recall(h_BxD @ np.asarray(b_rxD).T @ np.asarray(a_Nxr).T, w_NxD, h_BxD) >= 0.95
  # Factors share sqrt of the singular values, so both have the same norm per component.
  a_Nxr, b_rxD = np.asarray(a_Nxr), np.asarray(b_rxD)
  np.testing.assert_allclose(np.linalg.norm(a_Nxr, axis=0), np.linalg.norm(b_rxD, axis=1),
                             rtol=1e-4)


def test_random_low_rank_has_low_recall(structured):
  w_NxD, h_BxD = structured
  lr = approx.LowRank(2048, 64, 1, "vocab", rngs=nnx.Rngs(0))
  assert _recall(lr(h_BxD), w_NxD, h_BxD) < 0.5


@pytest.mark.parametrize("kind", ["lr", "lr_q", "q"])
def test_approximator_post_hoc_recall_and_serving_form(structured, kind):
  w_NxD, h_BxD = structured
  cfg = approx.ApproxConfig(kind=kind, rank=16, bits=4, group_size=8)
  ap = approx.Approximator(cfg, 2048, 64, "vocab", rngs=nnx.Rngs(0))
  ap.init_from(w_NxD)
  s_BxN = ap.scores(h_BxD, w_NxD)
  assert s_BxN.shape == (64, 2048) and s_BxN.dtype == jnp.float32
  assert _recall(s_BxN, w_NxD, h_BxD) >= 0.95
  if kind != "lr":  # nothing derived yet: serving must not quantize on the fly
    with pytest.raises(ValueError, match="serving form"):
      ap.served_scores(h_BxD)
  ap.prepare_serving(w_NxD)
  # The serving tensors give the scores training saw; quantized ones are stored packed.
  np.testing.assert_allclose(ap.served_scores(h_BxD), s_BxN, rtol=1e-4, atol=1e-3)
  if kind != "lr":
    assert ap.served_packed[...].dtype == jnp.uint8
    assert ap.served_packed[...].shape == (2048, (64 if kind == "q" else 16) // 2)


@pytest.mark.parametrize("bits,group_size", [(4, 0), (8, 0), (4, 8)])
def test_blocked_kernel_equals_one_product(bits, group_size):
  """The CPU kernel walks the rows in blocks; it must give the unblocked product."""
  w_NxD, h_BxD = _normal((1024, 64)), _normal((3, 2, 64))
  qm = quant.quantize(w_NxD, bits, group_size)
  assert quant._block_rows(1024) == 512  # two blocks
  want = jnp.einsum("xbd,nd->xbn", h_BxD, quant.dequantize(qm))
  np.testing.assert_allclose(quant.quantized_scores(h_BxD, qm), want, rtol=1e-4, atol=1e-4)


def test_low_rank_params_carry_logical_axes():
  ap = approx.Approximator(approx.ApproxConfig(rank=4), 40, 16, "mlp", rngs=nnx.Rngs(0))
  assert ap.lr.a.get_metadata()["axes"] == ("mlp", None)
  assert ap.lr.b.get_metadata()["axes"] == (None, "embed")
  # Leading dims of h pass through.
  assert ap.scores(_normal((2, 3, 16))).shape == (2, 3, 40)


# --------------------------------------------------------------------------------------------
# Gradients.


def test_distill_loss_stops_gradient_at_the_target():
  approx_s, exact_s = _normal((4, 50), seed=1), _normal((4, 50), seed=2)
  loss_and_grads = jax.jit(jax.value_and_grad(approx.distill_loss, argnums=(0, 1)))
  _, (g_approx, g_exact) = loss_and_grads(approx_s, exact_s, 2.0)
  assert not np.any(g_exact)
  assert np.abs(g_approx).max() > 1e-3
  # At approx == exact the loss is the target's entropy and its gradient vanishes.
  loss, (g_same, _) = loss_and_grads(exact_s, exact_s, 2.0)
  np.testing.assert_allclose(g_same, 0.0, atol=1e-6)
  z = exact_s / 2.0
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(loss, -np.mean(np.sum(p * np.log(p), -1)), rtol=1e-5)


def test_lr_q_straight_through_reaches_a():
  n, d, r = 96, 32, 8
  w_NxD, h_BxD = _normal((n, d), seed=1), _normal((5, d), seed=2)
  cfg = approx.ApproxConfig(kind="lr_q", rank=r, bits=4)
  ap = approx.Approximator(cfg, n, d, "vocab", rngs=nnx.Rngs(0))

  def loss(model):
    return approx.distill_loss(model.scores(h_BxD, w_NxD), h_BxD @ w_NxD.T, 1.0)

  grad_fn = nnx.jit(nnx.grad(loss))
  grads = grad_fn(ap)
  g_a = np.asarray(grads["lr"]["a"][...])
  assert np.abs(g_a).max() > 1e-4
  assert np.abs(grads["lr"]["b"][...]).max() > 1e-4
  # Straight-through: the gradient is that of a plain LR whose `a` is the quantized one.
  plain = approx.Approximator(approx.ApproxConfig(kind="lr", rank=r), n, d, "vocab",
                              rngs=nnx.Rngs(0))
  plain.lr.load(quant.fake_quant(ap.lr.a[...], 4, 0), ap.lr.b[...])
  np.testing.assert_allclose(g_a, grad_fn(plain)["lr"]["a"][...], rtol=1e-4, atol=1e-7)
  # The forward value really is quantized (else the check above would be vacuous).
  assert not np.allclose(ap.scores(h_BxD), ap.lr(h_BxD), atol=1e-5)


# --------------------------------------------------------------------------------------------
# Config validation.


@pytest.mark.parametrize("kwargs,n,d,match", [
    (dict(kind="svd"), 64, 32, "kind"),
    (dict(bits=3), 64, 32, "use 4 or 8"),
    (dict(rank=0), 64, 32, "positive"),
    (dict(rank=32), 64, 32, "rank=32 must be < min"),
    (dict(rank=40), 64, 32, "lower the rank"),
    (dict(kind="q", group_size=12), 64, 32, "does not divide D=32"),
    (dict(kind="q", bits=4), 64, 33, "must be even"),
    (dict(kind="lr_q", rank=8, group_size=3), 64, 32, "does not divide rank=8"),
])
def test_config_errors(kwargs, n, d, match):
  with pytest.raises(errors.UserError, match=match):
    approx.Approximator(approx.ApproxConfig(**kwargs), n, d, "vocab", rngs=nnx.Rngs(0))


def test_config_accepts_valid_shapes():
  # int8 needs no even D; "q" ignores rank.
  approx.ApproxConfig(kind="q", bits=8, rank=999).validate(64, 33)
  approx.ApproxConfig(kind="lr", rank=31).validate(64, 32)


# --------------------------------------------------------------------------------------------
# Bytes per token.


def test_bytes_q_int4_is_a_quarter_of_dense_plus_exact_rows():
  n, d, kp = 32000, 512, 256
  dense = cost.dense_bytes_per_token(n, d)
  assert dense == n * d * 2
  exact_rows = kp * d * 2
  q4 = cost.bytes_per_token("q", n, d, rank=0, bits=4, k_prime=kp)
  scales = n * 4  # one float32 per row
  assert q4 == dense / 4 + scales + exact_rows
  q8 = cost.bytes_per_token("q", n, d, rank=0, bits=8, k_prime=kp, group_size=64)
  assert q8 == dense / 2 + n * (d // 64) * 4 + exact_rows
  # The formula counts what quantize() really stores.
  qm = quant.quantize(jnp.ones((8, 64)), 4, 16)
  assert qm.nbytes == cost.bytes_per_token("q", 8, 64, 0, 4, 0, group_size=16)


def test_bytes_lr_is_small_and_lr_q_smaller():
  n, d, r, kp = 32000, 512, 64, 64
  dense = cost.dense_bytes_per_token(n, d)
  lr = cost.bytes_per_token("lr", n, d, rank=r, bits=4, k_prime=kp)
  assert lr == r * (n + d) * 2 + kp * d * 2
  assert lr < 0.15 * dense
  lr_q = cost.bytes_per_token("lr_q", n, d, rank=r, bits=4, k_prime=kp)
  assert lr_q == n * r / 2 + n * 4 + r * d * 2 + kp * d * 2
  assert lr_q < lr
  with pytest.raises(errors.UserError):
    cost.bytes_per_token("dense", n, d, r, 4, kp)


def test_whitened_svd_fits_the_outputs_on_the_data_better_than_the_svd_of_w():
  """The rank-r fit on inputs of second moment C minimises E||(W - a b) h||^2: lower than the
  plain SVD's error on such inputs (which minimises ||W - a b|| instead), equal to it when C = I,
  and no other rank-r factorisation tried does better."""
  rng = np.random.default_rng(3)
  w_NxD = rng.normal(size=(64, 16)).astype(np.float32)
  mix_DxD = rng.normal(size=(16, 16)) * np.geomspace(10, 0.1, 16)  # a few large directions
  h_XxD = (rng.normal(size=(4096, 16)) @ mix_DxD.T).astype(np.float32)
  cov_DxD = h_XxD.T @ h_XxD / len(h_XxD)

  def err(a_Nxr, b_rxD):
    return float(np.mean(np.sum((h_XxD @ (w_NxD - np.asarray(a_Nxr) @ np.asarray(b_rxD)).T) ** 2,
                                -1)))

  plain = err(*approx.svd_init(w_NxD, 4))
  fitted = err(*approx.whitened_svd_init(w_NxD, cov_DxD, 4))
  assert fitted < 0.8 * plain, (fitted, plain)
  a, b = approx.whitened_svd_init(w_NxD, np.eye(16, dtype=np.float32), 4)
  np.testing.assert_allclose(np.asarray(a) @ np.asarray(b),
                             np.asarray(np.matmul(*approx.svd_init(w_NxD, 4))), atol=1e-4)
  for _ in range(3):  # random rank-4 perturbations of the optimum are worse
    a, b = (np.asarray(x) for x in approx.whitened_svd_init(w_NxD, cov_DxD, 4))
    assert err(a + 0.05 * rng.normal(size=a.shape), b) > fitted
