"""Which settings each command reads, found from gin's parsed config (the entry function's
bindings, the macros and configurables they refer to, and theirs): a setting given on the command
line that the command does not read is an error naming what would read it."""

import re

import gin

from hire_cli import errors
from hire_cli.cli import commands

# Commands that read the run's model; they also take the settings of the run's training and
# evaluation (what `hire train` and `hire eval` read), so that one set of flags describes a run.
MODEL_COMMANDS = ("train", "eval", "generate", "bench-latency")
RUN_COMMANDS = ("train", "eval")


def _scope_of(scoped_selector: str) -> str:
  return "/".join(scoped_selector.split("/")[:-1])


def reads(entry: str) -> tuple[set, set]:
  """(macros, (scope, selector) of configurables) that calling the configurable `entry` reads."""
  cfg, macro = gin.config._CONFIG, gin.config.macro  # gin has no public walk of its bindings
  macros, seen = set(), set()
  todo = [("", gin.config._REGISTRY.get_match(entry).selector)]

  def refer(value, scope):
    if isinstance(value, (list, tuple)):
      for v in value:
        refer(v, scope)
    elif isinstance(value, dict):
      for v in value.values():
        refer(v, scope)
    elif isinstance(value, gin.config.ConfigurableReference):
      name = value.scoped_selector  # a macro's is NAME/gin.macro
      if value.configurable.wrapped is macro:
        name = _scope_of(name)
        if name not in macros:
          macros.add(name)
          refer(cfg.get((name, value.configurable.selector), {}).get("value"), scope)
      else:
        inner = "/".join(s for s in (scope, _scope_of(name)) if s)
        todo.append((inner, value.configurable.selector))

  while todo:
    scope, selector = todo.pop()
    if (scope, selector) in seen:
      continue
    seen.add((scope, selector))
    parts = scope.split("/") if scope else []
    for i in range(len(parts) + 1):  # gin applies the bindings of every prefix of the scope
      refer(list(cfg.get(("/".join(parts[:i]), selector), {}).values()), scope)
  return macros, seen


def _read_by(name: str, found: tuple) -> bool:
  """Whether `name` (a macro, or a binding scope/Configurable.param) is among `found`, what
  `reads` returned for one command."""
  macros, configurables = found
  if "." not in name:
    return name in macros
  target = name.rpartition(".")[0]
  match = gin.config._REGISTRY.get_match(target.split("/")[-1])
  if match is None:
    return True  # gin has refused an unknown name already
  scope = _scope_of(target)
  return any(sel == match.selector and (not scope or f"{s}/".startswith(f"{scope}/"))
             for s, sel in configurables)


def set_on_command_line(bindings: list[str] | None) -> list[str]:
  """The macros and bindings that `--gin.X=...` / `--gin_bindings` set, in order."""
  names = []
  for b in bindings or []:
    for line in b.splitlines():
      m = re.match(r"\s*([A-Za-z_][\w./]*)\s*=", line)
      if m and m.group(1) not in names:
        names.append(m.group(1))
  return names


def refuse_unread(command: str, bindings: list[str] | None) -> None:
  """Raises UserError for the first command-line setting that `hire command` does not read."""
  names = set_on_command_line(bindings)
  if not names:
    return
  found = {c: reads(entry) for c, (entry, _, _) in commands.COMMANDS.items() if entry}
  accepted = (command, *(RUN_COMMANDS if command in MODEL_COMMANDS else ()))
  for name in names:
    if any(_read_by(name, found[c]) for c in accepted):
      continue
    readers = [f"hire {c}" for c in found if c != command and _read_by(name, found[c])]
    if readers:
      fix = f"{', '.join(readers)} read{'s' * (len(readers) == 1)} it; drop it here"
    else:
      what = name.rpartition(".")[0] or name
      fix = (f"no setting of this run refers to {what} (e.g. a dense model has no HiRE "
             "configs); include the configs/variants or configs/models file that uses it")
    raise errors.UserError(f"{name} is set but hire {command} does not read it; {fix}")
