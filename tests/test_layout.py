"""The package's layering (docs/ARCHITECTURE.md): imports go one way, run modules never import
each other, and modules stay short enough to read."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "hire_cli"
# A package may import the packages below it; `report` imports no other hire_cli package.
BELOW = {"cli": {"runs", "evals", "report", "lib", "nn"}, "runs": {"evals", "report", "lib", "nn"},
         "evals": {"report", "lib", "nn"}, "lib": {"nn"}, "nn": set(), "report": set()}
MAX_LINES = 300


def _imports(path: pathlib.Path) -> set[str]:
  """hire_cli modules imported by `path` (dotted, below hire_cli), at any depth in the file."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hire_cli"):
      base = node.module.split(".")[1:]
      out |= {".".join([*base, a.name]) for a in node.names} if len(base) == 1 else {
          ".".join(base)}
    elif isinstance(node, ast.Import):
      out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("hire_cli.")}
  return out


MODULES = sorted(p for p in PKG.glob("*/*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_go_one_way(path):
  me = path.parent.name
  for mod in _imports(path):
    pkg = mod.split(".")[0]
    if pkg in BELOW and pkg != me:
      assert pkg in BELOW[me], f"{me}/{path.name} imports {mod}: {me} may not import {pkg}"
    if me == "runs" and pkg == "runs":
      raise AssertionError(f"runs/{path.name} imports {mod}: run modules never import each "
                           "other; move what they share into evals/ or lib/")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_modules_are_short(path):
  n = len(path.read_text().splitlines())
  assert n <= MAX_LINES, f"{path} has {n} lines; split it by idea (at most {MAX_LINES})"
