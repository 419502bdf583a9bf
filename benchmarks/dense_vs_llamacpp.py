"""Is hire's dense decode a sound baseline? hire against llama.cpp on the same float32 weights,
same machine, batch 1, one run (alternating, so drift hits both alike).

  python benchmarks/dense_vs_llamacpp.py --model_dir=runs/gemma3 --twin=gemma-3-270m-f32.gguf \
      [--rounds=2] [--threads=2] [--out=docs/dense_vs_llamacpp.json]

- hire: `hire bench-latency --gin.MODEL_DIR=DIR` (dense only, batch 1, CONTEXT_LEN tokens of
  prompt then DECODE_STEPS timed steps, the median), which also reports %bw: the weights' bytes
  per step over the step time against the measured memory bandwidth.
- llama.cpp: `benchmarks/llamacpp_reference.py:time_decode` in the reference venv (`make
  reference`; HIRE_REF_PYTHON overrides its python) on the float32 twin (`benchmarks/f32_twin.py`),
  the same prompt length, the median of 64 single-token evals, `--threads` threads.
- with `--hire_variants=hire_softmax` on a post-hoc HiRE folder: its HiRE-Softmax decode too, in
  the same `hire bench-latency` run, so HiRE, hire's dense and llama.cpp's dense alternate;
- tied against untied: the same shape with random weights, the head tied and untied
  (`--gin.INIT=random`), to show that a tied head costs no more.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
REF_PY = os.environ.get("HIRE_REF_PYTHON", str(REPO / ".venv-ref" / "bin" / "python"))
HIRE = str(pathlib.Path(sys.executable).parent / "hire")


def hire_dense(model_dir: str, context: int, steps: int, extra=(), variants=("dense",)) -> dict:
  """`hire bench-latency` of `variants` (batch 1): dense's numbers, and "VARIANT_ms" of each
  other variant timed in the same run."""
  cmd = [HIRE, "bench-latency", f"--gin.MODEL_DIR={model_dir}",
         f"--gin.BENCH_VARIANTS={list(variants)}", f"--gin.CONTEXT_LEN={context}",
         f"--gin.DECODE_STEPS={steps}", *extra]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  out = json.loads((pathlib.Path(model_dir) / "bench" / "latency.json").read_text())
  case = next(c for c in out["cases"] if c["variant"] == "dense")
  return {"ms_per_token": case["ms_per_token"], "bandwidth_fraction": case["bandwidth_fraction"],
          "weight_bytes_per_step": case["weight_bytes_per_step"],
          "bandwidth_gbs": out["bandwidth_gbs"],
          **{f"{c['variant']}_ms": c["ms_per_token"] for c in out["cases"]
             if c["variant"] != "dense"}}


def llamacpp(twin: str, context: int, threads: int) -> dict:
  snippet = ("import json, sys; sys.path.insert(0, 'benchmarks'); import llamacpp_reference as r; "
             f"print(json.dumps(r.time_decode({twin!r}, list(range(10, {10 + context})), "
             f"{threads})))")
  out = subprocess.run([REF_PY, "-c", snippet], check=True, capture_output=True, text=True,
                       cwd=REPO)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", required=True, help="an imported run folder (hire import)")
  p.add_argument("--twin", required=True, help="the float32 twin of the GGUF it came from")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--context", type=int, default=64)
  p.add_argument("--steps", type=int, default=32)
  p.add_argument("--shape_gin", default="", help="e.g. configs/experiments/gemma3_270m_dense.gin:"
                 " also time that shape with random weights, tied and untied")
  p.add_argument("--hire_variants", default="",
                 help="e.g. hire_softmax: also time these HiRE variants of MODEL_DIR (a post-hoc "
                 "HiRE folder) in each round, against llama.cpp's dense decode")
  p.add_argument("--out", default="")
  a = p.parse_args()
  variants = ["dense", *filter(None, a.hire_variants.split(","))]
  hire_ms, ref_ms, bw, variant_ms = [], [], [], {}
  for r in range(a.rounds):
    ref = llamacpp(a.twin, a.context, a.threads)
    ref_ms.append(ref["decode_ms_per_token_median"])
    h = hire_dense(a.model_dir, a.context, a.steps, variants=variants)
    hire_ms.append(h["ms_per_token"])
    bw.append(h["bandwidth_fraction"])
    for v in variants[1:]:
      variant_ms.setdefault(v, []).append(h[f"{v}_ms"])
    print(f"round {r + 1}: llama.cpp {ref_ms[-1]:.1f} ms/token, hire {hire_ms[-1]:.1f} ms/token "
          f"({100 * bw[-1]:.0f}% of {h['bandwidth_gbs']:.1f} GB/s)"
          + "".join(f", {v} {variant_ms[v][-1]:.1f}" for v in variants[1:]), flush=True)
  result = {"model_dir": a.model_dir, "twin": a.twin, "threads": a.threads,
            "context": a.context, "hire_ms": hire_ms, "llamacpp_ms": ref_ms,
            "hire_bandwidth_fraction": bw, "hire_weight_bytes_per_step": h["weight_bytes_per_step"],
            "ratio_hire_over_llamacpp": statistics.median(hire_ms) / statistics.median(ref_ms),
            **{f"{v}_ms": ms for v, ms in variant_ms.items()},
            **{f"ratio_{v}_over_llamacpp": statistics.median(ms) / statistics.median(ref_ms)
               for v, ms in variant_ms.items()}}
  if a.shape_gin:
    tmp = pathlib.Path("/tmp/hire_tied_untied")
    for tied in (True, False):
      result[f"random_{'tied' if tied else 'untied'}"] = hire_dense(
          str(tmp / str(tied)), a.context, a.steps,
          (f"--gin_file={a.shape_gin}", "--gin.INIT=random",
           f"--gin.ModelConfig.tie_embeddings={tied}"))
  print(json.dumps(result, indent=1))
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
