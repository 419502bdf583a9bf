"""The model's sizes and switches: one frozen dataclass passed whole to every layer."""

import dataclasses

import jax.numpy as jnp

from hire_cli import errors

ACTIVATIONS = ("relu", "gelu", "swiglu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder-only Transformer sizes. Gin binds it from `configs/models/*.gin`."""

  vocab_size: int = 32000  # V: size of the output softmax
  d_model: int = 64  # D: width of the residual stream
  n_layers: int = 2  # number of Transformer blocks
  n_heads: int = 2  # H: attention heads
  d_head: int = 32  # K: width of one head
  d_ff: int = 256  # F: hidden units of the FFN
  max_len: int = 128  # longest sequence (and KV cache) the model handles
  activation: str = "relu"  # FFN non-linearity: relu | gelu | swiglu
  tie_embeddings: bool = False  # output layer shares the input embedding
  rope_base: float = 10000.0  # rotary position frequency base
  dtype: str = "float32"  # compute dtype (bfloat16 on accelerators)
  param_dtype: str = "float32"  # storage dtype of the parameters

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise errors.UserError(
          f"ModelConfig.activation={self.activation!r} is unknown; use one of {ACTIVATIONS}.")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_ff", "max_len"):
      if getattr(self, name) <= 0:
        raise errors.UserError(f"ModelConfig.{name}={getattr(self, name)} must be positive.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise errors.UserError(
            f"ModelConfig.{name}={getattr(self, name)!r}; use float32, bfloat16 or float16.")

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def num_params(self) -> int:
    """Parameter count (embedding and output layer included)."""
    ffn_mats = 3 if self.activation == "swiglu" else 2
    attn = 4 * self.d_model * self.n_heads * self.d_head
    ffn = ffn_mats * self.d_model * self.d_ff
    block = attn + ffn + 2 * self.d_model
    head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
    return self.vocab_size * self.d_model + self.n_layers * block + self.d_model + head
