"""Type and range checks of what gin binds, before anything runs or is written: a wrong value
becomes one UserError line that names the setting, never a traceback deep inside a run."""

import dataclasses
import math
import types
import typing

from hire_cli import errors

# Settings that must be >= 1 / >= 0 wherever they appear (entry arguments or config fields).
POSITIVE = {"train_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
            "eval_batches", "decode_steps", "repeats", "num_tokens", "context_len",
            "compare_prompt_len", "recall_batches", "top_k", "seq_len", "k", "k_prime",
            "learning_rate", "clip_norm", "grad_accum_steps"}
NON_NEGATIVE = {"eval_every", "warmup_steps", "downstream_shots", "downstream_limit",
                "minimal_pairs_limit", "latency_steps", "compare_prompts", "seed", "temperature",
                "weight_decay", "min_lr_ratio", "device_memory_gb", "peak_tflops"}


# Upper bounds where a larger value cannot work (JAX seeds are 32-bit).
AT_MOST = {"seed": 2**31 - 1}


def _name(owner: str, field: str) -> str:
  # Entry arguments are mostly set by a macro of the same name in capitals (TRAIN_STEPS); config
  # fields by their binding (OptimizerConfig.learning_rate).
  return field.upper() if owner.islower() else f"{owner}.{field}"


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
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
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
  """Raises UserError for the first value that has the wrong type or is out of range."""
  for field, value in values.items():
    hint = hints.get(field)
    if not _allowed(value, hint):
      raise errors.UserError(f"{_name(owner, field)}={value!r} must be {_kind(hint)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and field in POSITIVE and value <= 0:
      raise errors.UserError(f"{_name(owner, field)}={value!r} must be positive")
    if number and field in NON_NEGATIVE and value < 0:
      raise errors.UserError(f"{_name(owner, field)}={value!r} must be >= 0")
    if number and field in AT_MOST and value > AT_MOST[field]:
      raise errors.UserError(f"{_name(owner, field)}={value!r} must be at most {AT_MOST[field]}")


def arguments(fn, values: dict) -> None:
  """Checks the keyword arguments an entry function received (call with `locals()` first thing)
  and the configs among them."""
  check(fn.__name__, typing.get_type_hints(fn), values)
  for value in values.values():
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      fields(value)


def fields(obj) -> None:
  """Checks a config dataclass's fields against their annotations (and nested configs)."""
  hints = typing.get_type_hints(type(obj))
  values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  check(type(obj).__name__, hints, values)
  for value in values.values():
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      fields(value)
