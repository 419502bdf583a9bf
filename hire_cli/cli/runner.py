"""Runs one command: gin parsed, the entry function called, every failure one line and an exit
code (2 bad input, 1 a training fault such as a non-finite loss)."""

import os
import sys
import traceback


def one_line(e: Exception) -> str:
  # gin appends "In call to configurable ..." on new lines; the first line is the message.
  return " ".join(str(e).split("\n  In call to configurable")[0].split())


def execute(command: str, gin_files=None, gin_bindings=None, *, prompt: str | None = None,
            compare: bool | None = None, dry_run: bool = False,
            source: dict | None = None) -> int:
  """Runs `hire COMMAND` (not compare) with the given gin files and bindings; returns the exit
  code: 0, 2 for bad input (a full disk and permissions included), 1 for a training fault, 130
  for Ctrl-C. One line on stderr, no traceback, unless HIRE_VERBOSE=1. `prompt` and `compare`
  are generate's flags (None: left to gin); `dry_run` checks a train run without running it;
  `source` is import's --gguf / --pretrained."""
  from hire_cli import quiet
  # The commands that read data through TensorFlow (generate --compare continues validation
  # passages): TF loaded first, with its C++ start-up lines silenced.
  if command in ("train", "eval") or (command == "generate" and compare):
    quiet.load_tensorflow()
  import gin

  from hire_cli import errors
  from hire_cli.cli import commands, gin_utils, reads  # heavy imports after flag parsing

  try:
    gin_utils.parse(gin_files, gin_bindings)
    reads.refuse_unread(command, gin_bindings)  # before anything is bound, run or written
    if command == "train":
      gin.bind_parameter("train.operative_config", gin_utils.config_str())
    if command == "generate" and prompt is not None:
      gin.bind_parameter("generate_text.prompt", prompt)
    if command == "generate" and compare is not None:
      gin.bind_parameter("generate_text.compare", compare)
    if command == "import":
      if not any(b.split("=")[0].strip() == "MODEL_DIR" for b in gin_bindings or []):
        raise errors.UserError("hire import needs a new folder: pass --gin.MODEL_DIR=runs/NAME")
      for name, value in (source or {}).items():
        gin.bind_parameter(f"import_model.{name}", value)
    if dry_run:
      gin.bind_parameter(f"{commands.COMMANDS[command][0]}.dry_run", True)
    try:
      gin_utils.call(commands.COMMANDS[command][0])
    finally:
      if command == "train" and not dry_run:  # the run folder says what model it holds
        gin_utils.write_folder_config(gin_files, gin_bindings)
  except errors.UserError as e:
    return _fail(command, one_line(e), 2)
  except FloatingPointError as e:
    return _fail(command, one_line(e), 1)
  except (errors.Interrupted, KeyboardInterrupt) as e:
    return _fail(command, one_line(e) or "interrupted", 130)
  except OSError as e:  # the disk or the file system refused: not a fault of the program
    return _fail(command, f"{e.strerror or e} ({getattr(e, 'filename', '') or 'I/O'}); free "
                 "space or fix permissions, then rerun", 2)
  except Exception as e:  # noqa: BLE001 - a bug: one line unless the user asks for more
    if os.environ.get("HIRE_VERBOSE"):
      raise
    return _fail(command, f"internal error {type(e).__name__}: {one_line(e)[:300]} (rerun with "
                 "HIRE_VERBOSE=1 for the traceback, and please report it)", 1)
  return 0


def _fail(command: str, msg: str, code: int) -> int:
  if os.environ.get("HIRE_VERBOSE"):
    traceback.print_exc()
  print(f"hire {command}: error: {msg}", file=sys.stderr)
  return code


def compare(args: list[str], command: str = "compare") -> int:
  """`hire compare RUN RUN ... [--out=PATH] [--data=NAME]`; also `hire eval --compare RUN RUN
  ... [--compare_out=PATH]` and `--compare=RUN,RUN`."""
  from hire_cli import errors
  from hire_cli.runs import compare as compare_run
  runs, out, data, rest = [], "", "", []
  for a in args:
    if a.startswith(("--out=", "--compare_out=")):
      out = a.split("=", 1)[1]
    elif a.startswith("--data="):
      data = a.split("=", 1)[1]
    elif a.startswith("--compare="):
      runs += [r for r in a.split("=", 1)[1].split(",") if r]
    elif a.startswith("-") and a != "--compare":
      rest.append(a)
    elif not a.startswith("-"):
      runs.append(a)
  try:
    if rest:
      raise errors.UserError(f"compare takes run folders, --out=PATH and --data=NAME only, not "
                             f"{rest}; evaluate each run with `hire eval` first")
    compare_run.compare_runs(runs, out, data)
  except errors.UserError as e:
    print(f"hire {command}: error: {one_line(e)}", file=sys.stderr)
    return 2
  return 0
