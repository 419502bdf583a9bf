"""The `hire` command: one absl app with subcommands train, eval and bench-latency."""

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

COMMANDS = {
    "train": ("train", "Pretrain (or resume) a model in MODEL_DIR from gin configs.", """\
      Trains until TRAIN_STEPS, checkpointing every CHECKPOINT_EVERY steps with Orbax; run it
      again on the same MODEL_DIR with a larger TRAIN_STEPS and it resumes from the latest step.
      SIGTERM saves a checkpoint and exits 0. Writes MODEL_DIR/config.gin and TensorBoard logs
      in MODEL_DIR/tb."""),
    "eval": ("evaluate", "Evaluate the latest checkpoint of MODEL_DIR.", """\
      Reports validation loss and perplexity (and a unigram baseline) as a table and in
      MODEL_DIR/eval/metrics.json."""),
    "bench-latency": ("bench_latency", "Measure decode latency with the KV cache.", """\
      Median ms per token over DECODE_STEPS decode steps after warm-up, batch BENCH_BATCH.
      --gin.INIT=random measures a freshly initialised model (no checkpoint needed).
      Writes MODEL_DIR/bench/latency.json."""),
}

COMMON = """\
  Common overrides (T5X-style shorthand; strings need no quotes):
    --gin.MODEL_DIR=runs/mine     where checkpoints, config.gin, eval/ and bench/ go
    --gin.TRAIN_STEPS=2000        --gin.BATCH_SIZE=32       --gin.SEQ_LEN=128
    --gin.LEARNING_RATE=3e-3      --gin.SEED=0              --gin.MESH_MODEL=1
  Gin files (configs/experiments/*.gin include a model size, a variant and the runs):
    --gin_file=configs/experiments/small_dense.gin   (repeatable; later wins)
  Without --gin_file the embedded default is used: tiny model, shipped corpus, runs/default."""


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
  from hire_cli import errors, gin_utils  # heavy imports after flag parsing

  try:
    gin_utils.parse(gin_files, gin_bindings)
    if command == "train":
      gin.bind_parameter("train.operative_config", gin_utils.config_str())
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


def main(argv):
  logging.set_verbosity(logging.WARNING)
  sys.exit(execute(argv[1], FLAGS.gin_file, FLAGS.gin_bindings))


def run():
  from hire_cli.cli_args import rewrite_argv
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
