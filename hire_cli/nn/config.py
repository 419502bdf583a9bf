"""The model's sizes and switches: one frozen dataclass passed whole to every layer."""

import dataclasses

import jax.numpy as jnp

from hire_cli import errors
from hire_cli.nn.approx import ApproxConfig

ACTIVATIONS = ("relu", "gelu", "swiglu")
TOPK_METHODS = ("exact", "two_stage", "approx_max_k")


@dataclasses.dataclass(frozen=True)
class HiReSoftmaxConfig:
  """HiRE-Softmax (HIRE.md section 1): approximate scores -> k' candidates -> exact top-k."""

  approx: ApproxConfig = ApproxConfig()  # the compressed copy of the output layer W
  k: int = 32  # outputs wanted (top-k logits handed to sampling)
  k_prime: int = 256  # k': candidates rescored exactly (k <= k' <= V)
  topk_method: str = "exact"  # how candidates are picked: exact | two_stage | approx_max_k
  loss_weight: float = 1.0  # weight of the approximator's distillation loss
  temperature: float = 1.0  # T of the distillation softmax

  def validate(self, vocab_size: int, d_model: int):
    if not 0 < self.k <= vocab_size:
      raise errors.UserError(f"HiReSoftmaxConfig.k={self.k} must be in 1..V={vocab_size}")
    if not self.k <= self.k_prime <= vocab_size:
      raise errors.UserError(f"HiReSoftmaxConfig.k_prime={self.k_prime} must satisfy k={self.k} "
                             f"<= k' <= V={vocab_size}; raise k_prime or lower k")
    if self.topk_method not in TOPK_METHODS:
      raise errors.UserError(f"HiReSoftmaxConfig.topk_method={self.topk_method!r}; use one of "
                             f"{TOPK_METHODS}")
    if self.temperature <= 0 or self.loss_weight < 0:
      raise errors.UserError("HiReSoftmaxConfig.temperature must be > 0 and loss_weight >= 0")
    self.approx.validate(vocab_size, d_model)


@dataclasses.dataclass(frozen=True)
class HiReFfnConfig:
  """HiRE-FFN (HIRE.md section 2): group-sparse top-k FFN with an approximator of W_in."""

  approx: ApproxConfig = ApproxConfig(rank=32)  # the compressed copy of W_in
  group_size: int = 8  # g: units per contiguous group
  k_fraction: float = 0.05  # fraction of the F units kept per token (k_g = round(frac F / g))
  k_prime_factor: float = 2.0  # k'_g = ceil(factor * k_g) candidate groups from the approximator
  n_static: int = 0  # groups every token always uses (trained as always-on)
  dynamic_overlap: bool = False  # decoding B tokens: one shared candidate set for the batch
  batch_budget_factor: float = 2.0  # dynamic overlap: shared set of ceil(factor * k'_g) groups
  score: str = "l2"  # group score: l2 (norm of the group's activations) | sum (of magnitudes)
  topk_method: str = "exact"  # exact | two_stage | approx_max_k
  loss_weight: float = 1.0  # weight of the FFN approximator's distillation loss
  temperature: float = 1.0  # T of the distillation softmax over group scores


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
  hire_softmax: HiReSoftmaxConfig | None = None  # None = dense output layer
  hire_ffn: HiReFfnConfig | None = None  # None = dense FFN

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

    if self.hire_softmax is not None:
      self.hire_softmax.validate(self.vocab_size, self.d_model)

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
