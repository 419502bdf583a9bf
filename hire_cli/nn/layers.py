"""Small building blocks shared by the model's layers."""

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn.config import ModelConfig


def param(rngs: nnx.Rngs, shape, std: float, axes, cfg: ModelConfig) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.dtype(cfg.param_dtype))
  return nnx.Param(value, axes=axes)


class RMSNorm(nnx.Module):
  """x / rms(x) * (offset + w) over the last axis (of width `dim`, the model's D by default),
  in float32; `offset` and eps come from the config (Gemma: 1 + w, w initialised to 0)."""

  def __init__(self, cfg: ModelConfig, dim: int = 0, axes=("embed",)):
    self.offset, self.eps = cfg.norm_offset, cfg.norm_eps
    init = jnp.full((dim or cfg.d_model,), 1.0 - cfg.norm_offset, jnp.dtype(cfg.param_dtype))
    self.scale = nnx.Param(init, axes=axes)

  def __call__(self, x_BxLxD):
    x32 = x_BxLxD.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(jnp.float32)
    if self.offset:
      scale = scale + self.offset
    return (x32 * inv * scale).astype(x_BxLxD.dtype)


def rope(x_BxLxHxK, pos_BxL, base: float):
  """Rotary position embedding on the last axis (split into two halves)."""
  half = x_BxLxHxK.shape[-1] // 2
  freq_Kh = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxLxKh = pos_BxL[..., None].astype(jnp.float32) * freq_Kh
  sin, cos = jnp.sin(angle_BxLxKh)[:, :, None, :], jnp.cos(angle_BxLxKh)[:, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def activate(pre_BxLxF, gate_BxLxF, activation: str):
  if activation == "relu":
    return jax.nn.relu(pre_BxLxF)
  if activation == "gelu":
    return jax.nn.gelu(pre_BxLxF)
  if activation == "geglu":  # Gemma: tanh-approximated GELU of the gate
    return jax.nn.gelu(gate_BxLxF, approximate=True) * pre_BxLxF
  return jax.nn.silu(gate_BxLxF) * pre_BxLxF  # swiglu
