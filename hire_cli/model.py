"""Decoder-only Transformer in Flax NNX: RMSNorm, rotary positions, causal attention with a KV
cache, an FFN and an output head.

The FFN (`Block.ffn`) and the output head (`Transformer.head`) are built by `make_ffn` and
`make_head`: these are the seams where HiRE-FFN and HiRE-Softmax replace the dense layers.
Every parameter carries logical axis names (`axes=`) that `sharding.py` maps onto a mesh.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.config import ModelConfig


def _param(rngs: nnx.Rngs, shape, std: float, axes, cfg: ModelConfig) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.dtype(cfg.param_dtype))
  return nnx.Param(value, axes=axes)


class RMSNorm(nnx.Module):

  def __init__(self, cfg: ModelConfig):
    self.scale = nnx.Param(jnp.ones((cfg.d_model,), jnp.dtype(cfg.param_dtype)), axes=("embed",))

  def __call__(self, x_BxLxD):
    x32 = x_BxLxD.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
    return (x32 * inv * self.scale[...].astype(jnp.float32)).astype(x_BxLxD.dtype)


def rope(x_BxLxHxK, pos_BxL, base: float):
  """Rotary position embedding on the last axis (split into two halves)."""
  half = x_BxLxHxK.shape[-1] // 2
  freq_F = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxLxF = pos_BxL[..., None].astype(jnp.float32) * freq_F
  sin, cos = jnp.sin(angle_BxLxF)[:, :, None, :], jnp.cos(angle_BxLxF)[:, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


class Attention(nnx.Module):
  """Causal multi-head attention. With a cache, the new keys/values are written at `index`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, k = cfg.d_model, cfg.n_heads, cfg.d_head
    self.w_qkv = _param(rngs, (d, 3, h, k), d**-0.5, ("embed", None, "heads", "kv"), cfg)
    self.w_out = _param(rngs, (h, k, d), (h * k)**-0.5 / math.sqrt(2 * cfg.n_layers),
                        ("heads", "kv", "embed"), cfg)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None):
    cfg, dt = self.cfg, self.cfg.compute_dtype
    qkv = jnp.einsum("bld,dthk->tblhk", x_BxLxD, self.w_qkv[...].astype(dt))
    q_BxLxHxK = rope(qkv[0], pos_BxL, cfg.rope_base)
    k_BxLxHxK = rope(qkv[1], pos_BxL, cfg.rope_base)
    v_BxLxHxK = qkv[2]
    if cache is None:
      k_BxSxHxK, v_BxSxHxK = k_BxLxHxK, v_BxLxHxK
      key_pos_S = jnp.arange(x_BxLxD.shape[1])
      new_cache = None
    else:
      k_BxSxHxK = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_BxLxHxK.astype(cache["k"].dtype),
                                                      index, axis=1)
      v_BxSxHxK = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_BxLxHxK.astype(cache["v"].dtype),
                                                      index, axis=1)
      key_pos_S = jnp.arange(k_BxSxHxK.shape[1])
      new_cache = {"k": k_BxSxHxK, "v": v_BxSxHxK}
    scores_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK.astype(dt))
    scores_BxHxLxS = scores_BxHxLxS.astype(jnp.float32) * (cfg.d_head**-0.5)
    mask_BxLxS = key_pos_S[None, None, :] <= pos_BxL[:, :, None]
    scores_BxHxLxS = jnp.where(mask_BxLxS[:, None], scores_BxHxLxS, -1e30)
    probs_BxHxLxS = jax.nn.softmax(scores_BxHxLxS, axis=-1).astype(dt)
    ctx_BxLxHxK = jnp.einsum("bhls,bshk->blhk", probs_BxHxLxS, v_BxSxHxK.astype(dt))
    out_BxLxD = jnp.einsum("blhk,hkd->bld", ctx_BxLxHxK, self.w_out[...].astype(dt))
    return out_BxLxD, new_cache


def activate(pre_BxLxF, gate_BxLxF, activation: str):
  if activation == "relu":
    return jax.nn.relu(pre_BxLxF)
  if activation == "gelu":
    return jax.nn.gelu(pre_BxLxF)
  return jax.nn.silu(gate_BxLxF) * pre_BxLxF  # swiglu


class Ffn(nnx.Module):
  """Dense FFN. Weights are stored unit-major (F x D) so a group of units is a contiguous block."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, f = cfg.d_model, cfg.d_ff
    self.w_in = _param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    if cfg.activation == "swiglu":
      self.w_gate = _param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    self.w_out = _param(rngs, (f, d), f**-0.5 / math.sqrt(2 * cfg.n_layers), ("mlp", "embed"), cfg)

  def hidden(self, x_BxLxD):
    """Activations of all F units."""
    dt = self.cfg.compute_dtype
    pre_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_in[...].astype(dt))
    gate_BxLxF = None
    if self.cfg.activation == "swiglu":
      gate_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_gate[...].astype(dt))
    return activate(pre_BxLxF, gate_BxLxF, self.cfg.activation)

  def __call__(self, x_BxLxD):
    act_BxLxF = self.hidden(x_BxLxD)
    return jnp.einsum("blf,fd->bld", act_BxLxF, self.w_out[...].astype(self.cfg.compute_dtype))


class DenseHead(nnx.Module):
  """Exact output layer: logits = W h with W: V x D."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.w = _param(rngs, (cfg.vocab_size, cfg.d_model), cfg.d_model**-0.5, ("vocab", "embed"), cfg)

  def __call__(self, h_BxLxD):
    return jnp.einsum("bld,vd->blv", h_BxLxD, self.w[...].astype(self.cfg.compute_dtype))


def make_ffn(cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  return Ffn(cfg, rngs=rngs)


def make_head(cfg: ModelConfig, *, rngs: nnx.Rngs):
  return None if cfg.tie_embeddings else DenseHead(cfg, rngs=rngs)


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg)
    self.ffn = make_ffn(cfg, rngs=rngs)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None):
    a_BxLxD, new_cache = self.attn(self.attn_norm(x_BxLxD), pos_BxL, cache, index)
    x_BxLxD = x_BxLxD + a_BxLxD
    x_BxLxD = x_BxLxD + self.ffn(self.ffn_norm(x_BxLxD))
    return x_BxLxD, new_cache


class Transformer(nnx.Module):
  """`__call__` returns the final hidden states; `logits` applies the output layer."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), 1.0, ("vocab", "embed"), cfg)
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg)
    self.head = make_head(cfg, rngs=rngs)

  def __call__(self, tokens_BxL, cache=None, index=None):
    """Hidden states for `tokens_BxL`. With `cache` (from `init_cache`) the tokens sit at
    positions index .. index+L-1 and the updated cache is returned as the second value."""
    b, l = tokens_BxL.shape
    start = 0 if index is None else index
    pos_BxL = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
    x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(self.cfg.compute_dtype)
    new_caches = []
    for i, block in enumerate(self.blocks):
      x_BxLxD, c = block(x_BxLxD, pos_BxL, None if cache is None else cache[i], index)
      new_caches.append(c)
    h_BxLxD = self.final_norm(x_BxLxD)
    return h_BxLxD, (None if cache is None else new_caches)

  def head_weight(self):
    """The output layer's W (V x D), tied or not."""
    if self.head is None:
      return self.embed[...] * (self.cfg.d_model**-0.5)
    return self.head.w[...]

  def logits(self, h_BxLxD):
    if self.head is None:
      w_VxD = self.head_weight().astype(self.cfg.compute_dtype)
      return jnp.einsum("bld,vd->blv", h_BxLxD, w_VxD)
    return self.head(h_BxLxD)


def init_cache(cfg: ModelConfig, batch: int, length: int | None = None, dtype=None):
  """Zeroed KV cache: one {'k','v'} dict of B x S x H x K arrays per layer."""
  shape = (batch, length or cfg.max_len, cfg.n_heads, cfg.d_head)
  dt = dtype or cfg.compute_dtype
  return [{"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)} for _ in range(cfg.n_layers)]
