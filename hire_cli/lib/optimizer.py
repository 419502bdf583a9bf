"""AdamW with linear warmup, cosine decay and global-norm gradient clipping; its moments can be
kept in bfloat16 (half the optimizer-state bytes; the update itself is computed in float32)."""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from hire_cli import errors, validate

MOMENT_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 3e-3  # peak learning rate after warmup
  warmup_steps: int = 100  # linear warmup from 0
  min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio at the last step
  weight_decay: float = 0.01  # decoupled AdamW decay (not applied to norms)
  b1: float = 0.9
  b2: float = 0.95
  clip_norm: float = 1.0  # global gradient norm clip
  moments_dtype: str = "float32"  # storage of Adam's two moments: float32 | bfloat16

  def __post_init__(self):
    validate.fields(self)
    for f in ("learning_rate", "min_lr_ratio", "weight_decay", "b1", "b2", "clip_norm"):
      object.__setattr__(self, f, float(getattr(self, f)))  # gin may give an int (2**31 etc.)
    if self.moments_dtype not in MOMENT_DTYPES:
      raise errors.UserError(f"OptimizerConfig.moments_dtype={self.moments_dtype!r}; use one of "
                             f"{MOMENT_DTYPES} (MOMENTS_DTYPE)")


def schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.min_lr_ratio)


def make(cfg: OptimizerConfig, total_steps: int, params,
         trainable=None) -> optax.GradientTransformation:
  """The optimizer; `params` only shapes the weight-decay mask (matrices decay, vectors not).

  `trainable` (a pytree of bools like `params`) freezes the others: post-hoc HiRE trains only
  the approximators of a model that stays exactly as it was."""
  mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                  weight_decay=cfg.weight_decay, mask=mask),
  )
  if cfg.moments_dtype != "float32":
    tx = _state_stored_in(jnp.dtype(cfg.moments_dtype), tx)
  if trainable is None:
    return tx
  labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def _state_stored_in(dtype, tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` with its floating-point state (Adam's mu and nu) stored in `dtype` between steps and
  computed in float32; the state keeps its tree structure, so shardings follow the parameters."""
  def cast(tree, to):
    return jax.tree.map(lambda x: x.astype(to) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)

  def init(params):
    return cast(tx.init(params), dtype)

  def update(grads, opt_state, params=None):
    updates, new_state = tx.update(grads, cast(opt_state, jnp.float32), params)
    return updates, cast(new_state, dtype)

  return optax.GradientTransformation(init, update)
