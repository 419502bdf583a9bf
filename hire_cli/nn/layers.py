"""Small building blocks shared by the model's layers."""

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn.config import ModelConfig


def param(rngs: nnx.Rngs, shape, std: float, axes, cfg: ModelConfig) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.dtype(cfg.param_dtype))
  return nnx.Param(value, axes=axes)


class RMSNorm(nnx.Module):

  def __init__(self, cfg: ModelConfig):
    self.scale = nnx.Param(jnp.ones((cfg.d_model,), jnp.dtype(cfg.param_dtype)), axes=("embed",))

  def __call__(self, x_BxLxD):
    x32 = x_BxLxD.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
    return (x32 * inv * self.scale[...].astype(jnp.float32)).astype(x_BxLxD.dtype)


def rope(x_BxLxHxK, pos_BxL, base: float):
  """Rotary position embedding on the last axis (split into two halves)."""
  half = x_BxLxHxK.shape[-1] // 2
  freq_F = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxLxF = pos_BxL[..., None].astype(jnp.float32) * freq_F
  sin, cos = jnp.sin(angle_BxLxF)[:, :, None, :], jnp.cos(angle_BxLxF)[:, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def activate(pre_BxLxF, gate_BxLxF, activation: str):
  if activation == "relu":
    return jax.nn.relu(pre_BxLxF)
  if activation == "gelu":
    return jax.nn.gelu(pre_BxLxF)
  return jax.nn.silu(gate_BxLxF) * pre_BxLxF  # swiglu
