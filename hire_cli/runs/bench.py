"""`hire bench-latency`: decode latency of dense and every HiRE variant, in one run.

All variants share one set of weights (the HiRE variants add approximators to it), run on the
same device in the same process, and are timed interleaved (every repeat cycles through all
variants) so that drift hits all alike. Each decode step is one jitted function over the KV
cache; HiRE variants use their inference paths (approximator, then only the gathered rows).
Reported per case: ms/token, tokens/s, bytes of weights read per step, achieved GB/s, the
device's measured memory bandwidth (copy and read probes), speedup vs dense and the roofline speedup (dense bytes /
variant bytes) with the fraction of it achieved.
"""

import dataclasses
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli import errors
from hire_cli.evals import latency, topk_bench
from hire_cli.lib import checkpoint, sharding, state
from hire_cli.nn import approx, cost, decode
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig
from hire_cli.report import reporting

VARIANTS = ("dense", "hire_softmax", "hire_ffn", "hire")
# Dynamic overlap (one shared FFN candidate set per decoding batch): timed when a batch > 1.
OVERLAP_VARIANTS = ("hire_ffn_overlap", "hire_overlap")
# The HiRE layers each variant needs trained approximators for.
LAYERS = {"dense": set(), "hire_softmax": {"softmax"}, "hire_ffn": {"ffn"},
          "hire": {"softmax", "ffn"}, "hire_ffn_overlap": {"ffn"},
          "hire_overlap": {"softmax", "ffn"}}


def variant_configs(model: ModelConfig, variants) -> dict:
  """ModelConfig per variant: the configured HiRE layers, or defaults sized to the model (rank
  D/16, at least 8) when the run has none."""
  rank = max(8, model.d_model // 16)
  sm = model.hire_softmax or HiReSoftmaxConfig(approx=approx.ApproxConfig(rank=rank),
                                               k_prime=min(256, model.vocab_size))
  ff = model.hire_ffn or HiReFfnConfig(approx=approx.ApproxConfig(rank=rank))
  shared = dataclasses.replace(ff, dynamic_overlap=True)
  table = {"dense": (None, None), "hire_softmax": (sm, None), "hire_ffn": (None, ff),
           "hire": (sm, ff), "hire_ffn_overlap": (None, shared), "hire_overlap": (sm, shared)}
  unknown = [v for v in variants if v not in table]
  if unknown:
    raise errors.UserError(f"unknown variant(s) {unknown}; choose from {list(table)}")
  return {v: dataclasses.replace(model, hire_softmax=table[v][0], hire_ffn=table[v][1])
          for v in variants}


def _subset(params, like):
  """The entries of `params` that the variant's abstract params `like` has (arrays shared)."""
  if isinstance(like, dict):
    return {k: _subset(params[k], v) for k, v in like.items()}
  return params


def _best_seconds(f, x, repeats: int) -> float:
  f(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - t)
  return min(times)


def memory_bandwidth_gbs(nbytes: int = 512 << 20, repeats: int = 5) -> dict:
  """The device's memory bandwidth, two ways, on a buffer larger than any cache: `copy_gbs`
  (read + write of `nbytes`, an elementwise op) and `read_gbs` (a reduction, read only, like
  reading weights). `gbs` is the larger: the number achieved bandwidth is compared with."""
  x = jnp.ones((nbytes // 4,), jnp.float32)
  copy = 2 * nbytes / _best_seconds(jax.jit(lambda a: a * 1.0001), x, repeats) / 1e9
  x2 = x.reshape(-1, 1024)
  read = nbytes / _best_seconds(jax.jit(lambda a: jnp.sum(a, axis=0)), x2, repeats) / 1e9
  return {"copy_gbs": copy, "read_gbs": read, "gbs": max(copy, read)}


def bench_latency(*, model_dir: str, model: ModelConfig, mesh_cfg: sharding.MeshConfig,
                  batch_size: int = 1, context_len: int = 64, decode_steps: int = 32,
                  warmup_steps: int = 3, init: str = "checkpoint", seed: int = 0,
                  variants=None, batch_sizes=None, context_lens=None, repeats: int = 3,
                  topk_microbench: bool = False) -> dict:
  """Median ms per decode step for each variant x batch size x context length.

  `variants` defaults to the configured variant alone (with a checkpoint) or all four (random
  init). init="random" needs no checkpoint: latency does not depend on the weights' values.
  `topk_microbench` also times the candidate-selection operators (exact, two-stage,
  approx_max_k, and DA-TOP-k vs gather-then-top-k over the mesh's model axis) and adds them
  under "topk_microbench". Writes MODEL_DIR/bench/latency.json and latency.png."""
  if init not in ("checkpoint", "random"):
    raise errors.UserError(f"INIT={init!r}; use \"checkpoint\" or \"random\"")
  batch_sizes = list(batch_sizes or [batch_size])
  context_lens = list(context_lens or [context_len])
  if variants is None:
    variants = list(VARIANTS) if init == "random" else list(dict.fromkeys(
        ["dense", _own_variant(model)]))
    if max(batch_sizes) > 1:
      variants += [v for v in OVERLAP_VARIANTS if LAYERS[v] <= _union(variants)]
  for ctx in context_lens:
    if ctx + warmup_steps + decode_steps > model.max_len:
      raise errors.UserError(
          f"context {ctx} + {warmup_steps} warm-up + {decode_steps} decode steps exceeds the "
          f"model's max_len={model.max_len}; lower CONTEXT_LEN or DECODE_STEPS")
  mesh = sharding.make_mesh(mesh_cfg)
  cfgs = variant_configs(model, variants)
  step = None
  if init == "random":  # one set of weights with every approximator; variants take subsets
    full_cfg = variant_configs(model, ["hire"])["hire"]
    _, full_params = state.init_params(full_cfg, seed, mesh)
  else:
    own = LAYERS[_own_variant(model)]  # the run's trained HiRE layers (hire: all variants)
    missing = [v for v in variants if not LAYERS.get(v, set()) <= own]
    if missing:
      raise errors.UserError(f"variants {missing} have no trained approximators in {model_dir}; "
                             "use INIT=random to time every variant")
    step, _, full_params = checkpoint.restore_params(model_dir, model, mesh)
  runners = {}
  for v, cfg in cfgs.items():
    graphdef, abstract, _ = state.abstract_model(cfg)
    params = _subset(full_params, abstract)
    runners[v] = (cfg, params, *decode.prefill_and_step(graphdef, hire=v != "dense"))

  measured = memory_bandwidth_gbs()
  bandwidth = measured["gbs"]
  rng = np.random.default_rng(seed)
  cases = []
  total = len(batch_sizes) * len(context_lens) * (repeats + 1) * len(variants)
  progress, done = reporting.Progress(0, total), 0
  for b in batch_sizes:
    for ctx in context_lens:
      prompt = jnp.asarray(rng.integers(3, model.vocab_size, (b, ctx)), jnp.int32)
      times = {v: [] for v in variants}
      prefill = {v: [] for v in variants}
      for _ in range(repeats + 1):  # the first round compiles the prefill; its times are dropped
        for v in variants:  # interleaved: drift hits every variant alike
          p_ms, step_ms = latency.time_decode(runners[v], prompt, warmup_steps, decode_steps)
          times[v] += step_ms
          prefill[v].append(p_ms)
          done += 1
          reporting.say(progress.line(done, f"batch {b} context {ctx} {v}"))
      dense_ms = statistics.median(times["dense"]) if "dense" in times else None
      for v in variants:
        cfg = runners[v][0]
        ms = statistics.median(times[v])
        nbytes = cost.weight_bytes_per_step(cfg, b)
        prefill_ms = statistics.median(prefill[v][1:])
        case = {"variant": v, "batch": b, "context": ctx, "ms_per_token": ms,
                "prefill_ms": prefill_ms, "prefill_tokens_per_s": b * ctx * 1e3 / prefill_ms,
                "ms_p10": float(np.percentile(times[v], 10)),
                "ms_p90": float(np.percentile(times[v], 90)),
                "tokens_per_s": b * 1e3 / ms, "weight_bytes_per_step": nbytes,
                "achieved_gbs": nbytes / ms / 1e6, "bandwidth_fraction": nbytes / ms / 1e6 /
                bandwidth}
        if dense_ms is not None:
          dense_bytes = cost.weight_bytes_per_step(runners["dense"][0], b)
          case["speedup"] = dense_ms / ms
          case["roofline_speedup"] = dense_bytes / nbytes
          # The aim's measure: speedup / roofline speedup. Stricter, the fraction of the possible
          # gain, (speedup - 1) / (roofline - 1); undefined when the bytes barely change.
          case["roofline_fraction"] = case["speedup"] / case["roofline_speedup"]
          gain = dense_bytes / nbytes - 1
          case["roofline_gain_fraction"] = (dense_ms / ms - 1) / gain if gain > 0.05 else None
        cases.append(case)
  result = {"checkpoint_step": step, "init": init, "params": model.num_params(),
            "param_dtype": model.param_dtype, "decode_steps": decode_steps,
            "warmup_steps": warmup_steps, "repeats": repeats,
            "copy_bandwidth_gbs": measured["copy_gbs"], "read_bandwidth_gbs": measured["read_gbs"],
            "bandwidth_gbs": bandwidth,
            "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
            "host": platform.node(), "cases": cases,
            # first-cut keys, kept for scripts that read them: the first case
            "ms_per_token": cases[0]["ms_per_token"], "batch_size": cases[0]["batch"],
            "context_len": cases[0]["context"]}
  if topk_microbench:
    rows = topk_bench.topk_microbench(mesh=mesh)
    result["topk_microbench"] = rows
    reporting.say(topk_bench.format_table(rows))
  out = pathlib.Path(model_dir) / "bench" / "latency.json"
  if reporting.is_chief():
    reporting.write_json(out, result)
    _plot(cases, out.with_suffix(".png"))
  reporting.say(format_table(result))
  reporting.say(f"Wrote {out}")
  return result


def _union(variants) -> set:
  return set().union(*(LAYERS[v] for v in variants))


def _own_variant(model: ModelConfig) -> str:
  return {(False, False): "dense", (True, False): "hire_softmax", (False, True): "hire_ffn",
          (True, True): "hire"}[(model.hire_softmax is not None, model.hire_ffn is not None)]


def format_table(result: dict) -> str:
  head = (f"{'variant':<17}{'batch':>6}{'ctx':>6}{'ms/step':>9}{'tok/s':>9}{'MB/step':>9}"
          f"{'GB/s':>7}{'%bw':>6}{'speedup':>8}{'roofline':>9}{'%roof':>7}{'%gain':>7}"
          f"{'prefill ms':>11}")
  lines = [f"Decode latency on {result['device']} (memory bandwidth "
           f"{result['bandwidth_gbs']:.1f} GB/s, {result['params'] / 1e6:.1f}M params, "
           f"{result['param_dtype']})", head, "-" * len(head)]
  for c in result["cases"]:
    sp = c.get("speedup", float("nan"))
    rf = c.get("roofline_speedup", float("nan"))
    fr = c.get("roofline_fraction", float("nan"))
    fg = c.get("roofline_gain_fraction")
    fg = float("nan") if fg is None else fg
    lines.append(f"{c['variant']:<17}{c['batch']:>6}{c['context']:>6}{c['ms_per_token']:>9.2f}"
                 f"{c['tokens_per_s']:>9.1f}{c['weight_bytes_per_step'] / 1e6:>9.1f}"
                 f"{c['achieved_gbs']:>7.1f}{100 * c['bandwidth_fraction']:>6.0f}{sp:>8.2f}"
                 f"{rf:>9.2f}{100 * fr:>7.0f}{100 * fg:>7.0f}{c.get('prefill_ms', float('nan')):>11.1f}")
  return "\n".join(lines)


def _plot(cases, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  keys = sorted({(c["batch"], c["context"]) for c in cases})
  variants = list(dict.fromkeys(c["variant"] for c in cases))
  width = 0.8 / max(len(variants), 1)
  for i, v in enumerate(variants):
    ys = [next(c["ms_per_token"] for c in cases if c["variant"] == v and
               (c["batch"], c["context"]) == k) for k in keys]
    ax.bar(np.arange(len(keys)) + i * width, ys, width, label=v)
  ax.set_xticks(np.arange(len(keys)) + width * (len(variants) - 1) / 2)
  ax.set_xticklabels([f"B={b}\nctx={c}" for b, c in keys])
  ax.set_ylabel("ms per decode step")
  ax.set_title("hire bench-latency")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
