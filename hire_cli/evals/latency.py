"""Timing decode steps: the shared measurement of `hire bench-latency` and `hire eval`."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli.nn import decode
from hire_cli.nn import served as served_lib
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.model import init_cache
from hire_cli.report import reporting


def time_decode(runner, prompt_BxL, warmup: int, steps: int) -> tuple[float, list[float]]:
  """(ms of the prefill, [ms of each timed decode step after `warmup` steps]), with
  block_until_ready on each. `runner` is (cfg, params, prefill, step) from
  `decode.prefill_and_step`; the prefill is compiled by the first call for a shape, so time a
  shape twice to see it warm."""
  cfg, params, prefill, step_fn = runner
  b, ctx = prompt_BxL.shape
  cache = init_cache(cfg, b, ctx + warmup + steps)
  key = jax.random.key(0)  # greedy: unused
  t = time.perf_counter()
  token, cache = prefill(params, cache, prompt_BxL, key)
  token.block_until_ready()
  prefill_ms = (time.perf_counter() - t) * 1e3
  out = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    token, cache = step_fn(params, cache, token, jnp.int32(ctx + i), key)
    token.block_until_ready()
    if i >= warmup:
      out.append((time.perf_counter() - t) * 1e3)
  return prefill_ms, out


def time_interleaved(runners: dict, prompt_BxL, warmup: int, steps: int, repeats: int,
                     on_done=None) -> dict:
  """{variant: ([ms of each timed step], [ms of each warm prefill])} over `repeats` + 1 rounds
  that each cycle through every variant, so that drift hits all alike; the first round compiles
  the prefill, so its prefill time is dropped. `on_done(variant)` after each variant's turn."""
  out = {v: ([], []) for v in runners}
  for r in range(repeats + 1):
    for v, runner in runners.items():
      prefill_ms, step_ms = time_decode(runner, prompt_BxL, warmup, steps)
      out[v][0].extend(step_ms)
      if r:
        out[v][1].append(prefill_ms)
      if on_done is not None:
        on_done(v)
  return out


def decode_latency(graphdef, params, cfg: ModelConfig, steps: int = 16, context: int = 32,
                   warmup: int = 3, seed: int = 0, mesh=None, *, progress: str = "") -> dict:
  """Median ms per decode step at batch 1: `latency/ms_per_token` (the exact path) and, for
  HiRE models, `latency/ms_per_token_hire` and the speedup (served on `mesh` when its layers
  select with a mesh method); the full study is bench-latency. `progress` names the phase in
  progress lines with ETA (one item per path; none when empty)."""
  context = max(1, min(context, cfg.max_len - warmup - steps))
  prompt = jnp.asarray(np.random.default_rng(seed).integers(3, cfg.vocab_size, (1, context)),
                       jnp.int32)
  has_hire = cfg.has_hire
  if has_hire:  # both paths from the serving form: the exact one never reads its extra tensors
    graphdef, params = served_lib.prepare(graphdef, params, mesh)
  out = {}
  paths = (False, True) if has_hire else (False,)
  for served in reporting.track(paths, progress, first_compiles=False) if progress else paths:
    runner = (cfg, params, *decode.prefill_and_step(graphdef, served=served))
    out["latency/ms_per_token" + ("_hire" if served else "")] = statistics.median(
        time_decode(runner, prompt, warmup, steps)[1])
  if has_hire:
    out["latency/speedup_hire"] = out["latency/ms_per_token"] / out["latency/ms_per_token_hire"]
  return out
