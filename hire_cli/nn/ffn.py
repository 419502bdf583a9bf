"""FFN layers: the dense FFN and HiRE-FFN, the group-sparse top-k FFN (docs/method.md section 2).

Weights are stored unit-major (F x D), so the `g` units of a group are one contiguous `g x D`
block: viewing a matrix as `Ng x g x D` and gathering along Ng reads only the chosen blocks.
Shape letters: `Ng` groups, `Ngd = Ng - n_static` selectable (dynamic) groups, `k` kept (k_g),
`Kp` candidates (k'_g), `C` groups read by the exact step. Scoring groups and the exact step on
gathered groups are in `ffn_groups.py`.

Every FFN has three forwards: `__call__` (the model as trained), `served` (what decoding runs)
and `with_aux` (`__call__` plus the approximator's objective, sown as `hire_aux` for an
enclosing `nnx.capture(..., nnx.Intermediate)`).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli import errors
from hire_cli.nn import approx, ffn_groups, mesh_serve, topk
from hire_cli.nn.approx import Approximator
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.ffn_groups import group_scores, keep_mask
from hire_cli.nn.layers import activate, param


class Ffn(nnx.Module):
  """Dense FFN. Weights are stored unit-major (F x D) so a group of units is a contiguous block."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, f = cfg.d_model, cfg.d_ff
    self.w_in = param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    if cfg.gated:
      self.w_gate = param(rngs, (f, d), d**-0.5, ("mlp", "embed"), cfg)
    self.w_out = param(rngs, (f, d), f**-0.5 / math.sqrt(2 * cfg.n_layers), ("mlp", "embed"), cfg)

  def hidden(self, x_BxLxD):
    """Activations of all F units."""
    dt = self.cfg.compute_dtype
    pre_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_in[...].astype(dt))
    gate_BxLxF = None
    if self.cfg.gated:
      gate_BxLxF = jnp.einsum("bld,fd->blf", x_BxLxD, self.w_gate[...].astype(dt))
    return activate(pre_BxLxF, gate_BxLxF, self.cfg.activation)

  def project(self, act_BxLxF):
    """`W_out` applied to the activations of the F units."""
    return jnp.einsum("blf,fd->bld", act_BxLxF, self.w_out[...].astype(self.cfg.compute_dtype))

  def __call__(self, x_BxLxD):
    return self.project(self.hidden(x_BxLxD))

  def served(self, x_BxLxD, measure: bool = False):
    """The served path; the dense FFN has one path (and selects nothing to `measure`)."""
    return self(x_BxLxD)

  def with_aux(self, x_BxLxD):
    """`__call__`; the dense FFN has no approximator to train."""
    return self(x_BxLxD)


# ---------------------------------------------------------------------------------------------
# Sizes.


@dataclasses.dataclass(frozen=True)
class FfnSizes:
  """Group counts derived from `HiReFfnConfig` and the model's F."""

  groups: int  # Ng = F / g
  k_g: int  # dynamic groups each token keeps
  k_prime_g: int  # candidate groups per token from the approximator
  n_static: int  # always-on groups (the first n_static), outside k_g and k'_g
  budget_g: int  # dynamic overlap: shared candidate groups per batch, independent of B

  @property
  def dynamic(self) -> int:
    return self.groups - self.n_static


def ffn_sizes(cfg: ModelConfig) -> FfnSizes:
  """The group counts of `cfg.hire_ffn` on the model's F (ModelConfig validated them)."""
  h, f = cfg.hire_ffn, cfg.d_ff
  groups = f // h.group_size
  k_g = h.kept_groups(f)
  k_prime_g = min(groups - h.n_static, math.ceil(h.k_prime_factor * k_g))
  budget_g = min(groups - h.n_static, math.ceil(h.batch_budget_factor * k_prime_g))
  return FfnSizes(groups, k_g, k_prime_g, h.n_static, budget_g)


# ---------------------------------------------------------------------------------------------
# HiRE-FFN.


class HiReFfn(Ffn):
  """Group-sparse top-k FFN with an approximator of `W_in` (docs/method.md section 2).

  `__call__(x)` is the model as trained: full activations, keep the static groups plus each
  token's exact top-k_g groups, zero the rest. `with_aux(x)` is the same and also sows the
  approximator's objective on stop-gradient inputs (`hire_aux`). `served(x)` is the inference
  path: approximate group scores -> k'_g candidate groups -> gather only their weight blocks ->
  exact activations -> exact top-k_g among them. Static groups are always read and kept.

  The approximator predicts `W_in x`; the approximate activation is `act(W_in x)` for relu and
  gelu. For the gated ones (`act(W_gate x) * W_in x`) it predicts the linear branch only and scores
  groups by |W_in x|, i.e. the gate is treated as constant: one approximator, one matrix
  read, and `init_from_weights` stays the SVD of `W_in` for every activation.
  """

  # Dynamic overlap (docs/method.md 2.5) for `served`: the B tokens at one position share one
  # candidate set (set from `HiReFfnConfig.dynamic_overlap`).

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.sizes = ffn_sizes(cfg)
    super().__init__(cfg, rngs=rngs)
    h = cfg.hire_ffn
    self.approx = Approximator(h.approx, cfg.d_ff, cfg.d_model, "mlp", rngs=rngs,
                               param_dtype=cfg.param_dtype)
    self.dynamic_overlap = bool(h.dynamic_overlap)
    self.mesh = None  # set by `serve_on`: the mesh whose model axis shards F when serving

  def serve_on(self, mesh):
    """Serve with the rows of W_in, W_out and of the approximator sharded over `mesh`'s model
    axis when `topk_method` is a mesh method (`mesh_serve.py`); else as on one device."""
    self.mesh = None
    h = self.cfg.hire_ffn
    if mesh_serve.serves_on(mesh, h.topk_method):
      if self.dynamic_overlap:
        raise errors.UserError(f"HiReFfnConfig.topk_method={h.topk_method!r} on a mesh does not "
                               "support dynamic_overlap yet; set dynamic_overlap=False or "
                               "topk_method='exact'")
      mesh_serve.check_shards(self.sizes.groups * h.group_size, mesh_serve.model_devices(mesh),
                              "d_ff", h.group_size)
      mesh_serve.place_serving(self.approx, mesh)
      self.mesh = mesh

  def init_from_weights(self):
    """Post-hoc mode: start the approximator from the truncated SVD of the trained `W_in`."""
    self.approx.init_from(self.w_in[...])

  # -- scores and candidates ------------------------------------------------------------------

  def approx_group_scores(self, x_XxD, w_in_FxD):
    """float32 approximate scores of the dynamic groups as trained (static ones are never
    predicted); `w_in_FxD` is what kind "q" quantizes."""
    kind = self.cfg.hire_ffn.approx.kind
    return self._groups_of(self.approx.scores(x_XxD, w_in_FxD if kind == "q" else None))

  def served_group_scores(self, x_XxD):
    """The same from the approximator's serving tensors (`prepare_serving` first)."""
    return self._groups_of(self.approx.served_scores(x_XxD))

  def prepare_serving(self):
    """The approximator's serving tensors, derived once from the trained `W_in`."""
    self.approx.prepare_serving(self.w_in[...])

  def _groups_of(self, pre_XxF):
    h, s = self.cfg.hire_ffn, self.sizes
    if not self.cfg.gated:
      pre_XxF = activate(pre_XxF, None, self.cfg.activation)
    pre_XxNgxg = pre_XxF.reshape(*pre_XxF.shape[:-1], s.groups, h.group_size)
    return group_scores(pre_XxNgxg, h.score)[..., s.n_static:]

  def candidates(self, x_XxD):
    """Each token's k'_g candidate group ids (in [n_static, G))."""
    _, idx_XxKp = topk.top_k(self.served_group_scores(x_XxD), self.sizes.k_prime_g,
                             self.cfg.hire_ffn.topk_method)
    return idx_XxKp + self.sizes.n_static

  def shared_candidates(self, x_BxLxD):
    """Dynamic overlap: one set of `budget_g` candidate group ids per position, shared by the
    B tokens there (L x budget). Each token's approximate scores are softmax-normalised (at the
    distillation temperature, the distribution the approximator is trained to match) so every
    token casts one unit of vote and large-norm tokens do not drown the others; the votes are
    summed over the batch and the top `budget_g` groups win."""
    return self._shared_from(self.served_group_scores(x_BxLxD))

  def _shared_from(self, s_BxLxNgd):
    h = self.cfg.hire_ffn
    votes_LxNgd = jnp.sum(jax.nn.softmax(s_BxLxNgd / h.temperature, axis=-1), axis=0)
    _, idx_LxBud = topk.top_k(votes_LxNgd, self.sizes.budget_g, h.topk_method)
    return idx_LxBud + self.sizes.n_static

  # -- training path --------------------------------------------------------------------------

  def topk_hidden(self, x_BxLxD):
    """(activations with all but the static and top-k_g groups zeroed, exact group scores,
    top-k_g dynamic group ids). Gradients flow through the kept units; the choice is discrete."""
    h, s = self.cfg.hire_ffn, self.sizes
    act_BxLxF = self.hidden(x_BxLxD)
    act_BxLxNgxg = act_BxLxF.reshape(*act_BxLxF.shape[:-1], s.groups, h.group_size)
    exact_BxLxNg = jax.lax.stop_gradient(group_scores(act_BxLxNgxg, h.score))
    # The model itself is exact: its top-k_g is exact whatever topk_method picks candidates.
    _, top_BxLxk = topk.top_k(exact_BxLxNg[..., s.n_static:], s.k_g, "exact")
    keep_BxLxNg = keep_mask(top_BxLxk + s.n_static, s.groups)
    keep_BxLxNg = keep_BxLxNg.at[..., :s.n_static].set(1.0)
    act_BxLxNgxg = act_BxLxNgxg * keep_BxLxNg[..., None].astype(act_BxLxNgxg.dtype)
    return act_BxLxNgxg.reshape(act_BxLxF.shape), exact_BxLxNg, top_BxLxk

  def __call__(self, x_BxLxD):
    return self.project(self.topk_hidden(x_BxLxD)[0])

  def with_aux(self, x_BxLxD):
    """`__call__`, and sows `hire_aux` {"loss": weighted distillation loss, "metrics":
    {"recall@k", "approx_loss"}}: call it under `nnx.capture(..., nnx.Intermediate)`."""
    h, s = self.cfg.hire_ffn, self.sizes
    act_BxLxF, exact_BxLxNg, top_BxLxk = self.topk_hidden(x_BxLxD)
    y_BxLxD = self.project(act_BxLxF)
    # Approximator: its inputs and targets are stop-gradient, so its loss never moves the model.
    approx_BxLxNgd = self.approx_group_scores(jax.lax.stop_gradient(x_BxLxD),
                                             jax.lax.stop_gradient(self.w_in[...]))
    loss = approx.distill_loss(approx_BxLxNgd, exact_BxLxNg[..., s.n_static:], h.temperature)
    _, cand_BxLxKp = topk.top_k(jax.lax.stop_gradient(approx_BxLxNgd), s.k_prime_g, h.topk_method)
    metrics = {"recall@k": topk.recall(cand_BxLxKp, top_BxLxk),
               "approx_loss": jax.lax.stop_gradient(loss)}
    if self.dynamic_overlap:  # what serving uses: one set per position for the whole batch
      shared_LxBud = self._shared_from(jax.lax.stop_gradient(approx_BxLxNgd)) - s.n_static
      shared_BxLxBud = jnp.broadcast_to(shared_LxBud, (*top_BxLxk.shape[:2], s.budget_g))
      metrics["recall_shared@k"] = topk.recall(shared_BxLxBud, top_BxLxk)
    self.sow(nnx.Intermediate, "hire_aux", {"loss": h.loss_weight * loss, "metrics": metrics})
    return y_BxLxD

  # -- inference path -------------------------------------------------------------------------

  def inference_groups(self, x_BxLxD, shared: bool | None = None) -> dict:
    """What `served` does, for analysis and tests: {"y", "kept" (B x L x (n_static + k_g)
    group ids), "read" (group ids whose weights were gathered: B x L x C, or L x C shared)}.
    `shared` (default: the layer's `dynamic_overlap`) gives the B tokens at a position one set."""
    shared = self.dynamic_overlap if shared is None else shared
    cand = self.shared_candidates(x_BxLxD) if shared else self.candidates(x_BxLxD)
    weights = {"w_in": self.w_in[...], "w_out": self.w_out[...]}
    if self.cfg.gated:
      weights["w_gate"] = self.w_gate[...]
    y, kept, read = ffn_groups.exact_step(weights, self.cfg, self.sizes, x_BxLxD, cand, shared)
    return {"y": y, "kept": kept, "read": read}

  def served(self, x_BxLxD, measure: bool = False):
    """The inference path; `measure` (on a mesh) also sows the selection's recall against the
    exact top-k'_g of the same approximate scores."""
    if self.mesh is not None and measure:
      y_BxLxD, cand_BxLxKp, true_BxLxKp = mesh_serve.ffn_serve(self, x_BxLxD, exact_too=True)
      self.sow(nnx.Intermediate, "selection_recall", topk.recall(cand_BxLxKp, true_BxLxKp))
      return y_BxLxD
    if self.mesh is not None:  # each shard computes the selected groups it holds
      return mesh_serve.ffn_serve(self, x_BxLxD)
    return self.inference_groups(x_BxLxD)["y"]


def make_ffn(cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.hire_ffn is not None:
    return HiReFfn(cfg, rngs=rngs)
  return Ffn(cfg, rngs=rngs)
