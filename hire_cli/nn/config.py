"""The model's sizes and switches: one frozen dataclass passed whole to every layer."""

import dataclasses
import math
import typing

import jax.numpy as jnp

from hire_cli import errors, validate
from hire_cli.nn import topk
from hire_cli.nn.approx import ApproxConfig

ACTIVATIONS = ("relu", "gelu", "swiglu", "geglu")  # the last two are gated (W_gate)
FFN_SCORES = ("l2", "sum")  # HiReFfnConfig.score
# ModelConfig.remat: what the backward pass recomputes of each block instead of keeping it.
REMAT = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class HiReSoftmaxConfig:
  """HiRE-Softmax (docs/method.md section 1): approximate scores -> k' candidates -> exact top-k."""

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
  # Post-hoc LR start: 0 = the truncated SVD of W; N = the rank-r fit of the logits on the final
  # hidden states of N training rows (approx.whitened_svd_init): far higher recall untrained.
  calibration_rows: int = 0

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
  """HiRE-FFN (docs/method.md section 2): group-sparse top-k FFN with an approximator of W_in."""

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
  # Architecture knobs of imported families (docs/real_models.md); the defaults are hire's own.
  n_kv_heads: int = 0  # KV heads (grouped-query attention; must divide n_heads); 0 = n_heads
  qk_norm: bool = False  # RMSNorm of each query and key head (over d_head) before rotary
  post_norms: bool = False  # also an RMSNorm on the output of attention and of the FFN (Gemma)
  norm_offset: float = 0.0  # RMSNorm scales by (offset + w): 1 for Gemma's (1 + w), w init 0
  norm_eps: float = 1e-6  # RMSNorm epsilon (Llama family 1e-5)
  embed_scale: float = 1.0  # the embedding is multiplied by this (Gemma: sqrt(d_model))
  sliding_window: int = 0  # windowed layers attend to the last W positions; 0 = all global
  global_every: int = 1  # with a window: layer i is global when (i + 1) % global_every == 0
  rope_local_base: float = 10000.0  # rotary base of the windowed layers
  tied_head_scale: float = 0.0  # tied output layer = scale x embedding; 0 = d_model**-0.5
  bos_id: int = -1  # token put before every text (Gemma 2, Llama 3 128000); -1 = none

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

    kv = self.kv_heads
    if kv <= 0 or self.n_heads % kv:
      raise errors.UserError(f"ModelConfig.n_kv_heads={self.n_kv_heads} must divide n_heads="
                             f"{self.n_heads} (0 = n_heads)")
    if self.sliding_window < 0 or self.global_every < 1:
      raise errors.UserError(f"ModelConfig.sliding_window={self.sliding_window} must be >= 0 and "
                             f"global_every={self.global_every} >= 1")
    if self.norm_eps <= 0 or self.embed_scale <= 0 or self.tied_head_scale < 0:
      raise errors.UserError("ModelConfig.norm_eps and embed_scale must be > 0 and "
                             "tied_head_scale >= 0 (0 = d_model**-0.5)")
    if not -1 <= self.bos_id < self.vocab_size:
      raise errors.UserError(f"ModelConfig.bos_id={self.bos_id} must be -1 (none) or an id "
                             f"below vocab_size={self.vocab_size}")
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
  def kv_heads(self) -> int:
    """KV heads (n_kv_heads, or n_heads when 0)."""
    return self.n_kv_heads or self.n_heads

  @property
  def gated(self) -> bool:
    """Whether the FFN has a gate matrix W_gate (swiglu, geglu)."""
    return self.activation in ("swiglu", "geglu")

  def window(self, layer: int) -> int:
    """Positions layer `layer` attends back to (its own included); 0 = all (a global layer)."""
    if not self.sliding_window or (layer + 1) % self.global_every == 0:
      return 0
    return self.sliding_window

  def layer_rope_base(self, layer: int) -> float:
    return self.rope_local_base if self.window(layer) else self.rope_base

  @property
  def first_input(self) -> int:
    """The id every input row starts with: BOS for a BOS model, else the 0 that seqio's feature
    converter shifts in (`data.lm_inputs`, downstream scoring)."""
    return max(self.bos_id, 0)

  @property
  def head_scale(self) -> float:
    """The tied output layer's multiplier of the embedding."""
    return self.tied_head_scale or self.d_model**-0.5

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def num_params(self) -> int:
    """Parameters of the model without its HiRE approximators (embedding and output layer
    included), counted on the abstract parameter tree (`model.abstract_params`)."""
    from hire_cli.nn import model  # noqa: PLC0415 - the model imports this module
    dense = dataclasses.replace(self, hire_softmax=None, hire_ffn=None)
    return sum(math.prod(x.shape) for x in model.abstract_params(dense).values())

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
