"""Validation names the setting the user set: for every macro of every command (and every literal
binding of its entry function) a bad value is refused in one line that starts with exactly that
name, and each rule belongs to its own argument or field (a rule keyed on a bare name across
owners would refuse ApproxConfig.group_size = 0, which HiReFfnConfig.group_size must refuse)."""

import inspect
import typing

import gin
import pytest

from hire_cli import errors, validate
from hire_cli.cli import commands, gin_utils, reads, runner

COMMANDS = [c for c, (entry, _, _) in commands.COMMANDS.items() if entry]
# Arguments without a type hint or rule that their run checks itself, and a value it refuses.
BAD = {"BENCH_BATCHES": [0], "CONTEXT_LENS": [0]}


def _owner_of(selector: str):
  return gin.config._REGISTRY[selector].wrapped


def _bad_value(owner: str, field: str, hint):
  rule = validate.RULES.get(owner, {}).get(field)
  if rule is not None:
    return rule.bad
  if hint is str or (typing.get_origin(hint) and str in typing.get_args(hint)):
    return 5
  return "not-a-value"  # a number, a bool or a config: a string is wrong for each


def _settings(command: str) -> list[tuple[str, object]]:
  """(name, bad value) of every macro `hire command` reads and every literal binding of its
  entry function, from the parsed run files."""
  gin_utils.parse(None, [])
  entry = commands.COMMANDS[command][0]
  macros, configurables = reads.reads(entry)
  cfg, out = gin.config._CONFIG, {}
  for scope, selector in sorted(configurables):
    fn = _owner_of(selector)
    hints = typing.get_type_hints(fn)
    for param, value in cfg.get((scope, selector), {}).items():
      name = fn.__name__
      if isinstance(value, gin.config.ConfigurableReference):
        if value.configurable.wrapped is gin.config.macro:
          macro = value.scoped_selector.rpartition("/")[0]
          out.setdefault(macro, BAD.get(macro, _bad_value(name, param, hints.get(param))))
      elif selector == gin.config._REGISTRY.get_match(entry).selector:
        out.setdefault(f"{entry}.{param}", _bad_value(name, param, hints.get(param)))
  assert set(out) >= macros, f"{sorted(macros - set(out))} feed no argument or field"
  return sorted(out.items())


CASES = [(c, name, bad) for c in COMMANDS for name, bad in _settings(c)]


def test_every_command_has_cases():
  named = {c: [n for cc, n, _ in CASES if cc == c] for c in COMMANDS}
  assert {"TRAIN_STEPS", "LEARNING_RATE", "TASK", "MESH_DATA", "train.log_every"} <= set(
      named["train"])
  assert {"GENERATE_TOKENS", "TOP_K", "TEMPERATURE", "SEED"} <= set(named["generate"])
  assert {"BENCH_BATCH", "DECODE_STEPS", "BENCH_VARIANTS"} <= set(named["bench-latency"])
  assert {"EVAL_BATCHES", "DOWNSTREAM_SHOTS"} <= set(named["eval"])
  assert {"IMPORT_DTYPE", "MODEL_DIR"} <= set(named["import"])


@pytest.mark.parametrize("command,name,bad", CASES, ids=[f"{c}-{n}" for c, n, _ in CASES])
def test_a_bad_value_names_exactly_its_setting(command, name, bad, tmp_path, capsys):
  run = tmp_path / "run"
  bindings = [f"{name} = {bad!r}"] + ([] if name == "MODEL_DIR" else [f"MODEL_DIR = '{run}'"])
  capsys.readouterr()
  code = runner.execute(command, None, bindings)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, (err, code)
  message = err[0].removeprefix(f"hire {command}: error: ")
  assert message.startswith(f"{name}={bad!r} "), message
  assert not run.exists()


def _owner(name: str):
  gin_utils.register()
  return _owner_of(gin.config._REGISTRY.get_match(name).selector)


@pytest.mark.parametrize("owner,field", [(o, f) for o, rules in validate.RULES.items()
                                         for f in rules])
def test_each_rule_is_its_owners(owner, field):
  """The rule of owner.field refuses its bad value and accepts its edge, for that owner alone:
  the owner really has the field, and the same name elsewhere keeps its own rule."""
  gin.clear_config()  # no parsed config: names are owner.field
  fn = _owner(owner)
  hints = typing.get_type_hints(fn)
  assert field in inspect.signature(fn).parameters, f"{owner} has no argument or field {field}"
  rule = validate.RULES[owner][field]
  validate.check(owner, hints, {field: rule.edge})
  with pytest.raises(errors.UserError, match=f"^{owner}.{field}="):
    validate.check(owner, hints, {field: rule.bad})


def test_a_name_means_what_its_owner_says():
  gin.clear_config()
  validate.check("ApproxConfig", {"group_size": int}, {"group_size": 0})
  with pytest.raises(errors.UserError, match="HiReFfnConfig.group_size=0 must be positive"):
    validate.check("HiReFfnConfig", {"group_size": int}, {"group_size": 0})


def test_a_scoped_binding_is_named_with_its_scope(tmp_path, capsys):
  code = runner.execute("train", ["configs/experiments/tiny_hire.gin"],
                        [f"MODEL_DIR = '{tmp_path / 'run'}'", "ffn/ApproxConfig.rank = 0"])
  assert code == 2
  assert "ffn/ApproxConfig.rank=0 must be positive" in capsys.readouterr().err


def test_a_chain_of_macros_names_the_one_holding_the_value(tmp_path, capsys):
  code = runner.execute("generate", None, [f"MODEL_DIR = '{tmp_path / 'run'}'", "MINE = 0",
                                           "GENERATE_TOKENS = %MINE"])
  assert code == 2
  assert "error: MINE=0 must be positive" in capsys.readouterr().err
