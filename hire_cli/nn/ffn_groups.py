"""Groups of HiRE-FFN units (docs/method.md section 2): how a group is scored, the mask of the kept
groups, and the exact step, which reads only the weight blocks of the groups it computes.

Weights are stored unit-major (F x D), so the `g` units of a group are one contiguous `g x D`
block: viewing a matrix as `Ng x g x D` and gathering along Ng reads only the chosen blocks.
Shape letters: `Ng` groups (`Ngs` static), `C` groups read by the exact step (the static ones
first, then the candidates; `Cg = C * g` units), `U` sets of C groups, `Xu` tokens sharing one
set, `k` groups kept (k_g).
"""

import jax
import jax.numpy as jnp

from hire_cli.nn import topk
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.layers import activate


def group_scores(act_XxNgxg, score: str):
  """float32 score of each group: L2 norm or sum of magnitudes of its activations.

  The norm is written so that an all-zero group (common under ReLU) has a zero gradient, not
  NaN: the approximator's distillation loss differentiates through it.
  """
  a = act_XxNgxg.astype(jnp.float32)
  if score == "sum":
    return jnp.sum(jnp.abs(a), axis=-1)
  ss = jnp.sum(a * a, axis=-1)
  nonzero = ss > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, ss, 1.0)), 0.0)


def keep_mask(idx_Xxk, n: int):
  """{0,1} mask over the last axis of size n with ones at the k (distinct) indices."""
  return jnp.sum(jax.nn.one_hot(idx_Xxk, n, dtype=jnp.float32), axis=-2)


def one_set_at_a_time() -> bool:
  """Whether the exact step loops over candidate sets (CPU) or gathers them all at once."""
  return jax.default_backend() == "cpu"


def _exact_rows(weights: dict, cfg: ModelConfig, sizes, x_UxXuxD, read_UxC):
  """The exact step for U sets of C groups each (static first), each set shared by Xu tokens:
  gather only those weight blocks, compute their activations, keep each token's exact top-k_g
  among the candidates, project back. Returns (y_UxXuxD, pos_UxXuxk: kept positions in the
  candidate part of `read`). The batch axis U leads every product, so XLA:CPU reads the
  gathered blocks in place (a "bld,lkd" order made it transpose them: 5x slower)."""
  h, s = cfg.hire_ffn, sizes
  dt, g, d = cfg.compute_dtype, h.group_size, cfg.d_model
  p, c = read_UxC.shape

  def gather(w_FxD):  # reads the C blocks of g x D of each set, as one (C g) x D matrix
    return jnp.take(w_FxD.reshape(s.groups, g, d), read_UxC, axis=0).astype(dt).reshape(
        p, c * g, d)

  def unflat(a_UxXuxCg):
    return a_UxXuxCg.reshape(*a_UxXuxCg.shape[:-1], c, g)

  # One set (the CPU loop): plain 2-D products, which XLA:CPU ran 1.4-1.8x faster than the
  # same products with a leading batch axis of 1 (1b shapes, 103 and 206 groups).
  def times_w(x_UxXuxD, w_UxCgxD):
    if p == 1:
      return (x_UxXuxD[0] @ w_UxCgxD[0].T)[None]
    return jnp.einsum("pqd,pkd->pqk", x_UxXuxD, w_UxCgxD)

  def times_wt(a_UxXuxCg, w_UxCgxD):
    if p == 1:
      return (a_UxXuxCg[0] @ w_UxCgxD[0])[None]
    return jnp.einsum("pqk,pkd->pqd", a_UxXuxCg, w_UxCgxD)

  pre = unflat(times_w(x_UxXuxD, gather(weights["w_in"])))
  gate = None
  if cfg.gated:
    gate = unflat(times_w(x_UxXuxD, gather(weights["w_gate"])))
  act_UxXuxCxg = activate(pre, gate, cfg.activation)
  score_UxXuxC = group_scores(act_UxXuxCxg, h.score)
  # The exact top-k_g among the candidates is small (k'_g scores): always exact.
  _, pos_UxXuxk = topk.top_k(score_UxXuxC[..., s.n_static:], s.k_g, "exact")
  keep_UxXuxC = keep_mask(pos_UxXuxk + s.n_static, c).at[..., :s.n_static].set(1.0)
  act_UxXuxCxg = act_UxXuxCxg * keep_UxXuxC[..., None].astype(act_UxXuxCxg.dtype)
  y_UxXuxD = times_wt(act_UxXuxCxg.reshape(p, -1, c * g), gather(weights["w_out"]))
  return y_UxXuxD, pos_UxXuxk


def exact_step(weights: dict, cfg: ModelConfig, sizes, x_BxLxD, cand, shared: bool):
  """The exact step on the static groups plus `cand` (B x L x Kp per token, or L x Bud shared
  by the B tokens at a position), with `weights` {"w_in", "w_out"[, "w_gate"]} (F x D each) and
  `sizes` the layer's `ffn.FfnSizes`. Returns (y_BxLxD, kept group ids B x L x (n_static +
  k_g), ids read). On CPU the sets are processed one after another (`lax.map`): gathering the
  blocks of all B tokens at once materialised B copies and ran 6x slower at B = 8."""
  s = sizes
  b, l, d = x_BxLxD.shape
  static_Ngs = jnp.arange(s.n_static, dtype=cand.dtype)
  read = jnp.concatenate([jnp.broadcast_to(static_Ngs, (*cand.shape[:-1], s.n_static)), cand],
                         axis=-1)
  if shared:  # P = L positions, Q = B tokens each
    x_UxXuxD, read_UxC = x_BxLxD.transpose(1, 0, 2), read
  else:  # P = B L tokens, Q = 1
    x_UxXuxD, read_UxC = x_BxLxD.reshape(b * l, 1, d), read.reshape(b * l, -1)

  def rows(x, r):
    return _exact_rows(weights, cfg, s, x, r)

  if one_set_at_a_time():
    y_UxXuxD, pos_UxXuxk = jax.lax.map(
        lambda a: jax.tree.map(lambda o: o[0], rows(a[0][None], a[1][None])),
        (x_UxXuxD, read_UxC))
  else:
    y_UxXuxD, pos_UxXuxk = rows(x_UxXuxD, read_UxC)
  if shared:
    y_BxLxD, pos_BxLxk = y_UxXuxD.transpose(1, 0, 2), pos_UxXuxk.transpose(1, 0, 2)
  else:
    y_BxLxD, pos_BxLxk = y_UxXuxD.reshape(b, l, d), pos_UxXuxk.reshape(b, l, -1)
  read_BxLxC = jnp.broadcast_to(read, (b, l, read.shape[-1]))
  kept = jnp.concatenate([
      jnp.broadcast_to(static_Ngs, (b, l, s.n_static)),
      jnp.take_along_axis(read_BxLxC[..., s.n_static:], pos_BxLxk, axis=-1)], axis=-1)
  return y_BxLxD, kept, read
