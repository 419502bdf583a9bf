"""The package's layering (docs/ARCHITECTURE.md): imports go one way, run modules never import
each other, and modules stay short enough to read; and the fast test tier (`make test-fast`, all
but the tests marked `slow`) keeps a test of every module that has a test file of its name."""

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


def _one_way_offences(path: pathlib.Path) -> list[str]:
  me, out = path.parent.name, []
  for mod in sorted(_imports(path)):
    pkg = mod.split(".")[0]
    if pkg in BELOW and pkg != me and pkg not in BELOW[me]:
      out.append(f"{me}/{path.name} imports {mod}: {me} may not import {pkg}")
    if me == "runs" and pkg == "runs":
      out.append(f"runs/{path.name} imports {mod}: run modules never import each other; move "
                 "what they share into evals/ or lib/")
  return out


def test_imports_go_one_way():
  bad = [line for path in MODULES for line in _one_way_offences(path)]
  assert not bad, "\n".join(bad)


def test_modules_are_short():
  lines = {path: len(path.read_text().splitlines()) for path in MODULES}
  bad = [f"{p.relative_to(PKG.parent)} has {n} lines; split it by idea (at most {MAX_LINES})"
         for p, n in lines.items() if n > MAX_LINES]
  assert not bad, "\n".join(bad)


def test_the_checks_name_every_offender(tmp_path):
  (tmp_path / "nn").mkdir()
  (tmp_path / "runs").mkdir()
  x, y = tmp_path / "nn" / "x.py", tmp_path / "runs" / "y.py"
  x.write_text("from hire_cli.lib import data\nimport hire_cli.runs.train\n")
  y.write_text("from hire_cli.runs import train\n")
  bad = [*_one_way_offences(x), *_one_way_offences(y)]
  assert [b.split(":")[0] for b in bad] == [
      "nn/x.py imports lib.data", "nn/x.py imports runs.train", "runs/y.py imports runs.train"], bad


TESTS = PKG.parent / "tests"


def _is_slow(node: ast.AST) -> bool:
  return any("mark.slow" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


def fast_tests(path: pathlib.Path) -> list[str]:
  """The tests of `path` that `-m "not slow"` keeps (read from the source, not collected)."""
  tree = ast.parse(path.read_text())
  for node in tree.body:  # pytestmark = pytest.mark.slow marks the whole file
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                            for t in node.targets):
      if "mark.slow" in ast.unparse(node.value):
        return []
  out = []
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
      out += [] if _is_slow(node) else [node.name]
    elif isinstance(node, ast.ClassDef) and node.name.startswith("Test") and not _is_slow(node):
      out += [f"{node.name}.{f.name}" for f in node.body
              if isinstance(f, ast.FunctionDef) and f.name.startswith("test") and not _is_slow(f)]
  return out


def test_the_fast_tier_keeps_a_test_of_every_module():
  """tests/test_<name>.py of each hire_cli module <name>.py keeps at least one test that is not
  marked slow, so `make test-fast` still imports and exercises every such module."""
  mirrors = sorted({TESTS / f"test_{p.stem}.py" for p in PKG.rglob("*.py")} & set(TESTS.iterdir()))
  assert len(mirrors) > 20, mirrors
  bad = [f"{p.name} has no fast test: leave one unmarked (a small case of what the slow ones "
         "prove)" for p in mirrors if not fast_tests(p)]
  assert not bad, "\n".join(bad)


def test_fast_tests_see_slow_marks(tmp_path):
  (tmp_path / "a.py").write_text("import pytest\n@pytest.mark.slow\ndef test_a(): pass\n"
                                 "def test_b(): pass\n")
  (tmp_path / "b.py").write_text("import pytest\npytestmark = [pytest.mark.slow]\n"
                                 "def test_c(): pass\n")
  assert fast_tests(tmp_path / "a.py") == ["test_b"] and fast_tests(tmp_path / "b.py") == []


def test_bench_and_generate_import_no_input_pipeline():
  """Accelerator hosts may have JAX but not TensorFlow or seqio: `hire bench-latency` and
  `hire generate` must import without them."""
  import subprocess
  import sys
  code = ("import sys, hire_cli.runs.bench, hire_cli.runs.generate, hire_cli.evals.latency, "
          "hire_cli.runs.train, hire_cli.runs.evaluate, hire_cli.cli.gin_utils; "
          "print(sorted(m for m in ('tensorflow', 'seqio', 'tensorflow_datasets') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.slow
def test_bench_latency_runs_where_tensorflow_is_missing(tmp_path):
  """On a host without TensorFlow and seqio, `hire bench-latency` runs and `hire train` says
  what is missing (exit 2) instead of failing to start."""
  import subprocess
  import sys
  code = f"""
import sys
for m in ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text", "clu"):
  sys.modules[m] = None  # importing them raises ImportError, as where they are not installed
from hire_cli.cli import runner
tiny = ["ModelConfig.d_model = 16", "ModelConfig.n_layers = 1", "ModelConfig.vocab_size = 512",
        "INIT = 'random'", "DECODE_STEPS = 2", "BENCH_REPEATS = 1", "CONTEXT_LEN = 8",
        "MODEL_DIR = '{tmp_path}'"]
print("bench", runner.execute("bench-latency", None, tiny))
print("train", runner.execute("train", None, tiny[:3] + tiny[-1:]))  # without bench's settings
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert "bench 0" in out.stdout and "train 2" in out.stdout, out.stdout + out.stderr
  assert "needs the input pipeline" in out.stderr, out.stderr
  assert (tmp_path / "bench" / "latency.json").is_file()


BENCHMARKS = sorted((PKG.parent / "benchmarks").glob("*.py"))


def _top_level_names(module: str) -> set[str] | None:
  """Names a hire_cli module defines at its top level (None if it is not a file of hire_cli)."""
  path = PKG.parent / (module.replace(".", "/") + ".py")
  if not path.is_file():
    return None
  names = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names |= {(a.asname or a.name).split(".")[0] for a in node.names}
  return names


def _stale_references(path: pathlib.Path) -> list[str]:
  """`module.name` uses and `from module import name` in a script where hire_cli no longer has
  that name: a benchmark that a refactor broke (they are run by hand, not by the tests)."""
  tree, modules, bad = ast.parse(path.read_text()), {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hire_cli"):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        if _top_level_names(full) is not None:
          modules[a.asname or a.name] = full
        elif a.name not in (_top_level_names(node.module) or set()):
          bad.append(f"{path.name}: from {node.module} import {a.name}")
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules and node.attr not in _top_level_names(modules[node.value.id])):
      bad.append(f"{path.name}: {node.value.id}.{node.attr} ({modules[node.value.id]} has none)")
  return bad


def test_benchmarks_name_only_what_hire_cli_has(tmp_path):
  bad = [line for path in BENCHMARKS for line in _stale_references(path)]
  assert not bad, "\n".join(bad)
  stale = tmp_path / "stale.py"  # the check can fail: a name that a refactor removed
  stale.write_text("from hire_cli.lib import train_plan\ntrain_plan.post_hoc_params_gone()\n")
  assert _stale_references(stale) == ["stale.py: train_plan.post_hoc_params_gone "
                                      "(hire_cli.lib.train_plan has none)"]
