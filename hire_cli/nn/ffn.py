"""FFN layers: the dense FFN and HiRE-FFN, the group-sparse top-k FFN (HIRE.md section 2).

Weights are stored unit-major (F x D), so the `g` units of a group are one contiguous `g x D`
block: viewing a matrix as `G x g x D` and gathering along G reads only the chosen blocks.
Shape letters: `G` groups, `Gd = G - n_static` selectable (dynamic) groups, `C` groups read by
the exact step (the static ones first, then the candidates), `Kp` candidates (k'_g).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli import errors
from hire_cli.nn import approx, topk
from hire_cli.nn.approx import Approximator
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.layers import activate, param

SCORES = ("l2", "sum")


class Ffn(nnx.Module):
  """Dense FFN. Weights are stored unit-major (F x D) so a group of units is a contiguous block."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, f = cfg.d_model, cfg.d_ff
    self.w_in = param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    if cfg.activation == "swiglu":
      self.w_gate = param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    self.w_out = param(rngs, (f, d), f**-0.5 / math.sqrt(2 * cfg.n_layers), ("mlp", "embed"), cfg)

  def hidden(self, x_BxLxD):
    """Activations of all F units."""
    dt = self.cfg.compute_dtype
    pre_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_in[...].astype(dt))
    gate_BxLxF = None
    if self.cfg.activation == "swiglu":
      gate_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_gate[...].astype(dt))
    return activate(pre_BxLxF, gate_BxLxF, self.cfg.activation)

  def __call__(self, x_BxLxD, hire=False):
    del hire  # the dense FFN has one path
    act_BxLxF = self.hidden(x_BxLxD)
    return jnp.einsum("blf,fd->bld", act_BxLxF, self.w_out[...].astype(self.cfg.compute_dtype))


# ---------------------------------------------------------------------------------------------
# Sizes.


@dataclasses.dataclass(frozen=True)
class FfnSizes:
  """Group counts derived from `HiReFfnConfig` and the model's F."""

  groups: int  # G = F / g
  k_g: int  # dynamic groups each token keeps
  k_prime_g: int  # candidate groups per token from the approximator
  n_static: int  # always-on groups (the first n_static), outside k_g and k'_g
  budget_g: int  # dynamic overlap: shared candidate groups per batch, independent of B

  @property
  def dynamic(self) -> int:
    return self.groups - self.n_static


def ffn_sizes(cfg: ModelConfig) -> FfnSizes:
  """Validates `cfg.hire_ffn` against the model and derives the group counts."""
  h, f = cfg.hire_ffn, cfg.d_ff
  g = h.group_size
  if g <= 0 or f % g:
    raise errors.UserError(f"HiReFfnConfig.group_size={g} must divide d_ff={f}; use a divisor "
                           f"of {f} such as {math.gcd(f, 8)}.")
  groups = f // g
  if not 0 <= h.n_static < groups:
    raise errors.UserError(f"HiReFfnConfig.n_static={h.n_static} must be in 0..{groups - 1} "
                           f"(G = d_ff / group_size = {groups}); lower n_static.")
  if not 0 < h.k_fraction <= 1:
    raise errors.UserError(f"HiReFfnConfig.k_fraction={h.k_fraction} must be in (0, 1] "
                           "(0.05 is typical).")
  k_g = max(1, round(h.k_fraction * f / g))
  if k_g + h.n_static > groups:
    raise errors.UserError(
        f"k_g + n_static = {k_g} + {h.n_static} > G = {groups} groups (k_g = round(k_fraction "
        "* d_ff / group_size)); lower HiReFfnConfig.k_fraction or n_static.")
  if h.k_prime_factor < 1:
    raise errors.UserError(f"HiReFfnConfig.k_prime_factor={h.k_prime_factor} must be >= 1 so "
                           "that k'_g >= k_g; 2 is typical.")
  k_prime_g = min(groups - h.n_static, math.ceil(h.k_prime_factor * k_g))
  if h.batch_budget_factor < 1:
    raise errors.UserError(f"HiReFfnConfig.batch_budget_factor={h.batch_budget_factor} must be "
                           ">= 1 so the shared set is at least k'_g groups; 2 is typical.")
  budget_g = min(groups - h.n_static, math.ceil(h.batch_budget_factor * k_prime_g))
  if h.score not in SCORES:
    raise errors.UserError(f"HiReFfnConfig.score={h.score!r}; use one of {SCORES}.")
  if h.topk_method not in topk.METHODS:
    raise errors.UserError(f"HiReFfnConfig.topk_method={h.topk_method!r}; use one of "
                           f"{topk.METHODS}.")
  if h.temperature <= 0 or h.loss_weight < 0:
    raise errors.UserError("HiReFfnConfig.temperature must be > 0 and loss_weight >= 0.")
  h.approx.validate(f, cfg.d_model)
  return FfnSizes(groups, k_g, k_prime_g, h.n_static, budget_g)


# ---------------------------------------------------------------------------------------------
# HiRE-FFN.


def group_scores(act_XxGxg, score: str):
  """float32 score of each group: L2 norm or sum of magnitudes of its activations.

  The norm is written so that an all-zero group (common under ReLU) has a zero gradient, not
  NaN: the approximator's distillation loss differentiates through it.
  """
  a = act_XxGxg.astype(jnp.float32)
  if score == "sum":
    return jnp.sum(jnp.abs(a), axis=-1)
  ss = jnp.sum(a * a, axis=-1)
  nonzero = ss > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, ss, 1.0)), 0.0)


def _keep_mask(idx_XxK, n: int):
  """{0,1} mask over the last axis of size n with ones at the k (distinct) indices."""
  return jnp.sum(jax.nn.one_hot(idx_XxK, n, dtype=jnp.float32), axis=-2)


def one_set_at_a_time() -> bool:
  """Whether the exact step loops over candidate sets (CPU) or gathers them all at once."""
  return jax.default_backend() == "cpu"


class HiReFfn(Ffn):
  """Group-sparse top-k FFN with an approximator of `W_in` (HIRE.md section 2).

  `__call__(x, hire=False)` is the model as trained: full activations, keep the static groups
  plus each token's exact top-k_g groups, zero the rest; it also trains the approximator on
  stop-gradient inputs and sows `hire_aux`. `hire=True` is the inference path: approximate
  group scores -> k'_g candidate groups -> gather only their weight blocks -> exact activations
  -> exact top-k_g among them. Static groups are always read and kept.

  The approximator predicts `W_in x`; the approximate activation is `act(W_in x)` for relu and
  gelu. For swiglu (`silu(W_gate x) * W_in x`) it predicts the linear branch only and scores
  groups by |W_in x|, i.e. the gate is treated as constant: one approximator, one matrix
  read, and `init_from_weights` stays the SVD of `W_in` for every activation.
  """

  # Dynamic overlap (HIRE.md 2.5) for `hire=True`: the B tokens at one position share one
  # candidate set (set from `HiReFfnConfig.dynamic_overlap`).

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.sizes = ffn_sizes(cfg)
    super().__init__(cfg, rngs=rngs)
    h = cfg.hire_ffn
    self.approx = Approximator(h.approx, cfg.d_ff, cfg.d_model, "mlp", rngs=rngs,
                               param_dtype=cfg.param_dtype)
    self.dynamic_overlap = bool(h.dynamic_overlap)

  def init_from_weights(self):
    """Post-hoc mode: start the approximator from the truncated SVD of the trained `W_in`."""
    self.approx.init_from(self.w_in[...])

  # -- scores and candidates ------------------------------------------------------------------

  def approx_group_scores(self, x_XxD, w_in_FxD=None):
    """float32 approximate scores of the dynamic groups (static ones are never predicted)."""
    h, s = self.cfg.hire_ffn, self.sizes
    w_FxD = self.w_in[...] if w_in_FxD is None else w_in_FxD
    pre_XxF = self.approx.scores(x_XxD, w_FxD if h.approx.kind == "q" else None)
    if self.cfg.activation != "swiglu":
      pre_XxF = activate(pre_XxF, None, self.cfg.activation)
    pre_XxGxg = pre_XxF.reshape(*pre_XxF.shape[:-1], s.groups, h.group_size)
    return group_scores(pre_XxGxg, h.score)[..., s.n_static:]

  def candidates(self, x_XxD):
    """Each token's k'_g candidate group ids (in [n_static, G))."""
    _, idx_XxKp = topk.top_k(self.approx_group_scores(x_XxD), self.sizes.k_prime_g,
                             self.cfg.hire_ffn.topk_method)
    return idx_XxKp + self.sizes.n_static

  def shared_candidates(self, x_BxLxD):
    """Dynamic overlap: one set of `budget_g` candidate group ids per position, shared by the
    B tokens there (L x budget). Each token's approximate scores are softmax-normalised (at the
    distillation temperature, the distribution the approximator is trained to match) so every
    token casts one unit of vote and large-norm tokens do not drown the others; the votes are
    summed over the batch and the top `budget_g` groups win."""
    h = self.cfg.hire_ffn
    s_BxLxGd = self.approx_group_scores(x_BxLxD)
    votes_LxGd = jnp.sum(jax.nn.softmax(s_BxLxGd / h.temperature, axis=-1), axis=0)
    _, idx_LxBud = topk.top_k(votes_LxGd, self.sizes.budget_g, h.topk_method)
    return idx_LxBud + self.sizes.n_static

  # -- training path --------------------------------------------------------------------------

  def topk_hidden(self, x_BxLxD):
    """(activations with all but the static and top-k_g groups zeroed, exact group scores,
    top-k_g dynamic group ids). Gradients flow through the kept units; the choice is discrete."""
    h, s = self.cfg.hire_ffn, self.sizes
    act_BxLxF = self.hidden(x_BxLxD)
    act_BxLxGxg = act_BxLxF.reshape(*act_BxLxF.shape[:-1], s.groups, h.group_size)
    exact_BxLxG = jax.lax.stop_gradient(group_scores(act_BxLxGxg, h.score))
    # The model itself is exact: its top-k_g is exact whatever topk_method picks candidates.
    _, top_BxLxK = topk.top_k(exact_BxLxG[..., s.n_static:], s.k_g, "exact")
    keep_BxLxG = _keep_mask(top_BxLxK + s.n_static, s.groups)
    keep_BxLxG = keep_BxLxG.at[..., :s.n_static].set(1.0)
    act_BxLxGxg = act_BxLxGxg * keep_BxLxG[..., None].astype(act_BxLxGxg.dtype)
    return act_BxLxGxg.reshape(act_BxLxF.shape), exact_BxLxG, top_BxLxK

  def _train_forward(self, x_BxLxD):
    h, s = self.cfg.hire_ffn, self.sizes
    act_BxLxF, exact_BxLxG, top_BxLxK = self.topk_hidden(x_BxLxD)
    y_BxLxD = jnp.einsum("blf,fd->bld", act_BxLxF, self.w_out[...].astype(self.cfg.compute_dtype))
    # Approximator: its inputs and targets are stop-gradient, so its loss never moves the model.
    approx_BxLxGd = self.approx_group_scores(jax.lax.stop_gradient(x_BxLxD),
                                             jax.lax.stop_gradient(self.w_in[...]))
    loss = approx.distill_loss(approx_BxLxGd, exact_BxLxG[..., s.n_static:], h.temperature)
    _, cand_BxLxKp = topk.top_k(jax.lax.stop_gradient(approx_BxLxGd), s.k_prime_g, h.topk_method)
    rec = topk.recall(cand_BxLxKp, top_BxLxK)
    self.sow(nnx.Intermediate, "hire_aux", {
        "loss": h.loss_weight * loss,
        "metrics": {"recall@k": rec, "approx_loss": jax.lax.stop_gradient(loss)},
    })
    return y_BxLxD

  # -- inference path -------------------------------------------------------------------------

  def _exact_rows(self, x_PxQxD, read_PxC):
    """The exact step for P sets of C groups each (static first), each set shared by Q tokens:
    gather only those weight blocks, compute their activations, keep each token's exact top-k_g
    among the candidates, project back. Returns (y_PxQxD, pos_PxQxK: kept positions in the
    candidate part of `read`). The batch axis P leads every product, so XLA:CPU reads the
    gathered blocks in place (a "bld,lkd" order made it transpose them: 5x slower)."""
    cfg, h, s = self.cfg, self.cfg.hire_ffn, self.sizes
    dt, g, d = cfg.compute_dtype, h.group_size, cfg.d_model
    p, c = read_PxC.shape

    def gather(w_FxD):  # reads the C blocks of g x D of each set, as one (C g) x D matrix
      return jnp.take(w_FxD.reshape(s.groups, g, d), read_PxC, axis=0).astype(dt).reshape(
          p, c * g, d)

    def unflat(a_PxQxCg):
      return a_PxQxCg.reshape(*a_PxQxCg.shape[:-1], c, g)

    # One set (the CPU loop): plain 2-D products, which XLA:CPU ran 1.4-1.8x faster than the
    # same products with a leading batch axis of 1 (1b shapes, 103 and 206 groups).
    def times_w(x_PxQxD, w_PxKxD):
      if p == 1:
        return (x_PxQxD[0] @ w_PxKxD[0].T)[None]
      return jnp.einsum("pqd,pkd->pqk", x_PxQxD, w_PxKxD)

    def times_wt(a_PxQxK, w_PxKxD):
      if p == 1:
        return (a_PxQxK[0] @ w_PxKxD[0])[None]
      return jnp.einsum("pqk,pkd->pqd", a_PxQxK, w_PxKxD)

    pre = unflat(times_w(x_PxQxD, gather(self.w_in[...])))
    gate = None
    if cfg.activation == "swiglu":
      gate = unflat(times_w(x_PxQxD, gather(self.w_gate[...])))
    act_PxQxCxg = activate(pre, gate, cfg.activation)
    score_PxQxC = group_scores(act_PxQxCxg, h.score)
    # The exact top-k_g among the candidates is small (k'_g scores): always exact.
    _, pos_PxQxK = topk.top_k(score_PxQxC[..., s.n_static:], s.k_g, "exact")
    keep_PxQxC = _keep_mask(pos_PxQxK + s.n_static, c).at[..., :s.n_static].set(1.0)
    act_PxQxCxg = act_PxQxCxg * keep_PxQxC[..., None].astype(act_PxQxCxg.dtype)
    y_PxQxD = times_wt(act_PxQxCxg.reshape(p, -1, c * g), gather(self.w_out[...]))
    return y_PxQxD, pos_PxQxK

  def _exact_on(self, x_BxLxD, cand, shared: bool):
    """Exact step on the static groups plus `cand` (B x L x Kp per token, or L x Bud shared by
    the B tokens at a position). Returns (y_BxLxD, kept group ids B x L x (n_static + k_g),
    ids read). On CPU the sets are processed one after another (`lax.map`): gathering the
    blocks of all B tokens at once materialised B copies and ran 6x slower at B = 8."""
    s = self.sizes
    b, l, d = x_BxLxD.shape
    static_S = jnp.arange(s.n_static, dtype=cand.dtype)
    read = jnp.concatenate([jnp.broadcast_to(static_S, (*cand.shape[:-1], s.n_static)), cand],
                           axis=-1)
    if shared:  # P = L positions, Q = B tokens each
      x_PxQxD, read_PxC = x_BxLxD.transpose(1, 0, 2), read
    else:  # P = B L tokens, Q = 1
      x_PxQxD, read_PxC = x_BxLxD.reshape(b * l, 1, d), read.reshape(b * l, -1)
    if one_set_at_a_time():
      y_PxQxD, pos_PxQxK = jax.lax.map(
          lambda a: jax.tree.map(lambda o: o[0], self._exact_rows(a[0][None], a[1][None])),
          (x_PxQxD, read_PxC))
    else:
      y_PxQxD, pos_PxQxK = self._exact_rows(x_PxQxD, read_PxC)
    if shared:
      y_BxLxD, pos_BxLxK = y_PxQxD.transpose(1, 0, 2), pos_PxQxK.transpose(1, 0, 2)
    else:
      y_BxLxD, pos_BxLxK = y_PxQxD.reshape(b, l, d), pos_PxQxK.reshape(b, l, -1)
    read_BxLxC = jnp.broadcast_to(read, (b, l, read.shape[-1]))
    kept = jnp.concatenate([
        jnp.broadcast_to(static_S, (b, l, s.n_static)),
        jnp.take_along_axis(read_BxLxC[..., s.n_static:], pos_BxLxK, axis=-1)], axis=-1)
    return y_BxLxD, kept, read

  def inference_groups(self, x_BxLxD, shared: bool | None = None) -> dict:
    """What `hire=True` does, for analysis and tests: {"y", "kept" (B x L x (n_static + k_g)
    group ids), "read" (group ids whose weights were gathered: B x L x C, or L x C shared)}."""
    shared = self.dynamic_overlap if shared is None else shared
    cand = self.shared_candidates(x_BxLxD) if shared else self.candidates(x_BxLxD)
    y, kept, read = self._exact_on(x_BxLxD, cand, shared)
    return {"y": y, "kept": kept, "read": read}

  def shared_forward(self, x_BxD):
    """Dynamic overlap for B tokens decoding together (B x D, or B x L x D sharing per
    position): one shared candidate set, gathered once, each token its own exact top-k_g."""
    x_BxLxD = x_BxD[:, None] if x_BxD.ndim == 2 else x_BxD
    y_BxLxD = self.inference_groups(x_BxLxD, shared=True)["y"]
    return y_BxLxD[:, 0] if x_BxD.ndim == 2 else y_BxLxD

  def __call__(self, x_BxLxD, hire=False):
    if not hire:
      return self._train_forward(x_BxLxD)
    return self.inference_groups(x_BxLxD)["y"]


def make_ffn(cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.hire_ffn is not None:
    return HiReFfn(cfg, rngs=rngs)
  return Ffn(cfg, rngs=rngs)
