"""The cost model: bytes of weights one decode step reads, per layer kind, approximator kind and
variant (docs/method.md sections 1, 2 and 6). Benchmarks divide by these for achieved bandwidth and
roofline speedups."""

import dataclasses
import math

import jax.numpy as jnp

from hire_cli import errors
from hire_cli.nn import approx, ffn, model
from hire_cli.nn.config import ModelConfig


def dense_bytes_per_token(n: int, d: int, weight_bytes: int = 2) -> int:
  """Dense `W h` reads all of `W`: docs/method.md's `V d` bf16 words = `n d weight_bytes` bytes."""
  return n * d * weight_bytes


def bytes_per_token(kind: str, n: int, d: int, rank: int, bits: int, k_prime: int,
                    weight_bytes: int = 2, group_size: int = 0, scale_bytes: int = 4) -> float:
  """Bytes of weights one token reads: the approximator plus the `k'` exact rows of `W`.

  docs/method.md section 1 counts bf16 words; times `weight_bytes` (2 for bf16) these are:
    lr:   r (N + D) + k' D          -> r (n + d) wb + k' d wb
    q:    N D b / 16 + k' D         -> n d b / 8 + scales + k' d wb
    lr_q: (A quantized, B not)      -> n r b / 8 + scales + r d wb + k' d wb
  Scales are one `scale_bytes` number per row (group_size=0) or per group of columns; docs/method.md
  leaves them out. Activations and indices are not counted.
  """
  exact = k_prime * d * weight_bytes

  def scales(cols):
    return n * (cols // group_size if group_size else 1) * scale_bytes

  if kind == "lr":
    return rank * (n + d) * weight_bytes + exact
  if kind == "q":
    return n * d * bits / 8 + scales(d) + exact
  if kind == "lr_q":
    return n * rank * bits / 8 + scales(rank) + rank * d * weight_bytes + exact
  raise errors.UserError(f"approximator kind {kind!r} is unknown; use one of {approx.KINDS}")


def ffn_bytes_per_token(cfg: ModelConfig, weight_bytes: int = 2) -> dict:
  """Bytes of FFN weights read per token, one layer (docs/method.md section 2).

  dense: `m F d`, m = 2 matrices (3 when gated). hire: the approximator (`approx.bytes_per_token`
  with no exact rows) plus `m (k'_g + n_static) g d`. hire_batch: dynamic overlap, bytes per
  decoding step for the whole batch whatever its size: the approximator once plus
  `m (budget_g + n_static) g d`. All times `weight_bytes` (2 for bf16); a dense config has only
  "dense". Activations and group ids are not counted.
  """
  m = 3 if cfg.gated else 2
  f, d, wb = cfg.d_ff, cfg.d_model, weight_bytes
  out = {"dense": m * f * d * wb}
  if cfg.hire_ffn is None:
    return out
  s, h = ffn.ffn_sizes(cfg), cfg.hire_ffn
  a = h.approx
  approx_bytes = bytes_per_token(a.kind, f, d, a.rank, a.bits, 0, wb, a.group_size)
  block = m * h.group_size * d * wb
  out["approx"] = approx_bytes
  out["hire"] = approx_bytes + (s.k_prime_g + s.n_static) * block
  out["hire_batch"] = approx_bytes + (s.budget_g + s.n_static) * block
  return out


def dense_tree_bytes(cfg: ModelConfig) -> dict:
  """Bytes of the dense model's parameters by part, from its abstract parameter tree (the one
  source of shapes): "attn" and "ffn" (all layers), "norms", "embed" and "head" (0 if tied)."""
  dense = dataclasses.replace(cfg, hire_softmax=None, hire_ffn=None)
  out = dict.fromkeys(("attn", "ffn", "norms", "embed", "head"), 0)
  for name, x in model.abstract_params(dense).items():
    part = ("attn" if "/attn/" in name and "norm" not in name else "ffn" if "/ffn/" in name
            else "norms" if "norm" in name else name.split("/")[0])
    out[part] += math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
  return out


def weight_bytes_per_step(cfg: ModelConfig, batch: int) -> float:
  """Bytes of weights one decode step reads (the batch shares them)."""
  wb = jnp.dtype(cfg.param_dtype).itemsize
  d, v = cfg.d_model, cfg.vocab_size
  tree = dense_tree_bytes(cfg)
  f = ffn_bytes_per_token(cfg, wb)
  if cfg.hire_ffn is None:
    ffn_b = tree["ffn"]
  elif cfg.hire_ffn.dynamic_overlap:
    ffn_b = cfg.n_layers * f["hire_batch"]
  else:  # each token its own groups
    ffn_b = cfg.n_layers * (f["approx"] + batch * (f["hire"] - f["approx"]))
  embed_rows = batch * d * wb
  if cfg.hire_softmax is None:
    head = v * d * wb
  else:
    a, kp = cfg.hire_softmax.approx, cfg.hire_softmax.k_prime
    lr_part = bytes_per_token(a.kind, v, d, a.rank, a.bits, 0, wb, a.group_size)
    head = lr_part + batch * kp * d * wb
  return tree["attn"] + ffn_b + tree["norms"] + embed_rows + head
