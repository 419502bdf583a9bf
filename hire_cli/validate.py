"""Type and range checks of what gin binds, before anything runs or is written: a wrong value
becomes one UserError line that names the setting the user set (the macro that fed the value,
else the binding), never a traceback deep inside a run."""

import dataclasses
import math
import sys
import types
import typing

from hire_cli import errors


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a value must satisfy beyond its type: `ok(value)`, said as "must be `text`"; `bad` is
  a value it refuses and `edge` the value at its limit that it accepts (the tests set both). A
  rule on `numbers` says nothing of None or a gin reference (the type check has seen to
  those)."""
  ok: typing.Callable
  text: str
  bad: object
  edge: object
  numbers: bool = True


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


POSITIVE = Rule(lambda v: v > 0, "positive", 0, 1)
NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0", -1, 0)
SEED = Rule(lambda v: 0 <= v <= 2**31 - 1, "in 0..2147483647 (JAX seeds are 32-bit)", 2**31,
            2**31 - 1)
COUNT_OR_ALL = Rule(lambda v: v >= 1 or v == -1, "a positive device count or -1 (the rest)", 0,
                    -1)
STRINGS_OR_NONE = Rule(lambda v: v is None or (isinstance(v, (list, tuple)) and all(
    isinstance(s, str) for s in v)), "a list of strings or None", 5, None, numbers=False)
POSITIVE_INTS = Rule(lambda v: isinstance(v, (list, tuple)) and all(
    isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v),
    "a list of positive integers", [0], [1], numbers=False)

# The rules of each entry function's arguments and each config's fields, keyed on (owner, name):
# the same name may mean different things in two owners (ApproxConfig.group_size may be 0,
# HiReFfnConfig.group_size may not).
RULES = {
    "train": {"train_steps": NON_NEGATIVE, "batch_size": POSITIVE, "seed": SEED,
              "checkpoint_every": POSITIVE, "keep_checkpoints": POSITIVE, "log_every": POSITIVE,
              "eval_every": NON_NEGATIVE, "eval_batches": POSITIVE, "grad_accum_steps": POSITIVE,
              "device_memory_gb": NON_NEGATIVE, "peak_tflops": NON_NEGATIVE},
    "evaluate": {"batch_size": POSITIVE, "eval_batches": POSITIVE, "downstream_shots": NON_NEGATIVE,
                 "downstream_limit": NON_NEGATIVE, "minimal_pairs_limit": NON_NEGATIVE,
                 "latency_steps": NON_NEGATIVE, "recall_batches": POSITIVE,
                 "recall_k_primes": POSITIVE_INTS},
    "generate_text": {"num_tokens": POSITIVE, "temperature": NON_NEGATIVE, "top_k": POSITIVE,
                      "seed": SEED, "compare_prompts": NON_NEGATIVE,
                      "compare_prompt_len": POSITIVE},
    "bench_latency": {"batch_size": POSITIVE, "context_len": POSITIVE, "decode_steps": POSITIVE,
                      "warmup_steps": NON_NEGATIVE, "seed": SEED, "repeats": POSITIVE,
                      "variants": STRINGS_OR_NONE, "approx_kinds": STRINGS_OR_NONE,
                      "topk_methods": STRINGS_OR_NONE},
    "DataConfig": {"seq_len": POSITIVE, "max_rows": NON_NEGATIVE},
    "MeshConfig": {"data": COUNT_OR_ALL, "fsdp": COUNT_OR_ALL, "model": POSITIVE},
    "OptimizerConfig": {"learning_rate": POSITIVE, "warmup_steps": NON_NEGATIVE,
                        "min_lr_ratio": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
                        "clip_norm": POSITIVE},
    "HiReSoftmaxConfig": {"k": POSITIVE, "k_prime": POSITIVE, "k_loc": NON_NEGATIVE,
                          "calibration_rows": NON_NEGATIVE},
    "HiReFfnConfig": {"group_size": POSITIVE, "n_static": NON_NEGATIVE, "k_loc": NON_NEGATIVE},
    "ApproxConfig": {"rank": POSITIVE, "group_size": NON_NEGATIVE},
}

_NOT_GIVEN = object()


def _bound(owner: str, field: str):
  """(name, value) of what the parsed gin config binds to `owner.field` in the active scope,
  following macros to the one that holds the value; None where gin binds nothing."""
  gin = sys.modules.get("gin")  # validation needs no gin; runs started by `hire` have it
  if gin is None:
    return None
  cfg, macro = gin.config._CONFIG, gin.config.macro  # gin has no public lookup of a binding
  match = gin.config._REGISTRY.get_match(owner)
  if match is None:
    return None
  scopes = gin.current_scope()
  for i in range(len(scopes), -1, -1):
    scope = "/".join(scopes[:i])
    params = cfg.get((scope, match.selector), {})
    if field not in params:
      continue
    name, value = f"{scope + '/' if scope else ''}{owner}.{field}", params[field]
    while isinstance(value, gin.config.ConfigurableReference) and \
        value.configurable.wrapped is macro:
      name = value.scoped_selector.rpartition("/")[0]  # NAME/gin.macro
      value = cfg.get((name, value.configurable.selector), {}).get("value")
    return name, value
  return None


def setting(owner: str, field: str, value=_NOT_GIVEN) -> str:
  """The name the user set for `owner.field`: the macro (GENERATE_TOKENS for
  generate_text.num_tokens) or the binding (train.log_every); `owner.field` where gin bound
  nothing, or bound another value than `value` (a direct Python call after an unrelated parse)."""
  found = _bound(owner, field)
  if found is None:
    return f"{owner}.{field}"
  gin = sys.modules["gin"]
  stale = value is not _NOT_GIVEN and not isinstance(found[1], gin.config.ConfigurableReference) \
      and not _same(found[1], value)
  return f"{owner}.{field}" if stale else found[0]


def _same(a, b) -> bool:
  try:
    return bool(a == b) or (a != a and b != b)
  except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
    return False


def _allowed(value, hint) -> bool:
  if hint is None or hint is typing.Any:
    return True
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    return any(_allowed(value, h) for h in typing.get_args(hint))
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return _number(value) and math.isfinite(value)
  if origin is not None:
    return isinstance(value, origin)
  return isinstance(value, hint) if isinstance(hint, type) else True


def _kind(hint) -> str:
  names = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}
  if hint in names:
    return names[hint]
  args = [h for h in typing.get_args(hint) if h is not type(None)]
  if args:
    return " or ".join(_kind(h) for h in args) + (" or None" if len(args) <
                                                  len(typing.get_args(hint)) else "")
  return f"a {getattr(hint, '__name__', hint)} (a gin reference such as @{hint.__name__}())" \
      if isinstance(hint, type) else str(hint)


def check(owner: str, hints: dict, values: dict) -> None:
  """Raises UserError for the first value that has the wrong type or breaks its owner's rule."""
  rules = RULES.get(owner, {})
  for field, value in values.items():
    hint, rule = hints.get(field), rules.get(field)
    if not _allowed(value, hint):
      raise errors.UserError(f"{setting(owner, field, value)}={value!r} must be {_kind(hint)}")
    if rule is None or (rule.numbers and not _number(value)):
      continue
    if not rule.ok(value):
      raise errors.UserError(f"{setting(owner, field, value)}={value!r} must be {rule.text}")


def arguments(fn, values: dict) -> None:
  """Checks the keyword arguments an entry function received (call with `locals()` first thing)
  and the configs among them."""
  check(fn.__name__, typing.get_type_hints(fn), values)
  for value in values.values():
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      fields(value)


def fields(obj) -> None:
  """Checks a config dataclass's fields against their annotations and rules (and nested
  configs)."""
  hints = typing.get_type_hints(type(obj))
  values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  check(type(obj).__name__, hints, values)
  for value in values.values():
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      fields(value)
