"""`make quality`: dense vs HiRE-Softmax vs HiRE-FFN vs HiRE trained and evaluated side by side.

Trains the variants of one model size on the shipped corpus with the same seed, steps and data
order (`hire train`, resumable: a finished run is not retrained), with periodic evaluations
(the dense-vs-HiRE gap over training), evaluates each (`hire eval`: loss, served loss, recall,
downstream and minimal pairs with 95% intervals), compares them (`hire compare`, paired on the
same questions), measures free-running greedy agreement of HiRE with its exact model on 128
validation prompts (`hire generate --compare`), times all of them on the HiRE run's weights
(`hire bench-latency`) and writes the results page and the gap-over-training page.

  python -m hire_cli.runs.quality                  # small, 300 steps, four variants
  python -m hire_cli.runs.quality --variants=dense,hire --steps=500 --root=runs/gap
  python -m hire_cli.runs.quality --quick          # tiny, 60 steps: a check of the pipeline
"""

import json
import pathlib
import sys
import time

from absl import app, flags

from hire_cli.lib import quality_plan
from hire_cli.report import phases as phases_lib
from hire_cli.report import quality_page

flags.DEFINE_bool("quick", False, "tiny model, few steps: a quick check of the pipeline")
flags.DEFINE_string("size", None, "model size (configs/experiments/<size>_<variant>.gin); "
                    "default small (tiny with --quick)")
flags.DEFINE_integer("steps", None, "training steps per variant (default 300; 60 with --quick)")
flags.DEFINE_integer("downstream_limit", None, "questions per downstream task (default 60; 10 "
                     "with --quick)")
flags.DEFINE_integer("pairs_limit", None, "pairs per minimal-pair task (default 500; 100 with "
                     "--quick)")
flags.DEFINE_list("variants", list(quality_page.VARIANTS), "which variants (dense and hire at "
                  "least: the aims and the gap compare them)")
flags.DEFINE_string("root", None, "where the runs go (default runs/quality[_quick])")
flags.DEFINE_string("out", None, "the results page (default docs/results[_quick].md)")
flags.DEFINE_bool("pages_only", False, "run nothing: rewrite the results page from the runs "
                  "already trained, evaluated, compared and timed under --root (e.g. to link a "
                  "results page written after it)")
FLAGS = flags.FLAGS


# Relative phase lengths for the ETA before a phase of the kind has run (QUICK=1, 2026-11-23:
# trainings 68-518 s, the evaluations about 260 s).
PHASE_WEIGHTS = {"train": 1.0, "eval": 0.8, "compare": 0.02, "generate": 0.2, "bench": 0.5}


def main(argv) -> None:
  del argv  # absl has parsed the flags out of it; the page records them from sys.argv
  argv_flags = sys.argv[1:]
  quick = FLAGS.quick
  size = FLAGS.size or ("tiny" if quick else "small")
  steps = FLAGS.steps or (60 if quick else 300)
  limit = FLAGS.downstream_limit or (10 if quick else 60)
  pairs = FLAGS.pairs_limit or (100 if quick else 500)
  variants = FLAGS.variants
  if not {"dense", "hire"} <= set(variants) <= set(quality_page.VARIANTS):
    raise SystemExit(f"quality: --variants={','.join(variants)} must include dense and hire and "
                     f"only {','.join(quality_page.VARIANTS)}")
  root = pathlib.Path(FLAGS.root or ("runs/quality_quick" if quick else "runs/quality"))
  out = pathlib.Path(FLAGS.out or ("docs/results_quick.md" if quick else "docs/results.md"))
  if FLAGS.pages_only:
    if not (root / RECORD).exists():
      print(f"quality: --pages_only found no {root / RECORD} (a full run writes it); run the "
            "same command without --pages_only first", file=sys.stderr)
      sys.exit(2)
    made = json.loads((root / RECORD).read_text())
    # The settings the runs were made with, not this command's flags (which may differ).
    got = {"variants": variants, "size": size, "steps": steps, "limit": limit, "pairs": pairs,
           **made.pop("settings", {})}
    return _write(root, out, got["variants"], got["size"], got["steps"], got["limit"],
                  got["pairs"], **made)
  t0 = time.perf_counter()
  # Quick mode skips the periodic evaluations (most of its time before) and evaluates recall
  # on 2 validation batches.
  every = 0 if quick else max(steps // 5, 1)
  common = [f"--gin.TRAIN_STEPS={steps}", f"--gin.WARMUP_STEPS={max(steps // 10, 1)}",
            f"--gin.CHECKPOINT_EVERY={max(steps // 5, 1)}"]
  def exp(v):
    return quality_plan.experiment_args(size, v)

  phases = phases_lib.Phases("quality", ["train"] * len(variants) + ["eval"] * len(variants) +
                             ["compare", "generate", "bench"], retry="make quality",
                             weights=PHASE_WEIGHTS)
  for v in variants:
    # Only the gap pair (dense, hire) evaluates periodically: the single-layer runs' periodic
    # evals fed no page and cost as much as a third of their training.
    phases.run("train", *exp(v), f"--gin.MODEL_DIR={root / v}", *common,
               f"--gin.EVAL_EVERY={every if v in quality_plan.GAP_PAIR else 0}")
  for v in variants:
    if _evaluated(root / v, steps):
      phases.skip(f"{root / v} already evaluated at step {steps}; delete its eval/ to redo it")
      continue
    phases.run("eval", *exp(v), f"--gin.MODEL_DIR={root / v}", f"--gin.DOWNSTREAM_LIMIT={limit}",
               f"--gin.MINIMAL_PAIRS_LIMIT={pairs}", *(QUICK_EVAL if quick else ()))
  phases.run("compare", *[str(root / v) for v in variants], f"--data={EVAL_DATA}",
             f"--out={root / 'comparison'}")
  phases.run("generate", *exp("hire"), f"--gin.MODEL_DIR={root / 'hire'}", "--compare",
             f"--prompt={PROMPT}", f"--gin.COMPARE_PROMPTS={16 if quick else 128}")
  phases.run("bench-latency", *exp("hire"), f"--gin.MODEL_DIR={root / 'hire'}",
             f"--gin.BENCH_VARIANTS={list(variants)}",
             *(("--gin.DECODE_STEPS=8",) if quick else ()))
  made = {"command": quality_plan.command(argv_flags),
          "minutes": (time.perf_counter() - t0) / 60}
  settings = {"variants": list(variants), "size": size, "steps": steps, "limit": limit,
              "pairs": pairs}
  (root / RECORD).write_text(json.dumps({**made, "settings": settings}))
  _write(root, out, variants, size, steps, limit, pairs, **made)


# What made the runs under --root (the command, its minutes, its settings): --pages_only reuses it.
RECORD = "quality_run.json"


def _write(root, out, variants, size, steps, limit, pairs, *, command, minutes) -> None:
  paired = json.loads((root / "comparison.json").read_text()).get("paired", [])
  quality_page.write_results(root, out, variants=variants, size=size, steps=steps, limit=limit,
                             pairs=pairs, command=command, paired=paired, minutes=minutes,
                             setup=quality_plan.SETUP if len(variants) > 2 else "")
  phases_lib.say(f"Wrote {out}")


PROMPT = "It is a truth universally acknowledged"
# A quick check needs the softmax recall curve at three k', from one batch, and recall and loss
# on a sample of 2 validation batches.
QUICK_EVAL = ("--gin.evaluate.recall_k_primes=[32,128,512]", "--gin.evaluate.recall_batches=1",
              "--gin.EVAL_BATCHES=2", "--gin.LATENCY_STEPS=4")


EVAL_DATA = quality_page.EVAL_DATA


def _evaluated(run: pathlib.Path, steps: int) -> bool:
  path = run / "eval" / EVAL_DATA / "metrics.json"
  if not path.exists():
    return False
  m = json.loads(path.read_text())
  return m.get("step") == steps and "downstream/mean/accuracy" in m


if __name__ == "__main__":
  app.run(main)
