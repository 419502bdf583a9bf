"""What HiRE-Softmax serves, measured against the exact logits of the same hidden states: recall
of the exact top-k among the candidates, top-1 agreement, and the served losses (the candidates'
partition function, the sampling distribution with its floor, and the approximate tail). The
inputs come from `served.forward` (eval's served metrics, downstream HiRE scoring)."""

import jax
import jax.numpy as jnp

from hire_cli.nn import topk

# A token whose target falls outside the candidates gets this much of a uniform distribution,
# so the served loss stays finite but a miss costs ~log(V / SERVED_FLOOR) nats.
SERVED_FLOOR = 1e-6


def served_metrics(logits_BxLxV, cand_BxLxKp, targets_BxL, ks=(1, 8, 32), exact_top1_BxL=None,
                   scores_BxLxV=None, top1_BxL=None):
  """What HiRE decoding sees: recall@k of the top-k of `logits_BxLxV` inside the candidates,
  top-1 agreement (of the head alone, and with `exact_top1_BxL`, the exact model's greedy token,
  when given), and two losses of what is served:
  - `served_loss`: the target's log-likelihood under HiRE with the partition function estimated
    from the candidates plus the target (`scoring_log_probs`), comparable to the dense loss;
  - `served_sampling_loss`: the softmax over the candidates only with a SERVED_FLOOR uniform
    floor, what sampling draws from (a missed target costs ~log(V / SERVED_FLOOR));
  and `candidate_miss_rate`, the fraction of targets outside the k' candidates. With the
  approximator's scores, also `served_loss_approx_tail` (`tail_log_probs`). `top1_BxL` is the
  served greedy token (`served.forward`'s "top1"); by default the candidate of largest logit."""
  logits32 = logits_BxLxV.astype(jnp.float32)
  out = {}
  ks = [k for k in ks if k <= cand_BxLxKp.shape[-1]]
  if ks:  # one sort over V for the largest k; the smaller top-k's are its prefixes
    true_BxLxk = topk.exact_top_k(logits32, max(ks))[1]
    for k in ks:
      out[f"recall/softmax@{k}"] = topk.recall(cand_BxLxKp, true_BxLxk[..., :k])
  hire_top1 = served_top1(logits32, cand_BxLxKp) if top1_BxL is None else top1_BxL
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

