"""Decoder-only Transformer in Flax NNX: RMSNorm, rotary positions, causal attention with a KV
cache, an FFN (`ffn.py`) and an output head (`softmax.py`).

`make_ffn` and `make_head` build the dense or the HiRE layer from the config. The forwards differ
only in what the HiRE layers do:
- `model(tokens, cache, index)`, `model.logits(h)`: the model as trained, exact.
- `model.served(tokens, cache, index)`: the served body (docs/method.md section 6), each
  HiRE-FFN on its predicted groups, computed exactly on those only. The served path as a whole
  (body and output layer) is `served.py`'s interface, which every consumer calls.
- `model.logits_with_aux(tokens)`: exact logits and the HiRE layers' approximator objectives,
  which they sow as `hire_aux` and this method captures (`nnx.capture`).
No forward leaves state on the module. Every parameter carries logical axis names (`axes=`) that
`sharding.py` maps onto a mesh. In the training forward (`logits_with_aux`) each block runs
under `nnx.remat` with the config's policy (`REMAT`): what the backward pass keeps changes, never
the numbers.
"""

import functools
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
  """Causal attention with grouped-query heads (H query heads share G = kv_heads key/value
  heads, Hg = H / G each), an optional QK-norm and, on a windowed layer, a sliding window. With a
  cache (keys and values at positions < `index`), the L new tokens attend to it and to
  themselves; their keys and values are returned for `write_cache`."""

  def __init__(self, cfg: ModelConfig, layer: int = 0, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.window, self.rope_base = cfg.window(layer), cfg.layer_rope_base(layer)
    d, h, k, g = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.kv_heads
    if g == h:  # one fused matrix (hire's own models): one product per step
      self.w_qkv = param(rngs, (d, 3, h, k), d**-0.5, ("embed", None, "heads", "kv"), cfg)
    else:
      self.w_q = param(rngs, (d, h, k), d**-0.5, ("embed", "heads", "kv"), cfg)
      self.w_kv = param(rngs, (d, 2, g, k), d**-0.5, ("embed", None, "heads", "kv"), cfg)
    self.w_out = param(rngs, (h, k, d), (h * k)**-0.5 / math.sqrt(2 * cfg.n_layers),
                        ("heads", "kv", "embed"), cfg)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(cfg, k, ("kv",))
      self.k_norm = RMSNorm(cfg, k, ("kv",))

  def _project(self, x_BxLxD):
    dt = self.cfg.compute_dtype
    # The outputs keep W's (t h k) order: asking for "tblhk" made XLA:CPU transpose all of W
    # (a copy of 3 D H K floats) on every call, ~20x the cost of the product at decode.
    if hasattr(self, "w_qkv"):
      qkv_BxLx3xHxK = jnp.einsum("bld,dthk->blthk", x_BxLxD, self.w_qkv[...].astype(dt))
      return qkv_BxLx3xHxK[:, :, 0], qkv_BxLx3xHxK[:, :, 1], qkv_BxLx3xHxK[:, :, 2]
    q_BxLxHxK = jnp.einsum("bld,dhk->blhk", x_BxLxD, self.w_q[...].astype(dt))
    kv_BxLx2xGxK = jnp.einsum("bld,dtgk->bltgk", x_BxLxD, self.w_kv[...].astype(dt))
    return q_BxLxHxK, kv_BxLx2xGxK[:, :, 0], kv_BxLx2xGxK[:, :, 1]

  def _mask(self, q_pos_L, k_pos_S):
    """Which keys each query sees: causal, and within the window on a windowed layer."""
    ok_LxS = k_pos_S[None, :] <= q_pos_L[:, None]
    if self.window:
      ok_LxS &= q_pos_L[:, None] - k_pos_S[None, :] < self.window
    return ok_LxS

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None):
    cfg, dt = self.cfg, self.cfg.compute_dtype
    q_BxLxHxK, k_BxLxGxK, v_BxLxGxK = self._project(x_BxLxD)
    if cfg.qk_norm:
      q_BxLxHxK, k_BxLxGxK = self.q_norm(q_BxLxHxK), self.k_norm(k_BxLxGxK)
    q_BxLxHxK = rope(q_BxLxHxK, pos_BxL, self.rope_base)
    k_BxLxGxK = rope(k_BxLxGxK, pos_BxL, self.rope_base)
    b, l, h, k = q_BxLxHxK.shape
    g = k_BxLxGxK.shape[2]
    # Head-major B x G x Hg x L x K (the Hg query heads of a KV head side by side), keys and
    # values B x G x L x K (stored B x S x H x K, the cache was transposed every step); the new
    # keys are attended to apart from the cached ones, so the cache itself is only read.
    q_BxGxHgxLxK = q_BxLxHxK.reshape(b, l, g, h // g, k).transpose(0, 2, 3, 1, 4).astype(dt)
    k_BxGxLxK, v_BxGxLxK = (a.transpose(0, 2, 1, 3).astype(dt) for a in (k_BxLxGxK, v_BxLxGxK))
    scale = cfg.d_head**-0.5
    pos_L = jnp.arange(l)
    new_BxGxHgxLxL = jnp.einsum("bgrlk,bgmk->bgrlm", q_BxGxHgxLxK, k_BxGxLxK).astype(
        jnp.float32) * scale
    new_BxGxHgxLxL = jnp.where(self._mask(pos_L, pos_L), new_BxGxHgxLxL, -1e30)
    if cache is None:
      probs = jax.nn.softmax(new_BxGxHgxLxL, axis=-1).astype(dt)
      ctx_BxGxHgxLxK = jnp.einsum("bgrlm,bgmk->bgrlk", probs, v_BxGxLxK)
      new_cache = None
    else:  # keys at positions < index come from the cache
      old_k, old_v = cache["k"].astype(dt), cache["v"].astype(dt)
      s = old_k.shape[2]
      old_BxGxHgxLxS = jnp.einsum("bgrlk,bgsk->bgrls", q_BxGxHgxLxK, old_k).astype(
          jnp.float32) * scale
      pos_S = jnp.arange(s)
      seen_LxS = (pos_S < index)[None, :] & self._mask(index + pos_L, pos_S)
      old_BxGxHgxLxS = jnp.where(seen_LxS, old_BxGxHgxLxS, -1e30)
      probs = jax.nn.softmax(jnp.concatenate([old_BxGxHgxLxS, new_BxGxHgxLxL], -1),
                             axis=-1).astype(dt)
      ctx_BxGxHgxLxK = (jnp.einsum("bgrls,bgsk->bgrlk", probs[..., :s], old_v)
                       + jnp.einsum("bgrlm,bgmk->bgrlk", probs[..., s:], v_BxGxLxK))
      # The new keys and values only: `write_cache` puts them at `index` in a separate
      # program. Updating the cache here, where it is also read, made XLA:CPU copy the whole
      # cache twice per layer and step (3x slower at batch 8, context 1024).
      new_cache = {"k": k_BxGxLxK.astype(cache["k"].dtype), "v": v_BxGxLxK.astype(cache["v"].dtype)}
    ctx_BxLxHxK = ctx_BxGxHgxLxK.transpose(0, 3, 1, 2, 4).reshape(b, l, h, k)
    out_BxLxD = jnp.einsum("blhk,hkd->bld", ctx_BxLxHxK, self.w_out[...].astype(dt))
    return out_BxLxD, new_cache


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, layer: int = 0, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, layer, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg)
    self.ffn = make_ffn(cfg, rngs=rngs)
    if cfg.post_norms:  # Gemma: the outputs of attention and the FFN are normalised too
      self.post_attn_norm = RMSNorm(cfg)
      self.post_ffn_norm = RMSNorm(cfg)

  def __call__(self, x_BxLxD, pos_BxL, cache=None, index=None, ffn_path="__call__",
               measure=False):
    """`ffn_path` names the FFN's forward ("__call__", "served" or "with_aux", see `ffn.py`);
    attention has one path. `measure` asks the served FFN to sow its selection's recall."""
    a_BxLxD, new_cache = self.attn(self.attn_norm(x_BxLxD), pos_BxL, cache, index)
    f = getattr(self.ffn, ffn_path)
    if measure:
      f = functools.partial(f, measure=True)
    if hasattr(self, "post_attn_norm"):
      x_BxLxD = x_BxLxD + self.post_attn_norm(a_BxLxD)
      return x_BxLxD + self.post_ffn_norm(f(self.ffn_norm(x_BxLxD))), new_cache
    x_BxLxD = x_BxLxD + a_BxLxD
    return x_BxLxD + f(self.ffn_norm(x_BxLxD)), new_cache


class Transformer(nnx.Module):
  """`__call__` (exact) and `served` return the final hidden states; `logits` applies the
  exact output layer (its served path is `served.select`)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), 1.0, ("vocab", "embed"), cfg)
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg)
    self.head = make_head(cfg, rngs=rngs, embed=self.embed)

  def __call__(self, tokens_BxL, cache=None, index=None):
    """Hidden states for `tokens_BxL`. With `cache` (from `init_cache`) the tokens sit at
    positions index .. index+L-1 and the second value is their keys and values per layer;
    `write_cache(cache, that, index)` stores them."""
    return self._forward(tokens_BxL, cache, index, "__call__")

  def served(self, tokens_BxL, cache=None, index=None, measure: bool = False):
    """`__call__` on the served path: each HiRE-FFN computes only the groups its approximator
    predicts (a model without one gives `__call__`'s result). `measure`: the FFNs that select
    on a mesh sow their selection's recall (`served.forward`)."""
    return self._forward(tokens_BxL, cache, index, "served", measure=measure)

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
    """Derives every HiRE layer's serving tensors from the trained weights (method.md section 6):
    once when a checkpoint is loaded for serving; the served path (`served.py`) reads only them and
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

  def _forward(self, tokens_BxL, cache, index, ffn_path: str, constrain=None, measure=False):
    b, l = tokens_BxL.shape
    start = 0 if index is None else index
    pos_BxL = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
    # Training on a sharded mesh pins the residual stream to its batch layout, so that XLA
    # gathers weights sharded over the batch's devices (FSDP) instead of the activations.
    constrain = constrain or (lambda x: x)
    x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(self.cfg.compute_dtype)
    if self.cfg.embed_scale != 1.0:
      x_BxLxD = x_BxLxD * jnp.asarray(self.cfg.embed_scale, x_BxLxD.dtype)
    x_BxLxD = constrain(x_BxLxD)
    new_caches = []
    for i, block in enumerate(self.blocks):
      if ffn_path == "with_aux" and self.cfg.remat != "none":  # the training forward
        remat = nnx.remat(lambda blk, x, pos: blk(x, pos, None, None, ffn_path)[0],
                          policy=REMAT_POLICIES[self.cfg.remat])
        x_BxLxD = constrain(remat(block, x_BxLxD, pos_BxL))
        continue
      x_BxLxD, c = block(x_BxLxD, pos_BxL, None if cache is None else cache[i], index, ffn_path,
                         measure)
      x_BxLxD = constrain(x_BxLxD)
      new_caches.append(c)
    h_BxLxD = self.final_norm(x_BxLxD)
    return h_BxLxD, (None if cache is None else new_caches)

  def head_weight(self):
    """The output layer's W (V x D), tied or not. Tied, it is the embedding times
    `cfg.head_scale`: `logits` scales h instead, so a step never rewrites all of W."""
    if self.head is None:
      return self.embed[...] * self.cfg.head_scale
    return self.head.w[...]

  def logits(self, h_BxLxD):
    """Exact logits_BxLxV."""
    if self.head is None:
      scale = self.cfg.head_scale
      if scale != 1.0:  # B L D multiplies instead of V D (a tied 262k head read W twice)
        h_BxLxD = h_BxLxD * jnp.asarray(scale, h_BxLxD.dtype)
      w_VxD = self.embed[...].astype(self.cfg.compute_dtype)
      return jnp.einsum("bld,vd->blv", h_BxLxD, w_VxD)
    return self.head(h_BxLxD)


def cache_with(cache, new_kv, index):
  """The cache with the new keys and values (B x G x L x K per layer, from `Transformer`)
  stored at positions index .. index+L-1."""
  return [{n: jax.lax.dynamic_update_slice_in_dim(c[n], kv[n], index, axis=2) for n in ("k", "v")}
          for c, kv in zip(cache, new_kv)]


# Its own program, updated in place (the old cache is donated): see Attention for why.
write_cache = jax.jit(cache_with, donate_argnums=0)


def init_cache(cfg: ModelConfig, batch: int, length: int | None = None, dtype=None):
  """Zeroed KV cache: one {'k','v'} dict of B x G x S x K arrays per layer (G KV heads)."""
  shape = (batch, cfg.kv_heads, length or cfg.max_len, cfg.d_head)
  dt = dtype or cfg.compute_dtype
  return [{"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)} for _ in range(cfg.n_layers)]


def abstract_params(cfg: ModelConfig) -> dict:
  """{"blocks/0/attn/w_out": ShapeDtypeStruct, ...}: the parameter tree of `cfg`'s model without
  allocating it; the parameter count, the cost model and checkpoint checks read shapes here."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  pure = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  return {"/".join(str(k.key) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(pure)[0]}
