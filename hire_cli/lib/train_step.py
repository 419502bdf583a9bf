"""The jitted train step: loss and gradients (optionally accumulated over micro-batches), the
optimizer update, and the metrics the loop logs."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hire_cli.lib import sharding, state
from hire_cli.nn import loss

SUMMED = ("tokens",)  # metrics that add up over micro-batches; the others are means


def make(setup: state.Setup, accum_steps: int = 1):
  """`step(state, inputs_BxL, targets_BxL) -> (state, metrics)`, jitted, the state donated.

  With `accum_steps` = A > 1 the batch is cut into A micro-batches of B/A rows, their gradients
  and metrics averaged, then one optimizer update: the large-batch step up to float rounding
  (every objective, the HiRE approximators' included, is a mean over equally many tokens), with
  activations for B/A rows only. Micro-batch i takes rows i, A+i, 2A+i, ... so each device keeps
  its own rows (no resharding of the batch)."""
  graphdef, tx = setup.graphdef, setup.tx
  micro_sharding = NamedSharding(setup.mesh, P(None, sharding.BATCH_AXES))
  residual_sharding = NamedSharding(setup.mesh, P(sharding.BATCH_AXES))

  def constrain(x_BxLxD):
    return jax.lax.with_sharding_constraint(x_BxLxD, residual_sharding)

  def loss_fn(params, inputs_BxL, targets_BxL):
    return loss.lm_objective(state.bind(graphdef, params), inputs_BxL, targets_BxL, constrain)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulated(params, inputs_BxL, targets_BxL):
    b, l = inputs_BxL.shape
    def split(x_BxL):
      x_AxBmxL = jnp.swapaxes(x_BxL.reshape(b // accum_steps, accum_steps, l), 0, 1)
      return jax.lax.with_sharding_constraint(x_AxBmxL, micro_sharding)

    def body(carry, micro):
      (_, metrics), grads = grad_fn(params, *micro)
      return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    shapes = jax.eval_shape(grad_fn, params, inputs_BxL[:b // accum_steps],
                            targets_BxL[:b // accum_steps])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[1], shapes[0][1]))
    (grads, metrics), _ = jax.lax.scan(body, zeros, (split(inputs_BxL), split(targets_BxL)))
    grads = jax.tree.map(lambda g: g / accum_steps, grads)
    metrics = {k: v if k in SUMMED else v / accum_steps for k, v in metrics.items()}
    return grads, metrics

  def step_fn(st, inputs_BxL, targets_BxL):
    if accum_steps > 1:
      grads, metrics = accumulated(st["params"], inputs_BxL, targets_BxL)
    else:
      (_, metrics), grads = grad_fn(st["params"], inputs_BxL, targets_BxL)
    updates, opt = tx.update(grads, st["opt"], st["params"])
    params = jax.tree.map(lambda p, u: p + u, st["params"], updates)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32)**2)
                                        for g in jax.tree.leaves(grads)))
    # The loss is that of the old parameters; the new ones must be finite too before a save.
    metrics["params_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p))
                                                  for p in jax.tree.leaves(params)]))
    return {"params": params, "opt": opt, "step": st["step"] + 1}, metrics

  return jax.jit(step_fn, out_shardings=(setup.state_shardings, None), donate_argnums=0)
