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

# A token whose target falls outside the candidates gets this much of a uniform distribution,
# so the served loss stays finite but a miss costs ~log(V / SERVED_FLOOR) nats.
SERVED_FLOOR = 1e-6
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
    true_NxK = topk.exact_top_k(e_NxV, hc.k)[1]
    self.sow(nnx.Intermediate, "hire_aux", {
        "loss": hc.loss_weight * distill,
        "metrics": {f"recall@{hc.k}": topk.recall(cand_NxKp, true_NxK), "approx_loss": distill},
    })
    return logits_BxLxV

  def served_top_k(self, h_BxLxD, k: int | None = None):
    """The served path: (values_BxLxK, ids_BxLxK, cand_BxLxKp), k = `hc.k` by default.

    Reads the approximator's bytes and the k' gathered rows of W, never all of W."""
    k = k or self.hc.k
    if self.mesh is not None:  # each shard rescores the candidates whose rows it holds
      cand_BxLxKp, z_BxLxKp = mesh_serve.softmax_serve(self, h_BxLxD)
    else:
      cand_BxLxKp = self.candidates(h_BxLxD)
      w_BxLxKpxD = jnp.take(self.w[...], cand_BxLxKp, axis=0).astype(self.cfg.compute_dtype)
      z_BxLxKp = jnp.einsum("bld,blkd->blk", h_BxLxD, w_BxLxKpxD).astype(jnp.float32)
    values_BxLxK, pos_BxLxK = topk.exact_top_k(z_BxLxKp, k)
    ids_BxLxK = jnp.take_along_axis(cand_BxLxKp, pos_BxLxK, axis=-1)
    return values_BxLxK, ids_BxLxK, cand_BxLxKp

  def init_from_weights(self):
    """Post-hoc mode: the approximator starts from the (trained) output layer's SVD."""
    self.approx.init_from(self.w[...])


def make_head(cfg: ModelConfig, *, rngs: nnx.Rngs, embed: nnx.Param | None = None):
  """The output layer: None for a dense tied head (the model multiplies by its embedding).
  HiRE-Softmax on a tied head of scale 1 (Gemma, Llama) shares the embedding; hire's own tied
  models (scale d**-0.5) keep their former separate HiRE head."""
  if cfg.hire_softmax is not None:
    tied = embed if cfg.tie_embeddings and cfg.head_scale == 1.0 else None
    return HiReSoftmaxHead(cfg, rngs=rngs, tied=tied)
  return None if cfg.tie_embeddings else DenseHead(cfg, rngs=rngs)


def served_metrics(logits_BxLxV, cand_BxLxKp, targets_BxL, ks=(1, 8, 32), exact_top1_BxL=None,
                   scores_BxLxV=None):
  """What HiRE decoding sees: recall@k of the top-k of `logits_BxLxV` inside the candidates,
  top-1 agreement (of the head alone, and with `exact_top1_BxL`, the exact model's greedy token,
  when given), and two losses of what is served:
  - `served_loss`: the target's log-likelihood under HiRE with the partition function estimated
    from the candidates plus the target (`scoring_log_probs`), comparable to the dense loss;
  - `served_sampling_loss`: the softmax over the candidates only with a SERVED_FLOOR uniform
    floor, what sampling draws from (a missed target costs ~log(V / SERVED_FLOOR));
  and `candidate_miss_rate`, the fraction of targets outside the k' candidates. With the
  approximator's scores, also `served_loss_approx_tail` (`tail_log_probs`)."""
  logits32 = logits_BxLxV.astype(jnp.float32)
  out = {}
  ks = [k for k in ks if k <= cand_BxLxKp.shape[-1]]
  if ks:  # one sort over V for the largest k; the smaller top-k's are its prefixes
    true_BxLxK = topk.exact_top_k(logits32, max(ks))[1]
    for k in ks:
      out[f"recall/softmax@{k}"] = topk.recall(cand_BxLxKp, true_BxLxK[..., :k])
  hire_top1 = served_top1(logits32, cand_BxLxKp)
  out["top1_agreement/softmax"] = jnp.mean(hire_top1 == jnp.argmax(logits32, -1))
  if exact_top1_BxL is not None:
    out["top1_agreement"] = jnp.mean(hire_top1 == exact_top1_BxL)
  out["served_loss"] = -jnp.mean(scoring_log_probs(logits32, cand_BxLxKp, targets_BxL))
  out["served_sampling_loss"] = -jnp.mean(served_log_probs(logits32, cand_BxLxKp, targets_BxL))
  if scores_BxLxV is not None:
    out["served_loss_approx_tail"] = -jnp.mean(
        tail_log_probs(logits32, scores_BxLxV, cand_BxLxKp, targets_BxL))
  out["candidate_miss_rate"] = 1.0 - jnp.mean(
      jnp.any(cand_BxLxKp == targets_BxL[..., None], axis=-1).astype(jnp.float32))
  return out


def served_top1(logits_BxLxV, cand_BxLxKp):
  """top1_BxL: HiRE's greedy token, the candidate with the largest exact logit."""
  z_BxLxKp = jnp.take_along_axis(logits_BxLxV, cand_BxLxKp, axis=-1)
  return jnp.take_along_axis(cand_BxLxKp, jnp.argmax(z_BxLxKp, -1)[..., None], -1)[..., 0]


def served_log_probs(logits_BxLxV, cand_BxLxKp, targets_BxL):
  """logp_BxL: the log-probability HiRE serves for each target: the softmax over the exact
  logits of the k' candidates only, mixed with a SERVED_FLOOR uniform floor over V."""
  logits32 = logits_BxLxV.astype(jnp.float32)
  z_BxLxKp = jnp.take_along_axis(logits32, cand_BxLxKp, axis=-1)
  p_S_BxLxKp = jax.nn.softmax(z_BxLxKp, axis=-1)
  hit_BxLxKp = cand_BxLxKp == targets_BxL[..., None]
  p_target_BxL = jnp.sum(jnp.where(hit_BxLxKp, p_S_BxLxKp, 0.0), axis=-1)
  return jnp.log((1 - SERVED_FLOOR) * p_target_BxL + SERVED_FLOOR / logits32.shape[-1])


def tail_log_probs(logits_BxLxV, scores_BxLxV, cand_BxLxKp, targets_BxL):
  """logp_BxL of each target with the partition function over the whole vocabulary estimated
  from what HiRE computes: the exact logits of the k' candidates (and of the target, gathered as
  in `scoring_log_probs`) plus the approximator's scores `scores_BxLxV` of every other id. The
  scores are put on the logits' scale by the log-ratio of the two masses on the candidates (an
  approximator trained by distillation matches the logits up to an additive constant). Unlike
  `scoring_log_probs`, which leaves the mass outside the candidates out (so it can only be lower
  than the exact loss of the same logits), a perfect approximator makes this the exact
  log-softmax; how far it is from it measures what the approximator misjudges in the tail."""
  logits32 = logits_BxLxV.astype(jnp.float32)
  scores32 = scores_BxLxV.astype(jnp.float32)
  z_BxLxKp = jnp.take_along_axis(logits32, cand_BxLxKp, axis=-1)
  s_BxLxKp = jnp.take_along_axis(scores32, cand_BxLxKp, axis=-1)
  shift_BxL = jax.nn.logsumexp(z_BxLxKp, axis=-1) - jax.nn.logsumexp(s_BxLxKp, axis=-1)
  hit_BxL = jnp.any(cand_BxLxKp == targets_BxL[..., None], axis=-1)
  t_BxL = jnp.take_along_axis(logits32, targets_BxL[..., None], axis=-1)[..., 0]
  s_t_BxL = jnp.take_along_axis(scores32, targets_BxL[..., None], axis=-1)[..., 0]
  # The approximator's mass outside the candidates and the target, as a fraction of its total.
  all_BxL = jax.nn.logsumexp(scores32, axis=-1)
  rest_BxL = (1.0 - jnp.exp(jax.nn.logsumexp(s_BxLxKp, axis=-1) - all_BxL)
              - jnp.where(hit_BxL, 0.0, jnp.exp(s_t_BxL - all_BxL)))
  log_rest_BxL = all_BxL + jnp.log(jnp.maximum(rest_BxL, 1e-30)) + shift_BxL
  log_z_BxL = jnp.logaddexp(jax.nn.logsumexp(z_BxLxKp, axis=-1), log_rest_BxL)
  log_z_BxL = jnp.where(hit_BxL, log_z_BxL, jnp.logaddexp(log_z_BxL, t_BxL))
  return t_BxL - log_z_BxL


def scoring_log_probs(logits_BxLxV, cand_BxLxKp, targets_BxL):
  """logp_BxL for scoring a given continuation with HiRE (downstream multiple choice): the
  target's row is gathered too (k' + 1 rows), and its exact logit is normalised over the
  candidates plus itself. The misses of the candidate set then cost only the probability mass
  outside it, instead of the SERVED_FLOOR that sampling would give them."""
  logits32 = logits_BxLxV.astype(jnp.float32)
  z_BxLxKp = jnp.take_along_axis(logits32, cand_BxLxKp, axis=-1)
  z_BxLxKp = jnp.where(cand_BxLxKp == targets_BxL[..., None], -jnp.inf, z_BxLxKp)
  t_BxL = jnp.take_along_axis(logits32, targets_BxL[..., None], axis=-1)[..., 0]
  log_z_BxL = jnp.logaddexp(jax.nn.logsumexp(z_BxLxKp, axis=-1), t_BxL)
  return t_BxL - log_z_BxL

