"""Decoder-only Transformer in Flax NNX: RMSNorm, rotary positions, causal attention with a KV
cache, an FFN (`ffn.py`) and an output head (`softmax.py`).

`make_ffn` and `make_head` build the dense or the HiRE layer from the config. The forwards differ
only in what the HiRE layers do:
- `model(tokens, cache, index)`, `model.logits(h)`: the model as trained, exact.
- `model.served(tokens, cache, index)`, `model.served_top_k(h, k)`: the served path (HIRE.md
  section 6), each HiRE layer on its predicted candidates, computed exactly on those only.
- `model.logits_with_aux(tokens)`: exact logits and the HiRE layers' approximator objectives,
  which they sow as `hire_aux` and this method captures (`nnx.capture`).
No forward leaves state on the module. Every parameter carries logical axis names (`axes=`) that
`sharding.py` maps onto a mesh. In the training forward (`logits_with_aux`) each block runs
under `nnx.remat` with the config's policy (`REMAT`): what the backward pass keeps changes, never
the numbers.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn.config import ModelConfig
from hire_cli.nn.ffn import make_ffn
from hire_cli.nn.layers import RMSNorm, param, rope
from hire_cli.nn.softmax import make_head

# ModelConfig.remat -> the jax.checkpoint policy (what is saved for the backward pass)
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Attention(nnx.Module):
  """Causal multi-head attention. With a cache (keys and values at positions < `index`), the
  L new tokens attend to it and to themselves; their keys and values are returned for
  `write_cache`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, k = cfg.d_model, cfg.n_heads, cfg.d_head
    self.w_qkv = param(rngs, (d, 3, h, k), d**-0.5, ("embed", None, "heads", "kv"), cfg)
    self.w_out = param(rngs, (h, k, d), (h * k)**-0.5 / math.sqrt(2 * cfg.n_layers),
                        ("heads", "kv", "embed"), cfg)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None):
    cfg, dt = self.cfg, self.cfg.compute_dtype
    # The output keeps W's (t h k) order: asking for "tblhk" made XLA:CPU transpose all of W
    # (a copy of 3 D H K floats) on every call, ~20x the cost of the product at decode.
    qkv_BxLx3xHxK = jnp.einsum("bld,dthk->blthk", x_BxLxD, self.w_qkv[...].astype(dt))
    q_BxLxHxK = rope(qkv_BxLx3xHxK[:, :, 0], pos_BxL, cfg.rope_base)
    k_BxLxHxK = rope(qkv_BxLx3xHxK[:, :, 1], pos_BxL, cfg.rope_base)
    v_BxLxHxK = qkv_BxLx3xHxK[:, :, 2]
    # Head-major B x H x S x K (stored B x S x H x K, the cache was transposed every step), and
    # the new keys attended to apart from the cached ones, so the cache itself is only read.
    q_BxHxLxK, k_BxHxLxK, v_BxHxLxK = (a.transpose(0, 2, 1, 3).astype(dt)
                                       for a in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
    scale = cfg.d_head**-0.5
    l = x_BxLxD.shape[1]
    causal_LxL = jnp.arange(l)[None, :] <= jnp.arange(l)[:, None]
    new_BxHxLxL = jnp.einsum("bhlk,bhmk->bhlm", q_BxHxLxK, k_BxHxLxK).astype(jnp.float32) * scale
    new_BxHxLxL = jnp.where(causal_LxL, new_BxHxLxL, -1e30)
    if cache is None:
      probs_BxHxLxL = jax.nn.softmax(new_BxHxLxL, axis=-1).astype(dt)
      ctx_BxHxLxK = jnp.einsum("bhlm,bhmk->bhlk", probs_BxHxLxL, v_BxHxLxK)
      new_cache = None
    else:  # keys at positions < index come from the cache
      old_k, old_v = cache["k"].astype(dt), cache["v"].astype(dt)
      old_BxHxLxS = jnp.einsum("bhlk,bhsk->bhls", q_BxHxLxK, old_k).astype(jnp.float32) * scale
      old_BxHxLxS = jnp.where(jnp.arange(old_k.shape[2]) < index, old_BxHxLxS, -1e30)
      probs = jax.nn.softmax(jnp.concatenate([old_BxHxLxS, new_BxHxLxL], -1), axis=-1).astype(dt)
      s = old_k.shape[2]
      ctx_BxHxLxK = (jnp.einsum("bhls,bhsk->bhlk", probs[..., :s], old_v)
                     + jnp.einsum("bhlm,bhmk->bhlk", probs[..., s:], v_BxHxLxK))
      # The new keys and values only: `write_cache` puts them at `index` in a separate
      # program. Updating the cache here, where it is also read, made XLA:CPU copy the whole
      # cache twice per layer and step (3x slower at batch 8, context 1024).
      new_cache = {"k": k_BxHxLxK.astype(cache["k"].dtype), "v": v_BxHxLxK.astype(cache["v"].dtype)}
    ctx_BxLxHxK = ctx_BxHxLxK.transpose(0, 2, 1, 3)
    out_BxLxD = jnp.einsum("blhk,hkd->bld", ctx_BxLxHxK, self.w_out[...].astype(dt))
    return out_BxLxD, new_cache


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg)
    self.ffn = make_ffn(cfg, rngs=rngs)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None, ffn_path="__call__"):
    """`ffn_path` names the FFN's forward ("__call__", "served" or "with_aux", see `ffn.py`);
    attention has one path."""
    a_BxLxD, new_cache = self.attn(self.attn_norm(x_BxLxD), pos_BxL, cache, index)
    x_BxLxD = x_BxLxD + a_BxLxD
    x_BxLxD = x_BxLxD + getattr(self.ffn, ffn_path)(self.ffn_norm(x_BxLxD))
    return x_BxLxD, new_cache


class Transformer(nnx.Module):
  """`__call__` (exact) and `served` return the final hidden states; `logits` applies the
  output layer, `served_top_k` its served path."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), 1.0, ("vocab", "embed"), cfg)
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg)
    self.head = make_head(cfg, rngs=rngs)

  def __call__(self, tokens_BxL, cache=None, index=None):
    """Hidden states for `tokens_BxL`. With `cache` (from `init_cache`) the tokens sit at
    positions index .. index+L-1 and the second value is their keys and values per layer;
    `write_cache(cache, that, index)` stores them."""
    return self._forward(tokens_BxL, cache, index, "__call__")

  def served(self, tokens_BxL, cache=None, index=None):
    """`__call__` on the served path: each HiRE-FFN computes only the groups its approximator
    predicts (a model without one gives `__call__`'s result)."""
    return self._forward(tokens_BxL, cache, index, "served")

  def logits_with_aux(self, tokens_BxL, constrain=None):
    """(logits_BxLxV, sown): the exact logits of the model as trained (no cache) and the
    `hire_aux` each HiRE layer sowed (an nnx.State; `loss.collect_aux` sums and names them).
    They are captured here, so the module keeps nothing between calls. `constrain` (x -> x, e.g.
    a sharding constraint) is applied to the residual stream between blocks."""

    def run(model):
      h_BxLxD, _ = model._forward(tokens_BxL, None, None, "with_aux", constrain)
      return model.logits(h_BxLxD) if model.head is None else model.head.with_aux(h_BxLxD)

    return nnx.capture(run, nnx.Intermediate)(self)

  def prepare_serving(self):
    """Derives every HiRE layer's serving tensors from the trained weights (HIRE.md section 6):
    once when a checkpoint is loaded for serving; `served` and `served_top_k` read only them and
    the gathered rows or blocks of the exact matrices. A no-op when already prepared."""
    layers = [b.ffn for b in self.blocks] + [self.head]
    for layer in layers:
      if hasattr(layer, "prepare_serving") and not layer.approx.serving_ready:
        layer.prepare_serving()

  def serve_on(self, mesh):
    """Every HiRE layer whose top-k method is a mesh method (`da_top_k`, `gather_then_top_k`)
    serves sharded over `mesh`'s model axis (`mesh_serve.py`); the others as before."""
    for layer in [b.ffn for b in self.blocks] + [self.head]:
      if hasattr(layer, "serve_on"):
        layer.serve_on(mesh)

  def _forward(self, tokens_BxL, cache, index, ffn_path: str, constrain=None):
    b, l = tokens_BxL.shape
    start = 0 if index is None else index
    pos_BxL = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
    # Training on a sharded mesh pins the residual stream to its batch layout, so that XLA
    # gathers weights sharded over the batch's devices (FSDP) instead of the activations.
    constrain = constrain or (lambda x: x)
    x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(self.cfg.compute_dtype)
    x_BxLxD = constrain(x_BxLxD)
    new_caches = []
    for i, block in enumerate(self.blocks):
      if ffn_path == "with_aux" and self.cfg.remat != "none":  # the training forward
        remat = nnx.remat(lambda blk, x, pos: blk(x, pos, None, None, ffn_path)[0],
                          policy=REMAT_POLICIES[self.cfg.remat])
        x_BxLxD = constrain(remat(block, x_BxLxD, pos_BxL))
        continue
      x_BxLxD, c = block(x_BxLxD, pos_BxL, None if cache is None else cache[i], index, ffn_path)
      x_BxLxD = constrain(x_BxLxD)
      new_caches.append(c)
    h_BxLxD = self.final_norm(x_BxLxD)
    return h_BxLxD, (None if cache is None else new_caches)

  def head_weight(self):
    """The output layer's W (V x D), tied or not."""
    if self.head is None:
      return self.embed[...] * (self.cfg.d_model**-0.5)
    return self.head.w[...]

  def logits(self, h_BxLxD):
    """Exact logits_BxLxV."""
    if self.head is None:
      w_VxD = self.head_weight().astype(self.cfg.compute_dtype)
      return jnp.einsum("bld,vd->blv", h_BxLxD, w_VxD)
    return self.head(h_BxLxD)

  def served_top_k(self, h_BxLxD, k: int):
    """(values_BxLxK float32, ids_BxLxK): the output layer's top-k on the served path, i.e.
    HiRE-Softmax's exact top-k among its k' candidates, or the exact top-k of the logits."""
    if self.cfg.hire_softmax is not None:
      return self.head.served_top_k(h_BxLxD, k)[:2]
    return jax.lax.top_k(self.logits(h_BxLxD).astype(jnp.float32), k)


def cache_with(cache, new_kv, index):
  """The cache with the new keys and values (B x H x L x K per layer, from `Transformer`)
  stored at positions index .. index+L-1."""
  return [{n: jax.lax.dynamic_update_slice_in_dim(c[n], kv[n], index, axis=2) for n in ("k", "v")}
          for c, kv in zip(cache, new_kv)]


# Its own program, updated in place (the old cache is donated): see Attention for why.
write_cache = jax.jit(cache_with, donate_argnums=0)


def init_cache(cfg: ModelConfig, batch: int, length: int | None = None, dtype=None):
  """Zeroed KV cache: one {'k','v'} dict of B x H x S x K arrays per layer."""
  shape = (batch, cfg.n_heads, length or cfg.max_len, cfg.d_head)
  dt = dtype or cfg.compute_dtype
  return [{"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)} for _ in range(cfg.n_layers)]
