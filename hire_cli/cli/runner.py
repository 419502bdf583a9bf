"""Runs one command: gin parsed, the entry function called, every failure one line and an exit
code (2 bad input, 1 a training fault such as a non-finite loss)."""

import sys


def one_line(e: Exception) -> str:
  # gin appends "In call to configurable ..." on new lines; the first line is the message.
  return " ".join(str(e).split("\n  In call to configurable")[0].split())


def execute(command: str, gin_files=None, gin_bindings=None, *, prompt: str | None = None,
            compare: bool | None = None) -> int:
  """Runs `hire COMMAND` (not compare) with the given gin files and bindings; returns the exit
  code. `prompt` and `compare` are generate's flags (None: left to gin)."""
  import gin

  from hire_cli import errors
  from hire_cli.cli import commands, gin_utils  # heavy imports after flag parsing

  try:
    gin_utils.parse(gin_files, gin_bindings)
    if command == "train":
      gin.bind_parameter("train.operative_config", gin_utils.config_str())
    if command == "generate" and prompt is not None:
      gin.bind_parameter("generate_text.prompt", prompt)
    if command == "generate" and compare is not None:
      gin.bind_parameter("generate_text.compare", compare)
    gin_utils.call(commands.COMMANDS[command][0])
  except errors.UserError as e:
    print(f"hire {command}: error: {one_line(e)}", file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f"hire {command}: error: {one_line(e)}", file=sys.stderr)
    return 1
  return 0


def compare(args: list[str], command: str = "compare") -> int:
  """`hire compare RUN RUN ... [--out=PATH]`; also `hire eval --compare RUN RUN ...
  [--compare_out=PATH]` and `--compare=RUN,RUN`."""
  from hire_cli import errors
  from hire_cli.runs import compare as compare_run
  runs, out, rest = [], "", []
  for a in args:
    if a.startswith(("--out=", "--compare_out=")):
      out = a.split("=", 1)[1]
    elif a.startswith("--compare="):
      runs += [r for r in a.split("=", 1)[1].split(",") if r]
    elif a.startswith("-") and a != "--compare":
      rest.append(a)
    elif not a.startswith("-"):
      runs.append(a)
  try:
    if rest:
      raise errors.UserError(f"compare takes run folders and --out=PATH only, not {rest}; "
                             "evaluate each run with `hire eval` first")
    compare_run.compare_runs(runs, out)
  except errors.UserError as e:
    print(f"hire {command}: error: {one_line(e)}", file=sys.stderr)
    return 2
  return 0
