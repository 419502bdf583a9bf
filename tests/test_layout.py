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
