"""Decoder-only Transformer in Flax NNX: RMSNorm, rotary positions, causal attention with a KV
cache, an FFN (`ffn.py`) and an output head (`softmax.py`).

`make_ffn` and `make_head` build the dense or the HiRE layer from the config. `hire=True` asks
every HiRE layer for its inference path (predicted candidates, exact compute on them only);
`hire=False` is the model as trained. Every parameter carries logical axis names (`axes=`) that
`sharding.py` maps onto a mesh.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.config import ModelConfig
from hire_cli.ffn import make_ffn
from hire_cli.layers import RMSNorm, param, rope
from hire_cli.softmax import make_head


class Attention(nnx.Module):
  """Causal multi-head attention. With a cache, the new keys/values are written at `index`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, k = cfg.d_model, cfg.n_heads, cfg.d_head
    self.w_qkv = param(rngs, (d, 3, h, k), d**-0.5, ("embed", None, "heads", "kv"), cfg)
    self.w_out = param(rngs, (h, k, d), (h * k)**-0.5 / math.sqrt(2 * cfg.n_layers),
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


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg)
    self.ffn = make_ffn(cfg, rngs=rngs)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None, hire=False):
    a_BxLxD, new_cache = self.attn(self.attn_norm(x_BxLxD), pos_BxL, cache, index)
    x_BxLxD = x_BxLxD + a_BxLxD
    x_BxLxD = x_BxLxD + self.ffn(self.ffn_norm(x_BxLxD), hire=hire)
    return x_BxLxD, new_cache


class Transformer(nnx.Module):
  """`__call__` returns the final hidden states; `logits` applies the output layer."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), 1.0, ("vocab", "embed"), cfg)
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg)
    self.head = make_head(cfg, rngs=rngs)

  def __call__(self, tokens_BxL, cache=None, index=None, hire=False):
    """Hidden states for `tokens_BxL`. With `cache` (from `init_cache`) the tokens sit at
    positions index .. index+L-1 and the updated cache is returned as the second value."""
    b, l = tokens_BxL.shape
    start = 0 if index is None else index
    pos_BxL = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
    x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(self.cfg.compute_dtype)
    new_caches = []
    for i, block in enumerate(self.blocks):
      x_BxLxD, c = block(x_BxLxD, pos_BxL, None if cache is None else cache[i], index, hire)
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
