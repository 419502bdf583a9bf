"""Training objectives. The model is trained on exact next-token cross-entropy."""


import jax.numpy as jnp
import optax


def cross_entropy(logits_BxLxV, targets_BxL, weights_BxL=None):
  """Mean next-token cross-entropy (nats) and the number of weighted tokens."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  if weights_BxL is None:
    weights_BxL = jnp.ones_like(ce_BxL)
  total = jnp.sum(weights_BxL)
  return jnp.sum(ce_BxL * weights_BxL) / jnp.maximum(total, 1.0), total


def lm_objective(model, inputs_BxL, targets_BxL):
  """(total loss, metrics) for one batch. HiRE variants add their approximator losses here."""
  h_BxLxD, _ = model(inputs_BxL)
  logits_BxLxV = model.logits(h_BxLxD)
  loss, ntok = cross_entropy(logits_BxLxV, targets_BxL)
  acc = jnp.mean(jnp.argmax(logits_BxLxV, -1) == targets_BxL)
  return loss, {"loss": loss, "accuracy": acc, "tokens": ntok}


