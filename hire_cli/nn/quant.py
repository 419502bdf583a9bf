"""Quantization of a weight matrix `W: N x D` (HiRE-Q, method.md sections 1, 6): symmetric, one
float32 scale per row or per group of columns, int4 stored packed two per byte or int8.

`quantize` runs once when a server loads a checkpoint; `quantized_scores` is what a decode step
computes from the packed bytes. On CPU it walks the rows in blocks so that only one block is ever
unpacked (XLA:CPU would otherwise write and read an unpacked N x D copy every step)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from hire_cli import errors


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
def unpack_int4(packed_NxDp):
  """uint8 N x D/2 -> int8 N x D in [-8, 7]; inverse of `pack_int4`."""
  lo, hi = packed_NxDp & 0xF, packed_NxDp >> 4
  both = jnp.stack([lo, hi], axis=-1).astype(jnp.int8)
  q = (both ^ 8) - 8  # sign-extend the nibble
  return q.reshape(*packed_NxDp.shape[:-1], 2 * packed_NxDp.shape[-1])


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
  w_NxNqxCq = jax.lax.stop_gradient(w_NxD).astype(jnp.float32).reshape(n, d // gs, gs)
  scale_NxG = jnp.max(jnp.abs(w_NxNqxCq), axis=-1) / _qmax(bits)
  scale_NxG = jnp.where(scale_NxG > 0, scale_NxG, 1.0)  # an all-zero group stays zero
  q_NxNqxCq = jnp.clip(jnp.round(w_NxNqxCq / scale_NxG[..., None]), -_qmax(bits), _qmax(bits))
  q_NxD = q_NxNqxCq.reshape(n, d).astype(jnp.int8)
  packed = pack_int4(q_NxD) if bits == 4 else q_NxD
  return QuantizedMatrix(packed, scale_NxG, bits, d)


@jax.jit
def dequantize(qm: QuantizedMatrix):
  """float32 N x D approximation of the original `W` (for tests and analysis; decoding never
  materializes it)."""
  q_NxD = unpack_int4(qm.packed) if qm.bits == 4 else qm.packed
  q_NxNqxCq = q_NxD.reshape(q_NxD.shape[0], qm.scale_NxG.shape[-1], -1)
  w_NxNqxCq = q_NxNqxCq.astype(jnp.float32) * qm.scale_NxG[..., None]
  return w_NxNqxCq.reshape(w_NxNqxCq.shape[0], qm.d)


# Rows unpacked at a time by the CPU kernel: 512 x D int4 unpack to 4 MB of float32 at D = 2048,
# which stays in cache; measured at 1b shapes (F = 8192, D = 2048) 256-1024 rows tie.
BLOCK_ROWS = 512


def _block_rows(n: int) -> int:
  """The largest divisor of n that is at most BLOCK_ROWS (n itself when none is >= 64)."""
  best = max((r for r in range(1, min(n, BLOCK_ROWS) + 1) if n % r == 0))
  return best if best >= 64 else n


def accumulate_dtype(dtype):
  """float32 accumulation for narrower inputs; None (the input's own) for float32."""
  return None if jnp.dtype(dtype) == jnp.float32 else jnp.float32


def _block_scores(h_BxNqxCq, packed_RxDp, scale_RxNq, bits: int):
  """float32 scores of R rows (`Dp` packed width, `Nq` scale groups of `Cq` values): unpack
  them, integer weights times `h` per group, then scales."""
  q_RxD = unpack_int4(packed_RxDp) if bits == 4 else packed_RxDp
  g, c = h_BxNqxCq.shape[1:]
  # int4 and int8 values are exact in bfloat16, so `h`'s dtype loses nothing on the weights.
  q_RxNqxCq = q_RxD.reshape(q_RxD.shape[0], g, c).astype(h_BxNqxCq.dtype)
  acc = accumulate_dtype(h_BxNqxCq.dtype)
  if g == 1:
    # A matmul against the transposed block: XLA:CPU runs jnp.einsum("bc,rc->br") 2.6x slower.
    return jnp.matmul(h_BxNqxCq[:, 0], q_RxNqxCq[:, 0].T,
                      preferred_element_type=acc).astype(jnp.float32) * scale_RxNq[:, 0]
  part_BxRxNq = jnp.einsum("bgc,rgc->brg", h_BxNqxCq, q_RxNqxCq, preferred_element_type=acc)
  return jnp.einsum("brg,rg->br", part_BxRxNq, scale_RxNq)


@jax.jit
def quantized_scores(h_XxD, qm: QuantizedMatrix):
  """float32 `s_XxN = W_q h` from the packed weights (X any leading shape).

  On CPU the rows go through in blocks of `BLOCK_ROWS` (a loop): only one block is unpacked at a
  time, so a step reads the packed bytes once. Elsewhere the unpack is left to XLA's fusion."""
  n, g = qm.scale_NxG.shape
  h_BxNqxCq = h_XxD.reshape(-1, g, qm.d // g)
  rows = _block_rows(n) if jax.default_backend() == "cpu" else n
  if rows == n:
    s_BxN = _block_scores(h_BxNqxCq, qm.packed, qm.scale_NxG, qm.bits)
  else:
    nb = n // rows
    packed_NbxRxDp = qm.packed.reshape(nb, rows, qm.packed.shape[-1])
    scale_NbxRxNq = qm.scale_NxG.reshape(nb, rows, g)
    s_NbxBxR = jax.lax.map(lambda a: _block_scores(h_BxNqxCq, a[0], a[1], qm.bits),
                           (packed_NbxRxDp, scale_NbxRxNq))
    s_BxN = jnp.moveaxis(s_NbxBxR, 0, 1).reshape(h_BxNqxCq.shape[0], n)
  return s_BxN.reshape(*h_XxD.shape[:-1], n)


@functools.partial(jax.jit, static_argnames=("bits", "group_size"))
def fake_quant(w_NxD, bits: int, group_size: int):
  """Quantize-dequantize with a straight-through gradient: the forward value is what decoding
  stores, the backward pass treats it as the identity so `w` keeps training."""
  wq_NxD = dequantize(quantize(w_NxD, bits, group_size)).astype(w_NxD.dtype)
  return w_NxD + jax.lax.stop_gradient(wq_NxD - w_NxD)
