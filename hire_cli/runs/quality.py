"""`make quality`: dense vs HiRE-Softmax vs HiRE-FFN vs HiRE trained and evaluated side by side.

Trains the four variants of one model size on the shipped corpus with the same seed, steps and
data order (`hire train`, resumable: a finished run is not retrained), evaluates each (`hire
eval`), compares them (`hire compare`), times all four on the HiRE run's weights (`hire
bench-latency`) and writes a markdown results page with the training curves.

  python -m hire_cli.runs.quality                  # small, 300 steps (~90 min on 2 CPU cores)
  python -m hire_cli.runs.quality --quick          # tiny, 60 steps (~30 min today; aim ~10)
"""

import datetime
import json
import os
import pathlib
import platform
import time

from absl import app, flags

from hire_cli.report import eval_report, plots, reporting
from hire_cli.report import phases as phases_lib

VARIANTS = ("dense", "hire_softmax", "hire_ffn", "hire")

flags.DEFINE_bool("quick", False, "tiny model, few steps: a quick check of the pipeline")
flags.DEFINE_string("size", None, "model size (configs/experiments/<size>_<variant>.gin); "
                    "default small (tiny with --quick)")
flags.DEFINE_integer("steps", None, "training steps per variant (default 300; 60 with --quick)")
flags.DEFINE_integer("downstream_limit", None, "questions per downstream task (default 60; 10 "
                     "with --quick)")
flags.DEFINE_string("root", None, "where the runs go (default runs/quality[_quick])")
flags.DEFINE_string("out", None, "the results page (default docs/results[_quick].md)")
FLAGS = flags.FLAGS


# Relative phase lengths for the ETA before a phase of the kind has run (QUICK=1, 2026-11-23:
# trainings 68-518 s, the evaluations about 260 s).
PHASE_WEIGHTS = {"train": 1.0, "eval": 0.8, "compare": 0.02, "bench": 0.5}


def main(argv) -> None:
  del argv
  quick = FLAGS.quick
  size = FLAGS.size or ("tiny" if quick else "small")
  steps = FLAGS.steps or (60 if quick else 300)
  limit = FLAGS.downstream_limit or (10 if quick else 60)
  root = pathlib.Path(FLAGS.root or ("runs/quality_quick" if quick else "runs/quality"))
  out = pathlib.Path(FLAGS.out or ("docs/results_quick.md" if quick else "docs/results.md"))
  t0 = time.perf_counter()
  common = [f"--gin.TRAIN_STEPS={steps}", f"--gin.WARMUP_STEPS={max(steps // 10, 1)}",
            f"--gin.CHECKPOINT_EVERY={max(steps // 3, 1)}", f"--gin.EVAL_EVERY={max(steps // 3, 1)}"]
  phases = phases_lib.Phases("quality", ["train"] * len(VARIANTS) + ["eval"] * len(VARIANTS) +
                             ["compare", "bench"], retry="make quality",
                             weights=PHASE_WEIGHTS)
  for v in VARIANTS:
    phases.run("train", f"--gin_file=configs/experiments/{size}_{v}.gin",
               f"--gin.MODEL_DIR={root / v}", *common)
  for v in VARIANTS:
    if _evaluated(root / v, steps):
      phases.skip(f"{root / v} already evaluated at step {steps}; delete its eval/ to redo it")
      continue
    phases.run("eval", f"--gin_file=configs/experiments/{size}_{v}.gin",
               f"--gin.MODEL_DIR={root / v}", f"--gin.DOWNSTREAM_LIMIT={limit}",
               *(QUICK_EVAL if quick else ()))
  phases.run("compare", *[str(root / v) for v in VARIANTS], f"--data={EVAL_DATA}",
             f"--out={root / 'comparison'}")
  phases.run("bench-latency", f"--gin_file=configs/experiments/{size}_hire.gin",
             f"--gin.MODEL_DIR={root / 'hire'}", f"--gin.BENCH_VARIANTS={list(VARIANTS)}")
  command = "make quality" + (" QUICK=1" if quick else "")
  write_results(root, out, size=size, steps=steps, limit=limit, command=command,
                minutes=(time.perf_counter() - t0) / 60)
  phases_lib.say(f"Wrote {out}")


# A quick check needs the softmax recall curve at three k', from one batch.
QUICK_EVAL = ("--gin.evaluate.recall_k_primes=[32,128,512]", "--gin.evaluate.recall_batches=1")


# The quality runs train and evaluate on the shipped corpus: `hire eval` writes eval/<task>/.
EVAL_DATA = "hire_corpus_lm"


def _evaluated(run: pathlib.Path, steps: int) -> bool:
  path = run / "eval" / EVAL_DATA / "metrics.json"
  if not path.exists():
    return False
  m = json.loads(path.read_text())
  return m.get("step") == steps and "downstream/mean/accuracy" in m


def _metrics(root: pathlib.Path) -> dict:
  return {v: json.loads((root / v / "eval" / EVAL_DATA / "metrics.json").read_text())
          for v in VARIANTS}


def results_rows(metrics: dict, latency: dict) -> list[tuple[str, list]]:
  """(label, [value per variant]) rows of the results table."""
  def col(key, v):
    return metrics[v].get(key)

  rows = [("validation loss (exact model)", [col("loss", v) for v in VARIANTS]),
          ("served loss (HiRE inference)", [col("served_loss", v) for v in VARIANTS]),
          ("perplexity (exact)", [col("perplexity", v) for v in VARIANTS])]
  tasks = sorted({k.split("/")[1] for m in metrics.values() for k in m
                  if k.startswith("downstream/") and k.split("/")[1] != "mean"})
  for t in tasks + ["mean"]:
    rows.append((f"{t} accuracy % (exact)", [col(f"downstream/{t}/accuracy", v)
                                             for v in VARIANTS]))
    rows.append((f"{t} accuracy % (HiRE)", [col(f"downstream/{t}/accuracy_hire", v)
                                            for v in VARIANTS]))
  for k in (1, 8, 32):
    rows.append((f"softmax recall@{k}", [col(f"recall/softmax@{k}", v) for v in VARIANTS]))
  rows.append(("mean FFN group recall", [col("recall/ffn@k", v) for v in VARIANTS]))
  rows.append(("top-1 agreement (HiRE vs exact)", [col("top1_agreement", v) for v in VARIANTS]))
  cases = {c["variant"]: c for c in latency.get("cases", []) if c["batch"] == 1}
  rows.append(("decode ms/token, batch 1", [cases.get(v, {}).get("ms_per_token")
                                            for v in VARIANTS]))
  rows.append(("speedup vs dense", [cases.get(v, {}).get("speedup") for v in VARIANTS]))
  rows.append(("roofline speedup (bytes)", [cases.get(v, {}).get("roofline_speedup")
                                            for v in VARIANTS]))
  return rows


def aims(metrics: dict) -> list[str]:
  """The issue's aims, each with the measured value and met / missed by how much."""
  d, h = metrics["dense"], metrics["hire"]
  lines = []

  def check(name, ok, detail):
    lines.append(f"- {name}: {detail} -> {'met' if ok else 'MISSED'}")

  for label, key in (("exact", "loss"), ("served", "served_loss")):
    if key in h:
      rel = (h[key] - d["loss"]) / d["loss"]
      check(f"HiRE {label} validation loss within 1% of dense", rel <= 0.01,
            f"{h[key]:.4f} vs {d['loss']:.4f} ({100 * rel:+.2f}%)")
  for label, key in (("exact", "accuracy"), ("HiRE", "accuracy_hire")):
    if f"downstream/mean/{key}" in h:
      gap = d["downstream/mean/accuracy"] - h[f"downstream/mean/{key}"]
      check(f"HiRE downstream mean accuracy ({label} inference) within 1 point of dense",
            gap <= 1.0, f"{h[f'downstream/mean/{key}']:.2f} vs "
            f"{d['downstream/mean/accuracy']:.2f} ({-gap:+.2f} points)")
  if "recall/softmax@32" in h:
    r = h["recall/softmax@32"]
    check("softmax recall@32 >= 0.99", r >= 0.99, f"{r:.4f}")
  if "recall/ffn@k" in h:
    r = h["recall/ffn@k"]
    check("mean FFN recall >= 0.95", r >= 0.95, f"{r:.4f}")
  return lines


def write_results(root: pathlib.Path, out: pathlib.Path, *, size: str, steps: int, limit: int,
                  command: str, minutes: float) -> None:
  metrics = _metrics(root)
  latency_path = root / "hire" / "bench" / "latency.json"
  latency = json.loads(latency_path.read_text()) if latency_path.exists() else {}
  out.parent.mkdir(parents=True, exist_ok=True)
  curves = out.with_name(out.stem + "_curves.png")
  plots.training_curves({v: reporting.read_jsonl(root / v / "history.jsonl") for v in VARIANTS},
                        curves)
  lines = [
      f"# Quality: dense vs HiRE-Softmax vs HiRE-FFN vs HiRE ({size})", "",
      f"Command: `{command}` ({minutes:.0f} min). Date: {datetime.date.today().isoformat()}. "
      f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
      f"{latency.get('device', 'unknown device')}.",
      f"Each variant: `configs/experiments/{size}_<variant>.gin`, {steps} steps, same seed and "
      f"data order, checkpoint at step {metrics['dense'].get('step')}. Downstream: first "
      f"{limit} questions of each shipped task, zero-shot log-likelihood. Latency: `hire "
      "bench-latency` of all four on the HiRE run's weights.", "",
      "| metric | " + " | ".join(VARIANTS) + " |", "| --- |" + " ---: |" * len(VARIANTS)]
  for label, values in results_rows(metrics, latency):
    lines.append(f"| {label} | " + " | ".join(eval_report.fmt(x) for x in values) + " |")
  lines += ["", "Served loss is what HiRE sampling serves: the softmax over the k' candidates "
            "with a 1e-6 uniform floor, so with HiRE-Softmax it is dominated by the targets "
            "outside the candidates (it is not a quality metric; the loss aim uses the exact "
            "loss). Downstream HiRE scoring gathers the target's row and normalises over the "
            "candidates plus the target."]
  lines += ["", "## Aims", ""] + aims(metrics)
  comparison = root / "comparison.md"
  extra = ""
  if comparison.exists():  # the runs folder is not in git: keep a copy next to the page
    copy = out.with_name(out.stem + "_comparison.md")
    copy.write_text(comparison.read_text())
    extra = f"; every metric side by side: [{copy.name}]({copy.name})"
  lines += ["", f"![training curves]({curves.name})", "",
            f"Per-run reports: `{root}/<variant>/eval/{EVAL_DATA}/report.md`{extra}."]
  out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
