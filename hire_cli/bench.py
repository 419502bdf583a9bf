"""`hire bench-latency` (first cut): per-token decode latency with the KV cache at batch 1."""

import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli import decode, errors, evaluate, reporting, sharding, state
from hire_cli.config import ModelConfig
from hire_cli.model import init_cache


def bench_latency(*, model_dir: str, model: ModelConfig, mesh_cfg: sharding.MeshConfig,
                  batch_size: int = 1, context_len: int = 64, decode_steps: int = 32,
                  warmup_steps: int = 3, init: str = "checkpoint", seed: int = 0) -> dict:
  """Median ms per decoded token after `warmup_steps`; writes MODEL_DIR/bench/latency.json.

  init="checkpoint" restores the latest checkpoint; init="random" uses fresh parameters
  (latency does not depend on the values)."""
  if init not in ("checkpoint", "random"):
    raise errors.UserError(f"INIT={init!r}; use \"checkpoint\" or \"random\"")
  if context_len + warmup_steps + decode_steps > model.max_len:
    raise errors.UserError(
        f"context_len {context_len} + warmup {warmup_steps} + decode {decode_steps} steps exceeds "
        f"the model's max_len={model.max_len}; lower them")
  mesh = sharding.make_mesh(mesh_cfg)
  if init == "random":
    graphdef, params = state.init_params(model, seed, mesh)
    step = None
  else:
    step, graphdef, params = evaluate.restore_params(model_dir, model, mesh)
  prefill, step_fn = decode.prefill_and_step(graphdef)
  prompt = jnp.asarray(np.random.default_rng(seed).integers(3, model.vocab_size,
                                                             (batch_size, context_len)), jnp.int32)
  cache = init_cache(model, batch_size)
  t0 = time.perf_counter()
  token, cache = prefill(params, cache, prompt)
  token.block_until_ready()
  prefill_ms = (time.perf_counter() - t0) * 1e3  # includes compilation on first call
  times = []
  for i in range(warmup_steps + decode_steps):
    t = time.perf_counter()
    token, cache = step_fn(params, cache, token, jnp.int32(context_len + i))
    token.block_until_ready()
    if i >= warmup_steps:
      times.append((time.perf_counter() - t) * 1e3)
  med = statistics.median(times)
  result = {
      "checkpoint_step": step, "init": init, "batch_size": batch_size,
      "context_len": context_len, "decode_steps": decode_steps,
      "ms_per_token": med, "ms_per_token_p10": float(np.percentile(times, 10)),
      "ms_per_token_p90": float(np.percentile(times, 90)), "tokens_per_s": batch_size * 1e3 / med,
      "first_prefill_ms_with_compile": prefill_ms, "params": model.num_params(),
      "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
      "host": platform.node(),
  }
  out = pathlib.Path(model_dir) / "bench" / "latency.json"
  if reporting.is_chief():
    reporting.write_json(out, result)
  reporting.say(reporting.table([(k, v) for k, v in result.items() if k != "host"],
                                title=f"Decode latency ({model.num_params() / 1e6:.1f}M params)"))
  reporting.say(f"Wrote {out}")
  return result
