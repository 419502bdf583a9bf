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

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli import errors, validate
from hire_cli.evals import bandwidth, latency, topk_bench
from hire_cli.lib import checkpoint, sharding, state
from hire_cli.nn import config, cost, decode, served, topk
from hire_cli.nn.config import ModelConfig
from hire_cli.report import bench_report, reporting

VARIANTS = ("dense", "hire_softmax", "hire_ffn", "hire")
# Dynamic overlap (one shared FFN candidate set per decoding batch): timed when a batch > 1.
OVERLAP_VARIANTS = ("hire_ffn_overlap", "hire_overlap")
# The HiRE layers each variant needs trained approximators for.
LAYERS = {"dense": set(), "hire_softmax": {"softmax"}, "hire_ffn": {"ffn"},
          "hire": {"softmax", "ffn"}, "hire_ffn_overlap": {"ffn"},
          "hire_overlap": {"softmax", "ffn"}}


# Approximator kinds a variant can be timed with, as `VARIANT@KIND` (e.g. "hire_ffn@q4").
APPROX_KINDS = {"lr": {"kind": "lr"}, "q4": {"kind": "q", "bits": 4},
                "q8": {"kind": "q", "bits": 8}, "lr_q": {"kind": "lr_q", "bits": 4},
                "lr_q8": {"kind": "lr_q", "bits": 8}}


def variant_configs(model: ModelConfig, variants) -> dict:
  """ModelConfig per variant: the configured HiRE layers, or ones sized to the model
  (config.default_hire_softmax / default_hire_ffn) when the run has none; `VARIANT@KIND` sets
  both layers' approximator kind."""
  out = {}
  for v in variants:
    named, _, method = v.partition(":")
    base, _, kind = named.partition("@")
    sm = model.hire_softmax or config.default_hire_softmax(model)
    ff = model.hire_ffn or config.default_hire_ffn(model)
    if kind:
      if kind not in APPROX_KINDS:
        raise errors.UserError(f"approximator kind {kind!r} in {v!r}; use one of "
                               f"{list(APPROX_KINDS)}")
      sm = dataclasses.replace(sm, approx=dataclasses.replace(sm.approx, **APPROX_KINDS[kind]))
      ff = dataclasses.replace(ff, approx=dataclasses.replace(ff.approx, **APPROX_KINDS[kind]))
    if method:
      if method not in topk.METHODS or base == "dense":
        raise errors.UserError(f"top-k method {method!r} in {v!r}; HiRE variants take "
                               f"VARIANT:METHOD with METHOD in {list(topk.METHODS)}")
      sm, ff = (dataclasses.replace(c, topk_method=method) for c in (sm, ff))
    shared = dataclasses.replace(ff, dynamic_overlap=True)
    table = {"dense": (None, None), "hire_softmax": (sm, None), "hire_ffn": (None, ff),
             "hire": (sm, ff), "hire_ffn_overlap": (None, shared), "hire_overlap": (sm, shared)}
    if base not in table or (kind and base == "dense"):
      raise errors.UserError(f"unknown variant {v!r}; choose from {list(table)}, HiRE ones "
                             f"optionally as VARIANT@KIND with KIND in {list(APPROX_KINDS)} "
                             "and/or VARIANT:METHOD (a top-k method)")
    out[v] = dataclasses.replace(model, hire_softmax=table[base][0], hire_ffn=table[base][1])
  return out


def _subset(params, like, where=""):
  """The entries of `params` that the variant's abstract params `like` has (arrays shared)."""
  if isinstance(like, dict):
    if not isinstance(params, dict) or not set(like) <= set(params):
      raise errors.UserError(f"the weights have no {where or 'params'}/{sorted(set(like))}: "
                             "this approximator kind needs its trained parameters; use "
                             "INIT=random or the run's own kind")
    return {k: _subset(params[k], v, f"{where}/{k}") for k, v in like.items()}
  return params


def bench_latency(*, model_dir: str, model: ModelConfig, mesh_cfg: sharding.MeshConfig,
                  batch_size: int = 1, context_len: int = 64, decode_steps: int = 32,
                  warmup_steps: int = 3, init: str = "checkpoint", seed: int = 0,
                  variants=None, batch_sizes=None, context_lens=None, repeats: int = 3,
                  approx_kinds=None, topk_methods=None, topk_microbench: bool = False) -> dict:
  """Median ms per decode step for each variant x batch size x context length.

  `variants` defaults to the configured variant alone (with a checkpoint) or all four (random
  init). init="random" needs no checkpoint: latency does not depend on the weights' values.
  `topk_microbench` also times the candidate-selection operators (exact, two-stage,
  approx_max_k, and DA-TOP-k vs gather-then-top-k over the mesh's model axis) and adds them
  under "topk_microbench". `approx_kinds` (e.g. ["lr", "q4", "lr_q"]) times every HiRE variant
  once per approximator kind (`VARIANT@KIND`); `topk_methods` (e.g. ["gather_then_top_k",
  "da_top_k"] on a mesh with MESH_MODEL > 1, nn/mesh_serve.py) once per candidate-selection
  method (`VARIANT:METHOD`). Writes MODEL_DIR/bench/latency.json and
  latency.png."""
  validate.arguments(bench_latency, locals())
  for name, values in (("BENCH_BATCHES", batch_sizes), ("CONTEXT_LENS", context_lens)):
    if values is not None and (not isinstance(values, (list, tuple)) or not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
      raise errors.UserError(f"{name}={values!r} must be a non-empty list of positive integers "
                             "(or None)")
  if init not in ("checkpoint", "random"):
    raise errors.UserError(f"INIT={init!r}; use \"checkpoint\" or \"random\"")
  batch_sizes = list(batch_sizes or [batch_size])
  context_lens = list(context_lens or [context_len])
  variants = list(variants) if variants is not None else _default_variants(
      model, init, max(batch_sizes))
  if approx_kinds:
    variants = [v if v == "dense" else f"{v}@{k}" for v in variants
                for k in (approx_kinds if v != "dense" else [None])]
  if topk_methods:
    variants = [v if v == "dense" else f"{v}:{m}" for v in variants
                for m in (topk_methods if v != "dense" else [None])]
  for ctx in context_lens:
    if ctx + warmup_steps + decode_steps > model.max_len:
      raise errors.UserError(
          f"context {ctx} + {warmup_steps} warm-up + {decode_steps} decode steps exceeds the "
          f"model's max_len={model.max_len}; lower CONTEXT_LEN or DECODE_STEPS")
  mesh = sharding.make_mesh(mesh_cfg)
  step, runners = _runners(model, model_dir, variants, init, seed, mesh)
  measured = bandwidth.memory_bandwidth_gbs()
  rng = np.random.default_rng(seed)
  cases = []
  progress = reporting.Progress(0, len(batch_sizes) * len(context_lens) * (repeats + 1) *
                                len(variants))
  for b in batch_sizes:
    for ctx in context_lens:
      prompt = jnp.asarray(rng.integers(3, model.vocab_size, (b, ctx)), jnp.int32)
      timed = latency.time_interleaved(
          runners, prompt, warmup_steps, decode_steps, repeats,
          lambda v: reporting.say(progress.step(f"batch {b} context {ctx} {v}")))
      cfgs = {v: r[0] for v, r in runners.items()}
      cases += [_case(v, b, ctx, timed, cfgs, measured["gbs"]) for v in variants]
  result = {"checkpoint_step": step, "init": init, "params": model.num_params(),
            "param_dtype": model.param_dtype, "decode_steps": decode_steps,
            "warmup_steps": warmup_steps, "repeats": repeats,
            "copy_bandwidth_gbs": measured["copy_gbs"], "read_bandwidth_gbs": measured["read_gbs"],
            "bandwidth_gbs": measured["gbs"],
            "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
            "host": platform.node(), "cases": cases}
  if topk_microbench:
    rows = topk_bench.topk_microbench(mesh=mesh)
    result["topk_microbench"] = rows
    reporting.say(topk_bench.format_table(rows))
  out = pathlib.Path(model_dir) / "bench" / "latency.json"
  if reporting.is_chief():
    reporting.write_json(out, result)
    bench_report.plot(cases, out.with_suffix(".png"))
  reporting.say(bench_report.format_table(result))
  for line in weak_baseline(cases):
    reporting.say(line)
  reporting.say(f"Wrote {out}")
  return result


# A dense decode that streams its weights at under this fraction of the measured bandwidth is a
# weak baseline: any speedup quoted against it overstates HiRE (a tied 262k head once ran at 16%).
WEAK_DENSE_FRACTION = 0.5


def weak_baseline(cases: list[dict]) -> list[str]:
  """One warning line per dense case below WEAK_DENSE_FRACTION of the measured bandwidth."""
  return [f"WARNING: dense at batch {c['batch']} context {c['context']} streams its weights at "
          f"{100 * c['bandwidth_fraction']:.0f}% of the measured bandwidth (under "
          f"{100 * WEAK_DENSE_FRACTION:.0f}%): a weak baseline, so speedups against it overstate "
          "HiRE; profile the dense step (docs/benchmarks.md) before quoting them"
          for c in cases if c["variant"] == "dense"
          and c["bandwidth_fraction"] < WEAK_DENSE_FRACTION]


def _default_variants(model: ModelConfig, init: str, max_batch: int) -> list[str]:
  """All four with random weights; else dense and the run's own variant; the dynamic-overlap
  variants too when a batch > 1 decodes together."""
  variants = list(VARIANTS) if init == "random" else list(dict.fromkeys(
      ["dense", _own_variant(model)]))
  if max_batch > 1:
    variants += [v for v in OVERLAP_VARIANTS if LAYERS[v] <= _union(variants)]
  return variants


def _runners(model: ModelConfig, model_dir: str, variants, init: str, seed: int, mesh):
  """(checkpoint step or None, {variant: (cfg, params, prefill, step)}): one set of weights
  shared by every variant (each takes the subset its layers need)."""
  cfgs = variant_configs(model, variants)
  step = None
  if init == "random":  # one set of weights with every approximator; variants take subsets
    # Low-rank factors serve lr and lr_q; q derives its tensors from W.
    full_cfg = variant_configs(model, ["hire@lr"])["hire@lr"]
    full_params = _random_params(full_cfg, seed, mesh)
  else:
    own = LAYERS[_own_variant(model)]  # the run's trained HiRE layers (hire: all variants)
    missing = [v for v in variants
               if not LAYERS.get(v.partition(":")[0].partition("@")[0], set()) <= own]
    if missing and own:
      raise errors.UserError(f"variants {missing} have no trained approximators in {model_dir}; "
                             "use INIT=random to time every variant")
    step, _, full_params = checkpoint.restore_params(model_dir, model, mesh)
  runners = {}
  for v, cfg in cfgs.items():
    graphdef, abstract, axes = state.abstract_model(cfg)
    if init != "random" and not LAYERS[_own_variant(model)] and cfg.has_hire:
      # A dense run (an imported model): the approximators start post-hoc from its weights
      # (LR: the truncated SVD of W; Q: W quantized), untrained; speed does not depend on it.
      params = state.post_hoc_params(graphdef, _zeros_like(abstract), full_params,
                                     sharding.param_shardings(abstract, axes, mesh))
    else:
      params = _subset(full_params, abstract)
    graphdef, params = served.prepare(graphdef, params, mesh)  # the tensors a server keeps
    runners[v] = (cfg, params, *decode.prefill_and_step(graphdef, served=v != "dense"))

  return step, runners


def _zeros_like(abstract):
  return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)


def _random_params(cfg: ModelConfig, seed: int, mesh):
  """Random weights in their sharded layout, one array at a time: latency does not depend on
  the values, and one program making all of them held ~3x the model at once (a 1b model with
  a 256k vocabulary did not fit a 24 GiB host that way)."""
  _, abstract, axes = state.abstract_model(cfg)
  shardings = sharding.param_shardings(abstract, axes, mesh)
  leaves, tree = jax.tree.flatten(abstract)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = []
  for key, leaf, where in zip(keys, leaves, jax.tree.leaves(shardings)):
    make = jax.jit(lambda k, shape=leaf.shape, dtype=leaf.dtype: (
        jax.random.normal(k, shape, dtype) * shape[-1]**-0.5), out_shardings=where)
    out.append(make(key))
  return jax.tree.unflatten(tree, out)


def _union(variants) -> set:
  return set().union(*(LAYERS[v.partition(":")[0].partition("@")[0]] for v in variants))


def _own_variant(model: ModelConfig) -> str:
  return {(False, False): "dense", (True, False): "hire_softmax", (False, True): "hire_ffn",
          (True, True): "hire"}[(model.hire_softmax is not None, model.hire_ffn is not None)]


def _case(v: str, b: int, ctx: int, timed: dict, cfgs: dict, bandwidth_gbs: float) -> dict:
  """One row of latency.json: the variant's median step time and what it means against the
  bytes it reads (cost model) and against dense."""
  step_ms, prefill_ms = timed[v]
  ms = statistics.median(step_ms)
  nbytes = cost.weight_bytes_per_step(cfgs[v], b)
  prefill = statistics.median(prefill_ms)
  case = {"variant": v, "batch": b, "context": ctx, "ms_per_token": ms, "prefill_ms": prefill,
          "prefill_tokens_per_s": b * ctx * 1e3 / prefill,
          "ms_p10": float(np.percentile(step_ms, 10)),
          "ms_p90": float(np.percentile(step_ms, 90)),
          "tokens_per_s": b * 1e3 / ms, "weight_bytes_per_step": nbytes,
          "achieved_gbs": nbytes / ms / 1e6, "bandwidth_fraction": nbytes / ms / 1e6 /
          bandwidth_gbs}
  if "dense" in timed:
    dense_ms = statistics.median(timed["dense"][0])
    dense_bytes = cost.weight_bytes_per_step(cfgs["dense"], b)
    case["speedup"] = dense_ms / ms
    case["roofline_speedup"] = dense_bytes / nbytes
    # The aim's measure: speedup / roofline speedup. Stricter, the fraction of the possible
    # gain, (speedup - 1) / (roofline - 1); undefined when the bytes barely change.
    case["roofline_fraction"] = case["speedup"] / case["roofline_speedup"]
    gain = dense_bytes / nbytes - 1
    case["roofline_gain_fraction"] = (dense_ms / ms - 1) / gain if gain > 0.05 else None
  return case
