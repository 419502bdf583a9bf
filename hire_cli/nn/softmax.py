"""Output layers: the dense softmax head and HiRE-Softmax (docs/method.md section 1).

HiRE-Softmax keeps the exact output layer `W: V x D` (the model is exact in training) and adds an
approximator of it. Its served path (`served_top_k`) scores all V cheaply, picks k' candidates,
gathers `W[S]` and computes exact logits on those only, then returns the top-k of them.
`with_aux` is the exact head plus the approximator's objective, sown as `hire_aux` for an
enclosing `nnx.capture(..., nnx.Intermediate)`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn import approx, mesh_serve, topk
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.layers import param

# Tokens of a training batch on which the approximator's recall is monitored.
RECALL_SAMPLE = 256


class DenseHead(nnx.Module):
  """Exact output layer: logits = W h with W: V x D."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.w = param(rngs, (cfg.vocab_size, cfg.d_model), cfg.d_model**-0.5, ("vocab", "embed"), cfg)

  def __call__(self, h_BxLxD):
    return jnp.einsum("bld,vd->blv", h_BxLxD, self.w[...].astype(self.cfg.compute_dtype))

  def with_aux(self, h_BxLxD):
    """`__call__`; the dense head has no approximator to train."""
    return self(h_BxLxD)


class HiReSoftmaxHead(DenseHead):
  """Exact head plus an approximator: `__call__` gives the exact logits, `with_aux` also sows
  the approximator's distillation loss and recall (`hire_aux`) for the training objective, and
  `served_top_k` is the served path."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, tied: nnx.Param | None = None):
    if tied is None:
      super().__init__(cfg, rngs=rngs)
    else:  # the embedding itself (one shared Variable: stored, restored and trained once)
      self.cfg, self.w = cfg, tied
    self.hc = cfg.hire_softmax
    self.approx = approx.Approximator(self.hc.approx, cfg.vocab_size, cfg.d_model, "vocab",
                                      rngs=rngs, param_dtype=cfg.param_dtype)
    self.mesh = None  # set by `serve_on`: the mesh whose model axis shards V when serving

  def serve_on(self, mesh):
    """Serve with the rows of W and of the approximator sharded over `mesh`'s model axis when
    `topk_method` is a mesh method (`mesh_serve.py`); otherwise serve as on one device."""
    self.mesh = None
    if mesh_serve.serves_on(mesh, self.hc.topk_method):
      mesh_serve.check_shards(self.cfg.vocab_size, mesh_serve.model_devices(mesh), "vocab_size")
      mesh_serve.place_serving(self.approx, mesh)
      self.mesh = mesh

  def approx_scores(self, h_BxLxD):
    """Approximate scores on stop-gradient inputs: their loss never reaches the model."""
    w_VxD = jax.lax.stop_gradient(self.w[...])
    return self.approx.scores(jax.lax.stop_gradient(h_BxLxD), w_VxD)

  def served_scores(self, h_BxLxD):
    """Approximate scores from the approximator's serving tensors (`prepare_serving` first)."""
    return self.approx.served_scores(h_BxLxD)

  def candidates(self, h_BxLxD):
    """cand_BxLxKp: the k' vocabulary ids the served approximator predicts."""
    if self.mesh is not None:
      return mesh_serve.softmax_serve(self, h_BxLxD)[0]
    return topk.top_k(self.served_scores(h_BxLxD), self.hc.k_prime, self.hc.topk_method)[1]

  def prepare_serving(self):
    """The approximator's serving tensors, derived once from the trained head."""
    self.approx.prepare_serving(self.w[...])

  def with_aux(self, h_BxLxD):
    """Exact logits; sows `hire_aux` {"loss": weighted distillation loss, "metrics":
    {"recall@k", "approx_loss"}}: call it under `nnx.capture(..., nnx.Intermediate)`."""
    logits_BxLxV = self(h_BxLxD)
    hc = self.hc
    s_BxLxV = self.approx_scores(h_BxLxD)
    exact_BxLxV = jax.lax.stop_gradient(logits_BxLxV).astype(jnp.float32)
    distill = approx.distill_loss(s_BxLxV, exact_BxLxV, hc.temperature)
    # The training-time recall is a monitor: two top-k's over V on a sample of the tokens
    # (sorting all B x L rows cost as much as the rest of the step); `hire eval` uses all.
    s_NxV = jax.lax.stop_gradient(s_BxLxV).reshape(-1, s_BxLxV.shape[-1])[:RECALL_SAMPLE]
    e_NxV = exact_BxLxV.reshape(-1, exact_BxLxV.shape[-1])[:RECALL_SAMPLE]
    cand_NxKp = topk.top_k(s_NxV, hc.k_prime, hc.topk_method)[1]
    true_Nxk = topk.exact_top_k(e_NxV, hc.k)[1]
    self.sow(nnx.Intermediate, "hire_aux", {
        "loss": hc.loss_weight * distill,
        "metrics": {f"recall@{hc.k}": topk.recall(cand_NxKp, true_Nxk), "approx_loss": distill},
    })
    return logits_BxLxV

  def served_top_k(self, h_BxLxD, k: int | None = None):
    """The served path: (values_BxLxk, ids_BxLxk, cand_BxLxKp), k = `hc.k` by default.

    Reads the approximator's bytes and the k' gathered rows of W, never all of W."""
    k = k or self.hc.k
    if self.mesh is not None:  # each shard rescores the candidates whose rows it holds
      cand_BxLxKp, z_BxLxKp = mesh_serve.softmax_serve(self, h_BxLxD)
    else:
      cand_BxLxKp = self.candidates(h_BxLxD)
      w_BxLxKpxD = jnp.take(self.w[...], cand_BxLxKp, axis=0).astype(self.cfg.compute_dtype)
      z_BxLxKp = jnp.einsum("bld,blkd->blk", h_BxLxD, w_BxLxKpxD).astype(jnp.float32)
    values_BxLxk, pos_BxLxk = topk.exact_top_k(z_BxLxKp, k)
    ids_BxLxk = jnp.take_along_axis(cand_BxLxKp, pos_BxLxk, axis=-1)
    return values_BxLxk, ids_BxLxk, cand_BxLxKp

  def init_from_weights(self, cov_DxD=None):
    """Post-hoc mode: the approximator starts from the (trained) output layer's SVD, or, with
    the second moment of the final hidden states on calibration text, from the rank-r fit of
    the logits on them (`approx.whitened_svd_init`)."""
    self.approx.init_from(self.w[...], cov_DxD)


def make_head(cfg: ModelConfig, *, rngs: nnx.Rngs, embed: nnx.Param | None = None):
  """The output layer: None for a dense tied head (the model multiplies by its embedding).
  HiRE-Softmax on a tied head of scale 1 (Gemma, Llama) shares the embedding; hire's own tied
  models (scale d**-0.5) keep their former separate HiRE head."""
  if cfg.hire_softmax is not None:
    tied = embed if cfg.tie_embeddings and cfg.head_scale == 1.0 else None
    return HiReSoftmaxHead(cfg, rngs=rngs, tied=tied)
  return None if cfg.tie_embeddings else DenseHead(cfg, rngs=rngs)
