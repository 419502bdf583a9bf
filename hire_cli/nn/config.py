"""The model's sizes and switches: one frozen dataclass passed whole to every layer."""

import dataclasses
import math
import typing

import jax.numpy as jnp

from hire_cli import errors, validate
from hire_cli.nn import topk
from hire_cli.nn.approx import ApproxConfig

ACTIVATIONS = ("relu", "gelu", "swiglu")
FFN_SCORES = ("l2", "sum")  # HiReFfnConfig.score
# ModelConfig.remat: what the backward pass recomputes of each block instead of keeping it.
REMAT = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class HiReSoftmaxConfig:
  """HiRE-Softmax (HIRE.md section 1): approximate scores -> k' candidates -> exact top-k."""

  approx: ApproxConfig = ApproxConfig()  # the compressed copy of the output layer W
  k: int = 32  # outputs wanted (top-k logits handed to sampling; greedy uses the top 1)
  k_prime: int = 256  # k': candidates rescored exactly (k <= k' <= V)
  topk_method: str = "exact"  # how candidates are picked: exact | two_stage | approx_max_k |
  # da_top_k | gather_then_top_k (the last two on a mesh whose model axis shards V; see
  # docs/mesh.md; on one device both are the exact top-k)
  k_loc: int = 0  # da_top_k: candidates each model shard offers; 0 = smallest reaching da_recall
  da_recall: float = 0.99  # da_top_k with k_loc = 0: target expected recall of the k' selection
  loss_weight: float = 1.0  # weight of the approximator's distillation loss
  temperature: float = 1.0  # T: softmax(approx / T) distils softmax(exact / T)

  def validate(self, vocab_size: int, d_model: int):
    """Checks against the output layer `W: V x D`; raises UserError with a fix."""
    if not 0 < self.k <= vocab_size:
      raise errors.UserError(f"HiReSoftmaxConfig.k={self.k} must be in 1..V={vocab_size}")
    if not self.k <= self.k_prime <= vocab_size:
      raise errors.UserError(f"HiReSoftmaxConfig.k_prime={self.k_prime} must satisfy k={self.k} "
                             f"<= k' <= V={vocab_size}; raise k_prime or lower k")
    _validate_selection(self, vocab_size, d_model)


@dataclasses.dataclass(frozen=True)
class HiReFfnConfig:
  """HiRE-FFN (HIRE.md section 2): group-sparse top-k FFN with an approximator of W_in."""

  approx: ApproxConfig = ApproxConfig()  # the compressed copy of W_in
  group_size: int = 8  # g: units per contiguous group; must divide d_ff
  k_fraction: float = 0.05  # fraction of the F units kept per token (k_g = round(frac F / g))
  k_prime_factor: float = 2.0  # k'_g = ceil(factor * k_g) candidate groups from the approximator
  n_static: int = 0  # groups every token always uses (the first ones, trained always-on)
  dynamic_overlap: bool = False  # decoding B tokens: one shared candidate set for the batch
  batch_budget_factor: float = 2.0  # dynamic overlap: shared set of ceil(factor * k'_g) groups
  score: str = "l2"  # group score: l2 (norm of the group's activations) | sum (of magnitudes)
  topk_method: str = "exact"  # exact | two_stage | approx_max_k | da_top_k | gather_then_top_k
  k_loc: int = 0  # da_top_k: candidate groups each model shard offers; 0 = from da_recall
  da_recall: float = 0.99  # da_top_k with k_loc = 0: target expected recall of the k'_g groups
  loss_weight: float = 1.0  # weight of the FFN approximator's distillation loss
  temperature: float = 1.0  # T of the distillation softmax over group scores

  def kept_groups(self, d_ff: int) -> int:
    """k_g: dynamic groups each token keeps, round(k_fraction * F / g) and at least 1."""
    return max(1, round(self.k_fraction * d_ff / self.group_size))

  def validate(self, d_ff: int, d_model: int):
    """Checks against the FFN `W_in: F x D`; raises UserError with a fix."""
    f, g = d_ff, self.group_size
    if g <= 0 or f % g:
      raise errors.UserError(f"HiReFfnConfig.group_size={g} must divide d_ff={f}; use a divisor "
                             f"of {f} such as {math.gcd(f, 8)}.")
    groups = f // g
    if not 0 <= self.n_static < groups:
      raise errors.UserError(f"HiReFfnConfig.n_static={self.n_static} must be in "
                             f"0..{groups - 1} (G = d_ff / group_size = {groups}); lower n_static.")
    if not 0 < self.k_fraction <= 1:
      raise errors.UserError(f"HiReFfnConfig.k_fraction={self.k_fraction} must be in (0, 1] "
                             "(0.05 is typical).")
    k_g = self.kept_groups(f)
    if k_g + self.n_static > groups:
      raise errors.UserError(
          f"k_g + n_static = {k_g} + {self.n_static} > G = {groups} groups (k_g = "
          "round(k_fraction * d_ff / group_size)); lower HiReFfnConfig.k_fraction or n_static.")
    if self.k_prime_factor < 1:
      raise errors.UserError(f"HiReFfnConfig.k_prime_factor={self.k_prime_factor} must be >= 1 "
                             "so that k'_g >= k_g; 2 is typical.")
    if self.batch_budget_factor < 1:
      raise errors.UserError(
          f"HiReFfnConfig.batch_budget_factor={self.batch_budget_factor} must be >= 1 so the "
          "shared set is at least k'_g groups; 2 is typical.")
    if self.score not in FFN_SCORES:
      raise errors.UserError(f"HiReFfnConfig.score={self.score!r}; use one of {FFN_SCORES}.")
    _validate_selection(self, f, d_model)


def _validate_selection(cfg, n: int, d: int) -> None:
  """What HiRE-Softmax and HiRE-FFN share: the top-k method, the distillation knobs and the
  approximator of their `W: n x d`."""
  name = type(cfg).__name__
  if cfg.topk_method not in topk.METHODS:
    raise errors.UserError(f"{name}.topk_method={cfg.topk_method!r}; use one of {topk.METHODS}")
  if cfg.k_loc < 0 or not 0 < cfg.da_recall <= 1:
    raise errors.UserError(f"{name}.k_loc={cfg.k_loc} must be >= 0 (0 = chosen for da_recall) "
                           f"and da_recall={cfg.da_recall} in (0, 1]")
  if cfg.temperature <= 0 or cfg.loss_weight < 0:
    raise errors.UserError(f"{name}.temperature must be > 0 and loss_weight >= 0")
  cfg.approx.validate(n, d)


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
  # Rematerialisation of each block in training: none (keep every activation) | full (keep only
  # the block's input, recompute the rest) | dots (keep the matmul outputs, recompute the rest).
  remat: str = "none"

  def __post_init__(self):
    validate.fields(self)  # types first: a string where a size belongs is one clear line
    if self.activation not in ACTIVATIONS:
      raise errors.UserError(
          f"ModelConfig.activation={self.activation!r} is unknown; use one of {ACTIVATIONS}.")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_ff", "max_len"):
      if getattr(self, name) <= 0:
        raise errors.UserError(f"ModelConfig.{name}={getattr(self, name)} must be positive.")
    if self.remat not in REMAT:
      raise errors.UserError(f"ModelConfig.remat={self.remat!r}; use one of {REMAT} (REMAT)")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise errors.UserError(
            f"ModelConfig.{name}={getattr(self, name)!r}; use float32, bfloat16 or float16.")

    if self.hire_softmax is not None:
      self.hire_softmax.validate(self.vocab_size, self.d_model)
    if self.hire_ffn is not None:
      self.hire_ffn.validate(self.d_ff, self.d_model)

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    """Rebuilds a config from its JSON description (`dataclasses.asdict`, as saved with every
    checkpoint in `meta["model"]`), HiRE sub-configs included; missing fields take defaults."""
    return _from_dict(cls, d)

  @property
  def has_hire(self) -> bool:
    """Whether any layer (output softmax or FFN) has a HiRE path besides the exact one."""
    return self.hire_softmax is not None or self.hire_ffn is not None

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

  def train_flops_per_token(self, seq_len: int) -> float:
    """Model FLOPs of one training token (forward and backward) of the dense-equivalent model:
    6 x the parameters that multiply (all but the input embedding lookup, which the output layer
    counts when tied) + 12 x layers x heads x d_head x seq_len for the attention scores and
    their weighted sum (PaLM's formula, causal mask not discounted). A HiRE model counts as the
    dense model of its size: the approximators and the top-k are not counted (they add a few %),
    and a top-k FFN is counted dense (training computes every unit before keeping the top-k)."""
    matmul = self.num_params() - (0 if self.tie_embeddings else self.vocab_size * self.d_model)
    attention = 12 * self.n_layers * self.n_heads * self.d_head * seq_len
    return 6.0 * matmul + attention


def _from_dict(cls, d: dict):
  """`cls(**d)` with nested dicts turned back into the config dataclasses their fields name."""
  if not isinstance(d, dict):
    raise errors.UserError(f"a {cls.__name__} description must be a dict, not {type(d).__name__}")
  hints = typing.get_type_hints(cls)
  unknown = sorted(set(d) - set(hints))
  if unknown:
    raise errors.UserError(f"{cls.__name__} has no field(s) {unknown}; the description comes "
                           "from another version of hire")
  kwargs = {}
  for name, value in d.items():
    sub = [h for h in (hints[name], *typing.get_args(hints[name])) if dataclasses.is_dataclass(h)]
    kwargs[name] = _from_dict(sub[0], value) if sub and isinstance(value, dict) else value
  return cls(**kwargs)


# Benchmarks compare all four variants on any model, also one whose run configured no HiRE
# layer. A fixed rank breaks tiny models (it must stay < D) and a fixed k' can exceed V, so those
# variants are sized to the model: rank D/16 keeps the approximator's r (V + D) bytes near 1/16
# of the layer's V D at every scale.


def _default_rank(model: ModelConfig) -> int:
  return max(8, model.d_model // 16)


def default_hire_softmax(model: ModelConfig) -> HiReSoftmaxConfig:
  """HiRE-Softmax sized to `model` (rank D/16, at least 8; k' capped at V) for benchmarks."""
  base = HiReSoftmaxConfig(approx=ApproxConfig(rank=_default_rank(model)))
  return dataclasses.replace(base, k_prime=min(base.k_prime, model.vocab_size))


def default_hire_ffn(model: ModelConfig) -> HiReFfnConfig:
  """HiRE-FFN sized to `model` (rank D/16, at least 8) for benchmarks."""
  return HiReFfnConfig(approx=ApproxConfig(rank=_default_rank(model)))
