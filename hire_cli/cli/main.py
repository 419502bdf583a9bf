"""The `hire` command: one absl app with subcommands train, eval, bench-latency and generate."""

import os
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data; keep it quiet

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "Gin config file(s); repeat the flag, later files win. "
                          "Default: configs/experiments/tiny_dense.gin")
flags.DEFINE_multi_string("gin_bindings", None, "Gin bindings, e.g. 'TRAIN_STEPS = 100'. "
                          "Shorthand: --gin.TRAIN_STEPS=100")
flags.DEFINE_string("prompt", None, "hire generate: the text to continue.")
flags.DEFINE_bool("compare", False, "hire generate: dense and HiRE greedy outputs side by side.")
flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0's "
                    "coordinator (jax.distributed); every process passes the same address.")
flags.DEFINE_integer("num_processes", None, "Multi-process run: how many processes take part.")
flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index, 0..N-1.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with no arguments: "
                  "it detects the cluster itself (TPU pods, SLURM, Kubernetes).")

COMMANDS = {
    "train": ("train", "Pretrain (or resume) a model in MODEL_DIR from gin configs.", """\
      Trains until TRAIN_STEPS, checkpointing every CHECKPOINT_EVERY steps with Orbax; run it
      again on the same MODEL_DIR with a larger TRAIN_STEPS and it resumes from the latest step.
      SIGTERM saves a checkpoint and exits 0. Writes MODEL_DIR/config.gin and TensorBoard logs
      in MODEL_DIR/tb."""),
    "eval": ("evaluate", "Evaluate the latest checkpoint of MODEL_DIR (or --compare runs).", """\
      One report: validation loss and perplexity (exact, and served by HiRE), downstream
      accuracy on the shipped tasks (exact and HiRE; DOWNSTREAM=False skips it), top-k recall
      per HiRE layer and top-1 agreement, decode ms/token at batch 1. Writes
      MODEL_DIR/eval/metrics.json, report.md, PNG plots and TensorBoard scalars.
      hire eval --compare RUN RUN ... [--compare_out=PATH] puts the saved metrics of several
      runs side by side with the difference to the first (PATH.md and PATH.json)."""),
    "bench-latency": ("bench_latency", "Measure decode latency with the KV cache.", """\
      Median ms per token over DECODE_STEPS decode steps after warm-up, batch BENCH_BATCH.
      --gin.INIT=random measures a freshly initialised model (no checkpoint needed).
      Writes MODEL_DIR/bench/latency.json."""),
    "generate": ("generate_text", "Generate text from the latest checkpoint and a prompt.", """      --prompt='Once upon a time' (required). Greedy by default; --gin.TEMPERATURE=0.8
      --gin.TOP_K=40 samples. HiRE models decode with their HiRE paths; --compare prints
      dense and HiRE greedy outputs and their token agreement (--gin.COMPARE_PROMPTS=32 adds
      32 validation passages as prompts and reports the agreement over all)."""),
}

COMMON = """\
  Common overrides (T5X-style shorthand; strings need no quotes):
    --gin.MODEL_DIR=runs/mine     where checkpoints, config.gin, eval/ and bench/ go
    --gin.TRAIN_STEPS=2000        --gin.BATCH_SIZE=32       --gin.SEQ_LEN=128
    --gin.LEARNING_RATE=3e-3      --gin.SEED=0              --gin.MESH_MODEL=1
  Gin files (configs/experiments/*.gin include a model size, a variant and the runs):
    --gin_file=configs/experiments/small_dense.gin   (repeatable; later wins)
  Without --gin_file the embedded default is used: tiny model, shipped corpus, runs/default.
  Several processes (hosts), one command per process, same flags and MODEL_DIR on all:
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
    --distributed                 on TPU pods / SLURM: let JAX detect the cluster itself"""


def usage(command: str | None = None) -> str:
  if command in COMMANDS:
    _, short, long = COMMANDS[command]
    return (f"usage: hire {command} [--gin_file=FILE]... [--gin_bindings=BINDING]... "
            f"[--gin.NAME=VALUE]...\n\n{short}\n\n{textwrap.indent(textwrap.dedent(long), '  ')}\n"
            f"{COMMON}\n")
  lines = ["usage: hire COMMAND [flags]", "", "Commands:"]
  lines += [f"  {name:<15} {short}" for name, (_, short, _) in COMMANDS.items()]
  lines += ["", "Run `hire COMMAND --help` for the flags of one command.", "", COMMON]
  return "\n".join(lines) + "\n"


def execute(command: str, gin_files=None, gin_bindings=None) -> int:
  """Runs one command; bad input prints one line to stderr and returns 2 (no traceback)."""
  import gin

  from hire_cli import errors
  from hire_cli.cli import gin_utils  # heavy imports after flag parsing

  try:
    gin_utils.parse(gin_files, gin_bindings)
    if command == "train":
      gin.bind_parameter("train.operative_config", gin_utils.config_str())
    if command == "generate" and FLAGS.is_parsed():
      gin.bind_parameter("generate_text.prompt", FLAGS.prompt or "")
      gin.bind_parameter("generate_text.compare", FLAGS.compare)
    gin_utils.call(COMMANDS[command][0])
  except errors.UserError as e:
    print(f"hire {command}: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f"hire {command}: error: {_one_line(e)}", file=sys.stderr)
    return 1
  return 0


def _one_line(e: Exception) -> str:
  # gin appends "In call to configurable ..." on new lines; the first line is the message.
  return " ".join(str(e).split("\n  In call to configurable")[0].split())


def init_distributed(coordinator_address=None, num_processes=None, process_id=None,
                     auto=False) -> None:
  """Joins this process to a multi-process run; must come before anything touches devices."""
  if not (coordinator_address or auto):
    return
  import jax
  # CPU processes exchange collectives over TCP with gloo (jax's default; set for clarity).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  try:
    init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                     FLAGS.distributed)
  except (RuntimeError, ValueError) as e:
    print(f"hire {argv[1]}: error: could not join the multi-process run ({_one_line(e)}); check "
          "--coordinator_address, --num_processes and --process_id", file=sys.stderr)
    sys.exit(2)
  sys.exit(execute(argv[1], FLAGS.gin_file, FLAGS.gin_bindings))


def compare_main(args: list[str]) -> int:
  """`hire eval --compare RUN RUN ... [--compare_out=PATH]` (also --compare=RUN,RUN)."""
  from hire_cli import errors
  from hire_cli.runs import compare
  runs, out, rest, i = [], "", [], 0
  while i < len(args):
    a = args[i]
    if a == "--compare":
      while i + 1 < len(args) and not args[i + 1].startswith("-"):
        runs.append(args[i + 1])
        i += 1
    elif a.startswith("--compare="):
      runs += [r for r in a.split("=", 1)[1].split(",") if r]
    elif a.startswith("--compare_out="):
      out = a.split("=", 1)[1]
    elif a != "eval":
      rest.append(a)
    i += 1
  try:
    if rest:
      raise errors.UserError(f"--compare takes run folders and --compare_out=PATH only, not "
                             f"{rest}; evaluate each run with `hire eval` first")
    compare.compare_runs(runs, out)
  except errors.UserError as e:
    print(f"hire eval: error: {_one_line(e)}", file=sys.stderr)
    return 2
  return 0


def run():
  from hire_cli.cli.cli_args import rewrite_argv
  argv = rewrite_argv(sys.argv)
  args = argv[1:]
  positional = [a for a in args if not a.startswith("-")]
  wants_help = any(a in ("-h", "--help", "--helpfull", "help") for a in args)
  command = positional[0] if positional else None
  if command is None or command == "help" or command not in COMMANDS:
    if command not in (None, "help") and command not in COMMANDS:
      print(f"hire: error: unknown command {command!r}; use one of {list(COMMANDS)}",
            file=sys.stderr)
      sys.exit(2)
    sys.stdout.write(usage())
    sys.exit(0 if wants_help or command == "help" else 2)
  if wants_help:
    sys.stdout.write(usage(command))
    sys.exit(0)
  if command == "eval" and any(a == "--compare" or a.startswith("--compare=") for a in args):
    sys.exit(compare_main(args))
  extra = [a for a in positional[1:]]
  if extra:
    print(f"hire {command}: error: unexpected argument(s) {extra}; flags look like "
          "--gin.NAME=VALUE", file=sys.stderr)
    sys.exit(2)

  def parse_flags(argv_):
    try:
      return FLAGS(argv_)
    except flags.Error as e:
      print(f"hire {command}: error: {e}; see `hire {command} --help`", file=sys.stderr)
      sys.exit(2)

  app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
