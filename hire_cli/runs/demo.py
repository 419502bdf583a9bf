"""`make demo`: what HiRE does, on the tiny model, in a few minutes.

Trains the tiny HiRE model (HiRE-Softmax and HiRE-FFN together, `configs/experiments/
tiny_hire.gin`; its exact model, a Transformer with a top-k FFN, is inside it and is what the
approximators are distilled from), evaluates it exactly and as HiRE serves it (loss, recall,
top-1 agreement, downstream accuracy), times dense decoding against every HiRE variant on the
same weights (`hire bench-latency`), and ends with a short summary of dense against HiRE.

  python -m hire_cli.runs.demo [--model_dir=runs/demo] [--steps=150]
"""

import json
import pathlib

from absl import app, flags

from hire_cli.report import phases as phases_lib
from hire_cli.report import reporting

EXPERIMENT = "configs/experiments/tiny_hire.gin"
VARIANTS = ("dense", "hire_softmax", "hire_ffn", "hire")
NAMES = {"hire_softmax": "HiRE-Softmax", "hire_ffn": "HiRE-FFN", "hire": "HiRE"}

flags.DEFINE_string("model_dir", "runs/demo", "where the demo's run goes (resumed if there)")
# Sized to take a few minutes on 2 CPU cores: the approximators' recall is past 0.9 by step 60.
flags.DEFINE_integer("steps", 150, "training steps (tiny_hire.gin trains 300)")
flags.DEFINE_integer("eval_batches", 4, "validation batches of 16 x 128 tokens")
flags.DEFINE_integer("downstream_limit", 20, "questions per downstream task")
FLAGS = flags.FLAGS
# Relative phase lengths for the ETA (2026-11-28, 2-core CPU: train 32 min, eval 5.3, bench 0.6
# under a load of 10-20 from other jobs).
PHASE_WEIGHTS = {"train": 1.0, "eval": 0.17, "bench": 0.02}
# The demo trains and evaluates on the shipped corpus: `hire eval` writes eval/<task>/.
EVAL_DATA = "hire_corpus_lm"


def main(argv) -> None:
  del argv
  run = pathlib.Path(FLAGS.model_dir)
  steps = FLAGS.steps
  phases = phases_lib.Phases("demo", ["train", "eval", "bench"], retry="make demo",
                             weights=PHASE_WEIGHTS)
  common = [f"--gin_file={EXPERIMENT}", f"--gin.MODEL_DIR={run}"]
  phases.run("train", *common, f"--gin.TRAIN_STEPS={steps}", f"--gin.CHECKPOINT_EVERY={steps}",
             f"--gin.WARMUP_STEPS={max(steps // 10, 1)}", "--gin.EVAL_EVERY=0")
  phases.run("eval", *common, f"--gin.EVAL_BATCHES={FLAGS.eval_batches}",
             f"--gin.DOWNSTREAM_LIMIT={FLAGS.downstream_limit}", "--gin.MINIMAL_PAIRS_LIMIT=100",
             "--gin.evaluate.recall_batches=1")
  phases.run("bench-latency", *common, f"--gin.BENCH_VARIANTS={list(VARIANTS)}")
  metrics = json.loads((run / "eval" / EVAL_DATA / "metrics.json").read_text())
  bench = json.loads((run / "bench" / "latency.json").read_text())
  phases_lib.say("\n" + summary(metrics, bench, run, phases.elapsed()))


def summary(metrics: dict, bench: dict, run: pathlib.Path, seconds: float) -> str:
  """Dense against HiRE in a few lines: loss, recall, agreement, accuracy and speed."""
  def get(key, fmt):
    return fmt.format(metrics[key]) if key in metrics else "-"

  ms = {c["variant"]: c["ms_per_token"] for c in bench.get("cases", []) if c["batch"] == 1}
  dense_ms = ms.get("dense")
  speed = "".join(f" | {NAMES[v]} {ms[v]:.2f} ({dense_ms / ms[v]:.2f}x)" for v in VARIANTS[1:]
                  if v in ms and dense_ms)
  lines = [
      f"HiRE demo: tiny model, step {metrics.get('step')}, {run} "
      f"(finished in {reporting.fmt_duration(seconds)})",
      f"  validation loss      {get('loss', '{:.3f}')} exact model (unigram baseline "
      f"{get('unigram_loss', '{:.3f}')}); HiRE serves this model",
      f"  softmax recall@32    {get('recall/softmax@32', '{:.3f}')} of the exact top-32 tokens "
      "are among HiRE's candidates",
      f"  FFN group recall     {get('recall/ffn@k', '{:.3f}')} of the exact top-k FFN groups are "
      "among HiRE's candidates",
      f"  top-1 agreement      {get('top1_agreement', '{:.1%}')} of greedy next tokens are the "
      "exact model's",
      f"  downstream accuracy  {get('downstream/mean/accuracy', '{:.1f}')}% exact, "
      f"{get('downstream/mean/accuracy_hire', '{:.1f}')}% with HiRE (mean of the shipped tasks)",
      f"  decode ms/token      dense {dense_ms:.2f}{speed}" if dense_ms else
      "  decode ms/token      no timing found",
      f"  served loss          {get('served_loss', '{:.3f}')} as HiRE serves it (exact logits "
      f"over the k' candidates + the target; target missed {get('candidate_miss_rate', '{:.1%}')})",
      f"  minimal pairs        {get('downstream/minimal_pairs/accuracy', '{:.1f}')}% exact, "
      f"{get('downstream/minimal_pairs/accuracy_hire', '{:.1f}')}% with HiRE (grammatical "
      "sentence preferred)",
      f"Reports: {run / 'eval' / EVAL_DATA / 'report.md'}, {run / 'bench' / 'latency.json'}"]
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
