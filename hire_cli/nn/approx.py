"""Approximators of a weight matrix `W: N x D` (rows are outputs): HiRE-LR, HiRE-Q and LR+Q.

One implementation serves HiRE-Softmax (N = V, `W` the output layer) and HiRE-FFN (N = F,
`W = W_in`); the logical axis name of N ("vocab" or "mlp") is a constructor argument.
Approximate scores `s_BxN ~ W h` only pick candidates; exact scores are computed on those
(HIRE.md sections 1-2). `h_BxD` may carry extra leading dimensions (e.g. `B x L x D`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli import errors

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
          f"rank that large reads more bytes than W itself; lower the rank (e.g. {max(d // 8, 1)}).")
    if self.quantized:
      # lr_q quantizes A (N x r), so its columns are the r of the factor, not D.
      cols, what = (self.rank, "rank") if self.kind == "lr_q" else (d, "D")
      check_quant_shape(cols, self.bits, self.group_size, what)


def check_quant_shape(cols: int, bits: int, group_size: int, what: str = "D"):
  """Quantizing a matrix with `cols` columns: groups must tile them and int4 must pair them."""
  if group_size and cols % group_size:
    raise errors.UserError(
        f"group_size={group_size} does not divide {what}={cols}; use a divisor of {cols} "
        "(or 0 for one scale per row).")
  if bits == 4 and cols % 2:
    raise errors.UserError(
        f"int4 packs two weights per byte, so {what}={cols} must be even; use bits=8 or an even "
        f"{what}.")


# ---------------------------------------------------------------------------------------------
# Quantization: symmetric, one float32 scale per row or per group of columns.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedMatrix:
  """`W ~ scale * Q`. int4: `packed` is uint8 N x D/2 (two per byte); int8: int8 N x D."""

  packed: jax.Array
  scale_NxG: jax.Array  # float32, G = D / group_size (1 per row)
  bits: int = dataclasses.field(metadata=dict(static=True))
  d: int = dataclasses.field(metadata=dict(static=True))

  @property
  def group_size(self) -> int:
    return self.d // self.scale_NxG.shape[-1]

  @property
  def nbytes(self) -> int:
    """Bytes decoding reads: the packed weights and the scales."""
    return int(self.packed.size * self.packed.dtype.itemsize
               + self.scale_NxG.size * self.scale_NxG.dtype.itemsize)


@jax.jit
def pack_int4(q_NxD):
  """int values in [-8, 7] -> uint8 N x D/2: column 2j in the low nibble, 2j+1 in the high one."""
  nib = q_NxD.astype(jnp.uint8) & 0xF  # two's complement nibble
  return nib[..., 0::2] | (nib[..., 1::2] << 4)


@jax.jit
def unpack_int4(packed_NxDh):
  """uint8 N x D/2 -> int8 N x D in [-8, 7]; inverse of `pack_int4`."""
  lo, hi = packed_NxDh & 0xF, packed_NxDh >> 4
  both = jnp.stack([lo, hi], axis=-1).astype(jnp.int8)
  q = (both ^ 8) - 8  # sign-extend the nibble
  return q.reshape(*packed_NxDh.shape[:-1], 2 * packed_NxDh.shape[-1])


def _qmax(bits: int) -> int:
  return 2**(bits - 1) - 1  # symmetric: int4 uses [-7, 7], int8 [-127, 127]


@functools.partial(jax.jit, static_argnames=("bits", "group_size"))
def quantize(w_NxD, bits: int = 4, group_size: int = 0) -> QuantizedMatrix:
  """Symmetric round-to-nearest quantization of `W`, one scale per row or per column group.

  The result is derived from `W`, never trained: no gradient flows through it.
  """
  n, d = w_NxD.shape
  check_quant_shape(d, bits, group_size)
  gs = group_size or d
  w_NxGxC = jax.lax.stop_gradient(w_NxD).astype(jnp.float32).reshape(n, d // gs, gs)
  scale_NxG = jnp.max(jnp.abs(w_NxGxC), axis=-1) / _qmax(bits)
  scale_NxG = jnp.where(scale_NxG > 0, scale_NxG, 1.0)  # an all-zero group stays zero
  q_NxGxC = jnp.clip(jnp.round(w_NxGxC / scale_NxG[..., None]), -_qmax(bits), _qmax(bits))
  q_NxD = q_NxGxC.reshape(n, d).astype(jnp.int8)
  packed = pack_int4(q_NxD) if bits == 4 else q_NxD
  return QuantizedMatrix(packed, scale_NxG, bits, d)


def _ints(qm: QuantizedMatrix):
  """int8 N x G x C of the quantized values."""
  q_NxD = unpack_int4(qm.packed) if qm.bits == 4 else qm.packed
  return q_NxD.reshape(q_NxD.shape[0], qm.scale_NxG.shape[-1], -1)


@jax.jit
def dequantize(qm: QuantizedMatrix):
  """float32 N x D approximation of the original `W`."""
  w_NxGxC = _ints(qm).astype(jnp.float32) * qm.scale_NxG[..., None]
  return w_NxGxC.reshape(w_NxGxC.shape[0], qm.d)


@jax.jit
def quantized_scores(h_BxD, qm: QuantizedMatrix):
  """float32 `s_BxN = W_q h`: integer weights times `h` per group, then the group scales."""
  q_NxGxC = _ints(qm)
  g, c = q_NxGxC.shape[1:]
  h_BxGxC = h_BxD.reshape(*h_BxD.shape[:-1], g, c)
  # int4 and int8 values are exact in bfloat16, so `h`'s dtype loses nothing on the weights.
  part_BxNxG = jnp.einsum("...gc,ngc->...ng", h_BxGxC, q_NxGxC.astype(h_BxD.dtype),
                          preferred_element_type=jnp.float32)
  return jnp.einsum("...ng,ng->...n", part_BxNxG, qm.scale_NxG)


@functools.partial(jax.jit, static_argnames=("bits", "group_size"))
def fake_quant(w_NxD, bits: int, group_size: int):
  """Quantize-dequantize with a straight-through gradient: the forward value is what decoding
  stores, the backward pass treats it as the identity so `w` keeps training."""
  wq_NxD = dequantize(quantize(w_NxD, bits, group_size)).astype(w_NxD.dtype)
  return w_NxD + jax.lax.stop_gradient(wq_NxD - w_NxD)


# ---------------------------------------------------------------------------------------------
# Low rank.


@functools.partial(jax.jit, static_argnames=("rank",))
def svd_init(w_NxD, rank: int):
  """(a_Nxr, b_rxD) of the best rank-r approximation `a b ~ W`; sqrt(singular values) in each."""
  u_NxM, s_M, vt_MxD = jnp.linalg.svd(jax.lax.stop_gradient(w_NxD).astype(jnp.float32),
                                      full_matrices=False)
  root_R = jnp.sqrt(s_M[:rank])
  return u_NxM[:, :rank] * root_R, root_R[:, None] * vt_MxD[:rank]


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
    return jnp.einsum("...r,nr->...n", self.project(h_BxD), a_Nxr.astype(h_BxD.dtype),
                      preferred_element_type=jnp.float32)

  def load(self, a_Nxr, b_rxD):
    self.a[...] = a_Nxr.astype(self.a[...].dtype)
    self.b[...] = b_rxD.astype(self.b[...].dtype)


# ---------------------------------------------------------------------------------------------
# The approximator a layer owns.


class Approximator(nnx.Module):
  """Approximate scores of `W: N x D` by `cfg.kind`. Kind "q" has no parameters: it quantizes
  the current `W` on every call, so it follows `W` as `W` trains."""

  def __init__(self, cfg: ApproxConfig, n: int, d: int, n_axis: str, *, rngs: nnx.Rngs,
               param_dtype="float32"):
    cfg.validate(n, d)
    self.cfg, self.n, self.d = cfg, n, d
    self.lr = (LowRank(n, d, cfg.rank, n_axis, rngs=rngs, param_dtype=param_dtype)
               if cfg.low_rank else None)

  def scores(self, h_BxD, w_NxD=None):
    """float32 `s_BxN ~ W h`; `w_NxD` is only read by kind "q"."""
    cfg = self.cfg
    if cfg.kind == "q":
      if w_NxD is None:
        raise ValueError("kind 'q' quantizes W on the fly: pass w_NxD")
      return quantized_scores(h_BxD, quantize(w_NxD, cfg.bits, cfg.group_size))
    if cfg.kind == "lr":
      return self.lr(h_BxD)
    return self.lr(h_BxD, fake_quant(self.lr.a[...], cfg.bits, cfg.group_size))

  def init_from(self, w_NxD):
    """Post-hoc start: the low-rank factors from the truncated SVD of a trained `W`."""
    if self.lr is not None:
      self.lr.load(*svd_init(w_NxD, self.cfg.rank))

  def frozen_inference_tensors(self, w_NxD=None) -> dict:
    """What decoding stores: {"q": QuantizedMatrix} for q; {"a", "b"} for lr (plain arrays) and
    lr_q (`a` a QuantizedMatrix). Score them with `frozen_scores`."""
    cfg = self.cfg
    if cfg.kind == "q":
      return {"q": quantize(w_NxD, cfg.bits, cfg.group_size)}
    a_Nxr, b_rxD = jax.lax.stop_gradient((self.lr.a[...], self.lr.b[...]))
    if cfg.kind == "lr_q":
      a_Nxr = quantize(a_Nxr, cfg.bits, cfg.group_size)
    return {"a": a_Nxr, "b": b_rxD}


@jax.jit
def frozen_scores(h_BxD, tensors: dict):
  """float32 approximate scores from `Approximator.frozen_inference_tensors`."""
  if "q" in tensors:
    return quantized_scores(h_BxD, tensors["q"])
  u_BxR = jnp.einsum("...d,rd->...r", h_BxD, tensors["b"].astype(h_BxD.dtype))
  a = tensors["a"]
  if isinstance(a, QuantizedMatrix):
    return quantized_scores(u_BxR, a)
  return jnp.einsum("...r,nr->...n", u_BxR, a.astype(h_BxD.dtype),
                    preferred_element_type=jnp.float32)


@jax.jit
def distill_loss(approx_s_BxN, exact_s_BxN, temperature: float = 1.0):
  """Cross-entropy of softmax(approx / T) against softmax(stop_grad(exact) / T), float32 mean
  over all leading dimensions. The target is constant, so the loss never moves the model."""
  t = jnp.float32(temperature)
  target_BxN = jax.nn.softmax(jax.lax.stop_gradient(exact_s_BxN).astype(jnp.float32) / t, -1)
  logp_BxN = jax.nn.log_softmax(approx_s_BxN.astype(jnp.float32) / t, -1)
  return -jnp.mean(jnp.sum(target_BxN * logp_BxN, axis=-1))
