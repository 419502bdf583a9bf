"""Decode ms/token of the Gemma 3 270M shape on one accelerator: dense against HiRE-Softmax (LR,
Q8, Q4 approximators), bfloat16, random weights, batch 1 and 8, timed interleaved.

  python benchmarks/device_decode.py [--out=DIR] [--steps=64] [--repeats=3] [--context=128]

For a lent GPU machine (docs/benchmarks.md): it has JAX, flax and numpy but no gin, TensorFlow
or seqio, and a real model's file cannot travel there, so the shape is read from
configs/models/gemma3_270m.gin by a small parser and the weights are random (decode speed does
not depend on them). Only `hire_cli.nn` and `hire_cli.evals.{latency,bandwidth}` are imported:
the same decode step (`decode.prefill_and_step`, the served path of `nn/served.py`) that
`hire bench-latency` times. Writes OUT/device_decode.{json,md}; ends within ~5 min on an H100.
"""

import argparse
import ast
import dataclasses
import json
import os
import pathlib
import re
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from hire_cli.evals import bandwidth, latency  # noqa: E402
from hire_cli.nn import config, cost, decode, served  # noqa: E402
from hire_cli.nn.config import ModelConfig  # noqa: E402
from hire_cli.nn.model import Transformer  # noqa: E402

KINDS = {"lr": {"kind": "lr"}, "q8": {"kind": "q", "bits": 8}, "q4": {"kind": "q", "bits": 4}}


def shape(path: pathlib.Path, dtype: str) -> ModelConfig:
  """ModelConfig from the `ModelConfig.X = literal` lines of a model gin file."""
  kw = {}
  for line in path.read_text().splitlines():
    m = re.match(r"ModelConfig\.(\w+)\s*=\s*(.+?)\s*(#.*)?$", line)
    if m:
      kw[m.group(1)] = ast.literal_eval(m.group(2))
  kw.update(dtype=dtype, param_dtype=dtype)
  return ModelConfig(**kw)


def variants(model: ModelConfig) -> dict:
  out = {"dense": model}
  base = config.default_hire_softmax(model)
  for name, spec in KINDS.items():
    hc = dataclasses.replace(base, approx=dataclasses.replace(base.approx, **spec))
    out[f"hire_softmax@{name}"] = dataclasses.replace(model, hire_softmax=hc)
  return out


def runner(cfg: ModelConfig, seed: int):
  """(cfg, params, prefill, step): random weights (the same dense ones for every variant: the
  approximator is drawn after them), in serving form."""
  graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)))
  graphdef, params = served.prepare(graphdef, nnx.to_pure_dict(state))
  return (cfg, params, *decode.prefill_and_step(graphdef, served=cfg.has_hire))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_gin", default=str(REPO / "configs/models/gemma3_270m.gin"))
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--batches", default="1,8")
  p.add_argument("--context", type=int, default=128)
  p.add_argument("--steps", type=int, default=64)
  p.add_argument("--warmup", type=int, default=4)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.environ.get("OUT", "."))
  a = p.parse_args()
  t0 = time.time()
  model = shape(pathlib.Path(a.model_gin), a.dtype)
  cfgs = variants(model)
  runners = {v: runner(c, 0) for v, c in cfgs.items()}
  bw = bandwidth.memory_bandwidth_gbs(1 << 30)
  rows = []
  for b in (int(x) for x in a.batches.split(",")):
    prompt = jax.random.randint(jax.random.key(1), (b, a.context), 3, model.vocab_size)
    timed = latency.time_interleaved(runners, prompt, a.warmup, a.steps, a.repeats)
    dense_ms = statistics.median(timed["dense"][0])
    dense_bytes = cost.weight_bytes_per_step(cfgs["dense"], b)
    for v, (step_ms, _) in timed.items():
      ms, nbytes = statistics.median(step_ms), cost.weight_bytes_per_step(cfgs[v], b)
      rows.append({"variant": v, "batch": b, "ms_per_token": ms, "speedup": dense_ms / ms,
                   "roofline_speedup": dense_bytes / nbytes, "weight_bytes_per_step": nbytes,
                   "bandwidth_fraction": nbytes / ms / 1e6 / bw["gbs"]})
      print(json.dumps(rows[-1]), flush=True)
  result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "jax": jax.__version__, "dtype": a.dtype, "context": a.context, "steps": a.steps,
            "repeats": a.repeats, "bandwidth_gbs": bw, "rows": rows,
            "seconds": time.time() - t0, "model": dataclasses.asdict(model)}
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "device_decode.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
  lines = [f"{result['device']} ({result['backend']}), {a.dtype}, context {a.context}, "
           f"bandwidth {bw['gbs']:.0f} GB/s", "",
           "| variant | batch | ms/token | speedup | roofline | %bw |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
  lines += [f"| {r['variant']} | {r['batch']} | {r['ms_per_token']:.3f} | {r['speedup']:.2f}x | "
            f"{r['roofline_speedup']:.2f}x | {100 * r['bandwidth_fraction']:.0f}% |" for r in rows]
  (out / "device_decode.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
