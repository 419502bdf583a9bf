"""Approximators of a weight matrix `W: N x D` (rows are outputs): HiRE-LR, HiRE-Q and LR+Q.

One implementation serves HiRE-Softmax (N = V, `W` the output layer) and HiRE-FFN (N = F,
`W = W_in`); the logical axis name of N ("vocab" or "mlp") is a constructor argument.
Approximate scores `s_BxN ~ W h` only pick candidates; exact scores are computed on those
(docs/method.md sections 1-2). `h_BxD` may carry extra leading dimensions (e.g. `B x L x D`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli import errors, validate
from hire_cli.nn import quant

KINDS = ("lr", "q", "lr_q")
BITS = (4, 8)


@dataclasses.dataclass(frozen=True)
class ApproxConfig:
  """Which compressed copy of `W` predicts the candidates."""

  kind: str = "lr"  # lr: A (B h) | q: quantized W | lr_q: lr with A quantized
  rank: int = 32  # r: inner width of the low-rank factors (lr, lr_q); < min(N, D)
  bits: int = 4  # b: bits per quantized weight, 4 (packed two per byte) or 8 (q, lr_q)
  group_size: int = 0  # columns sharing one quantization scale; 0 = one scale per row

  def __post_init__(self):
    validate.fields(self)
    if self.kind not in KINDS:
      raise errors.UserError(f"ApproxConfig.kind={self.kind!r} is unknown; use one of {KINDS}.")
    if self.bits not in BITS:
      raise errors.UserError(f"ApproxConfig.bits={self.bits} is unsupported; use 4 or 8.")
    if self.rank <= 0:
      raise errors.UserError(f"ApproxConfig.rank={self.rank} must be positive (32 is typical).")
    if self.group_size < 0:
      raise errors.UserError(
          f"ApproxConfig.group_size={self.group_size} must be >= 0 (0 = one scale per row).")

  @property
  def low_rank(self) -> bool:
    return self.kind in ("lr", "lr_q")

  @property
  def quantized(self) -> bool:
    return self.kind in ("q", "lr_q")

  def validate(self, n: int, d: int):
    """Checks that need the shape of `W: n x d`; raises UserError with a fix."""
    if self.low_rank and self.rank >= min(n, d):
      raise errors.UserError(
          f"ApproxConfig.rank={self.rank} must be < min(N, D) = {min(n, d)} (N={n}, D={d}): a "
          "rank that large reads more bytes than W itself; lower the rank "
          f"(e.g. {max(d // 8, 1)}).")
    if self.quantized:
      # lr_q quantizes A (N x r), so its columns are the r of the factor, not D.
      cols, what = (self.rank, "rank") if self.kind == "lr_q" else (d, "D")
      quant.check_quant_shape(cols, self.bits, self.group_size, what)


# ---------------------------------------------------------------------------------------------
# Low rank.


@functools.partial(jax.jit, static_argnames=("rank",))
def svd_init(w_NxD, rank: int):
  """(a_Nxr, b_rxD) of the best rank-r approximation `a b ~ W`; sqrt(singular values) in each."""
  u_NxM, s_M, vt_MxD = jnp.linalg.svd(jax.lax.stop_gradient(w_NxD).astype(jnp.float32),
                                      full_matrices=False)
  root_r = jnp.sqrt(s_M[:rank])
  return u_NxM[:, :rank] * root_r, root_r[:, None] * vt_MxD[:rank]


@functools.partial(jax.jit, static_argnames=("rank",))
def whitened_svd_init(w_NxD, cov_DxD, rank: int):
  """(a_Nxr, b_rxD) of the rank-r `a b` closest to W on the inputs it is fed: minimises
  E_h ||(W - a b) h||^2 for inputs h of second moment `cov_DxD` (E h h^T), i.e. the logits'
  error on the data rather than W's. With cov = L L^T: the truncated SVD of W L, mapped back by
  L^-1 (the plain SVD when cov is the identity)."""
  w = jax.lax.stop_gradient(w_NxD).astype(jnp.float32)
  cov = cov_DxD.astype(jnp.float32)
  ev_D, q_DxD = jnp.linalg.eigh(cov + 1e-6 * jnp.trace(cov) / cov.shape[0] * jnp.eye(cov.shape[0]))
  root_D = jnp.sqrt(jnp.maximum(ev_D, 1e-12))
  u_NxM, s_M, vt_MxD = jnp.linalg.svd(w @ (q_DxD * root_D), full_matrices=False)
  root_r = jnp.sqrt(s_M[:rank])
  return u_NxM[:, :rank] * root_r, (root_r[:, None] * vt_MxD[:rank]) @ (q_DxD / root_D).T


class LowRank(nnx.Module):
  """`s = a (b h)` with `a: N x r`, `b: r x D`; random init, or `svd_init` from a trained W."""

  def __init__(self, n: int, d: int, rank: int, n_axis: str, *, rngs: nnx.Rngs,
               param_dtype="float32"):
    dt = jnp.dtype(param_dtype)
    # s_n = sum_r a_nr (b h)_r has the scale of W h (rows of norm ~1) at init.
    self.a = nnx.Param(rank**-0.5 * jax.random.normal(rngs.params(), (n, rank), dt),
                       axes=(n_axis, None))
    self.b = nnx.Param(d**-0.5 * jax.random.normal(rngs.params(), (rank, d), dt),
                       axes=(None, "embed"))

  def project(self, h_BxD):
    """`u = b h`: the r-dimensional code of `h`."""
    return jnp.einsum("...d,rd->...r", h_BxD, self.b[...].astype(h_BxD.dtype))

  def __call__(self, h_BxD, a_Nxr=None):
    """float32 scores; `a_Nxr` overrides `a` (lr_q passes its fake-quantized copy)."""
    a_Nxr = self.a[...] if a_Nxr is None else a_Nxr
    return jnp.matmul(self.project(h_BxD), a_Nxr.astype(h_BxD.dtype).T,
                      preferred_element_type=quant.accumulate_dtype(h_BxD.dtype)
                      ).astype(jnp.float32)

  def load(self, a_Nxr, b_rxD):
    self.a[...] = a_Nxr.astype(self.a[...].dtype)
    self.b[...] = b_rxD.astype(self.b[...].dtype)


# ---------------------------------------------------------------------------------------------
# The approximator a layer owns.


class Serving(nnx.Variable):
  """A tensor a server keeps, derived once from the trained weights when a checkpoint is loaded
  for serving (`Approximator.prepare_serving`); never trained, never checkpointed."""


class Approximator(nnx.Module):
  """Approximate scores of `W: N x D` by `cfg.kind`, in two forms.

  Training (`scores`): kind "q" has no parameters and quantizes the current `W` on every call,
  so it follows `W` as `W` trains; lr_q trains `A` through a straight-through fake quantizer.
  Serving (`served_scores`, after `prepare_serving` once at load time, docs/method.md section 6): lr
  reads `A` and `B`; q reads `W` packed (int4 two per byte, or int8) with its scales; lr_q reads
  `A` packed with its scales, and `B`. Nothing is quantized per step."""

  def __init__(self, cfg: ApproxConfig, n: int, d: int, n_axis: str, *, rngs: nnx.Rngs,
               param_dtype="float32"):
    cfg.validate(n, d)
    self.cfg, self.n, self.d = cfg, n, d
    self.lr = (LowRank(n, d, cfg.rank, n_axis, rngs=rngs, param_dtype=param_dtype)
               if cfg.low_rank else None)
    self.serving_ready = not cfg.quantized  # lr serves its parameters as they are

  def scores(self, h_BxD, w_NxD=None):
    """float32 `s_BxN ~ W h` as trained; `w_NxD` is only read by kind "q"."""
    cfg = self.cfg
    if cfg.kind == "q":
      if w_NxD is None:
        raise ValueError("kind 'q' quantizes W on the fly: pass w_NxD")
      return quant.quantized_scores(h_BxD, quant.quantize(w_NxD, cfg.bits, cfg.group_size))
    if cfg.kind == "lr":
      return self.lr(h_BxD)
    return self.lr(h_BxD, quant.fake_quant(self.lr.a[...], cfg.bits, cfg.group_size))

  def init_from(self, w_NxD, cov_DxD=None):
    """Post-hoc start: the low-rank factors from the truncated SVD of a trained `W`, or with
    `cov_DxD` (the second moment of the layer's inputs on calibration text) the rank-r fit of
    W's outputs on such inputs (`whitened_svd_init`)."""
    if self.lr is not None:
      self.lr.load(*(svd_init(w_NxD, self.cfg.rank) if cov_DxD is None else
                     whitened_svd_init(w_NxD, cov_DxD, self.cfg.rank)))

  def prepare_serving(self, w_NxD) -> None:
    """Derives the serving tensors from the trained weights (`w_NxD` is read by kind "q")."""
    cfg = self.cfg
    if cfg.kind == "lr":
      return
    src = w_NxD if cfg.kind == "q" else self.lr.a[...]
    qm = quant.quantize(jax.lax.stop_gradient(src), cfg.bits, cfg.group_size)
    self.served_packed = Serving(qm.packed)
    self.served_scale = Serving(qm.scale_NxG)
    self.serving_ready = True

  def served_scores(self, h_BxD):
    """float32 approximate scores from the serving tensors only (see the class docstring)."""
    return scores_from_serving(self.cfg, self.d, self.serving_arrays(), h_BxD)

  def serving_arrays(self) -> dict:
    """The serving tensors by name: "a", "packed", "scale" have one row per output (N rows;
    a model-parallel mesh shards them like `W`), "b" is r x D (replicated)."""
    if not self.serving_ready:
      raise ValueError("the approximator has no serving form yet: call "
                       "`served.prepare(graphdef, params)` when loading the checkpoint")
    if self.cfg.kind == "lr":
      return {"a": self.lr.a[...], "b": self.lr.b[...]}
    out = {"packed": self.served_packed[...], "scale": self.served_scale[...]}
    return out if self.cfg.kind == "q" else {**out, "b": self.lr.b[...]}


ROW_ARRAYS = ("a", "packed", "scale")  # serving arrays with one row per output (N)


def scores_from_serving(cfg: ApproxConfig, d: int, arrays: dict, h_BxD):
  """float32 `s_BxN` from `Approximator.serving_arrays()`; N is whatever rows they hold, so a
  shard of the rows (inside `shard_map`) gives the scores of that shard."""
  if cfg.kind == "lr":
    u_Bxr = jnp.einsum("...d,rd->...r", h_BxD, arrays["b"].astype(h_BxD.dtype))
    return jnp.matmul(u_Bxr, arrays["a"].astype(h_BxD.dtype).T,
                      preferred_element_type=quant.accumulate_dtype(h_BxD.dtype)
                      ).astype(jnp.float32)
  if cfg.kind == "q":
    return quant.quantized_scores(
        h_BxD, quant.QuantizedMatrix(arrays["packed"], arrays["scale"], cfg.bits, d))
  u_Bxr = jnp.einsum("...d,rd->...r", h_BxD, arrays["b"].astype(h_BxD.dtype))
  return quant.quantized_scores(
      u_Bxr, quant.QuantizedMatrix(arrays["packed"], arrays["scale"], cfg.bits, cfg.rank))


@jax.jit
def distill_loss(approx_s_BxN, exact_s_BxN, temperature: float = 1.0):
  """Cross-entropy of softmax(approx / T) against softmax(stop_grad(exact) / T), float32 mean
  over all leading dimensions. The target is constant, so the loss never moves the model."""
  t = jnp.float32(temperature)
  target_BxN = jax.nn.softmax(jax.lax.stop_gradient(exact_s_BxN).astype(jnp.float32) / t, -1)
  logp_BxN = jax.nn.log_softmax(approx_s_BxN.astype(jnp.float32) / t, -1)
  return -jnp.mean(jnp.sum(target_BxN * logp_BxN, axis=-1))
