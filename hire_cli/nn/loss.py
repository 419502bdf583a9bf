"""Training objectives (docs/method.md section 3).

The model is trained on exact next-token cross-entropy. HiRE layers add their approximators'
distillation losses, computed on stop-gradient targets, by sowing `hire_aux` intermediates
({"loss": weighted loss, "metrics": {...}}) that `Transformer.logits_with_aux` captures;
`collect_aux` sums them and names the metrics per layer (`recall/softmax@32`,
`recall/ffn/layer_0@k`, ...).
"""

import jax.numpy as jnp
import optax
from flax import nnx


def cross_entropy(logits_BxLxV, targets_BxL, weights_BxL=None):
  """Mean next-token cross-entropy (nats) and the number of weighted tokens."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  if weights_BxL is None:
    weights_BxL = jnp.ones_like(ce_BxL)
  total = jnp.sum(weights_BxL)
  return jnp.sum(ce_BxL * weights_BxL) / jnp.maximum(total, 1.0), total


def _metric_name(name: str, where: str) -> str:
  base, at, k = name.partition("@")
  return f"{base}/{where}{at}{k}"


def collect_aux(sown: nnx.State) -> tuple[jnp.ndarray, dict]:
  """(sum of losses, named metrics) of the `hire_aux` in `sown` (from `logits_with_aux`)."""
  sown = nnx.to_pure_dict(sown)
  total = jnp.zeros((), jnp.float32)
  metrics, ffn_layers = {}, {}
  head_aux = sown.get("head", {}).get("hire_aux", ())
  for aux in head_aux:
    total = total + aux["loss"]
    metrics.update({_metric_name(k, "softmax"): v for k, v in aux["metrics"].items()})
  for i, block in sorted(sown.get("blocks", {}).items()):
    for aux in block.get("ffn", {}).get("hire_aux", ()):
      total = total + aux["loss"]
      for k, v in aux["metrics"].items():
        metrics[_metric_name(k, f"ffn/layer_{i}")] = v
        ffn_layers.setdefault(k, []).append(v)
  for k, values in ffn_layers.items():  # mean over layers
    metrics[_metric_name(k, "ffn")] = jnp.mean(jnp.stack(values))
  return total, metrics


def lm_objective(model, inputs_BxL, targets_BxL, constrain=None):
  """(total loss, metrics) for one batch: exact LM loss plus the approximators' losses.
  `constrain` goes to `logits_with_aux` (the sharding of the residual stream)."""
  logits_BxLxV, sown = model.logits_with_aux(inputs_BxL, constrain)
  loss, ntok = cross_entropy(logits_BxLxV, targets_BxL)
  aux_loss, aux_metrics = collect_aux(sown)
  acc = jnp.mean(jnp.argmax(logits_BxLxV, -1) == targets_BxL)
  metrics = {"loss": loss, "accuracy": acc, "tokens": ntok, **aux_metrics}
  if aux_metrics:
    metrics["approx_loss_total"] = aux_loss
  return loss + aux_loss, metrics
