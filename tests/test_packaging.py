"""`pip install .` (a wheel, not editable) gives a working `hire`: the default config and the
shipped data are found inside the package, from any folder; and every package `hire_cli`
imports is declared in pyproject.toml with a pinned version.

The install takes seconds: the wheel is installed with --no-deps into a fresh venv that sees
this interpreter's site-packages through a .pth file (the dependencies are already there). pip
builds the wheel in an isolated environment, fetching setuptools from the package index (or
its cache); that is the one network use, also in CI."""

import ast
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  deps = project["dependencies"] + project["optional-dependencies"]["test"]
  for dep in deps:
    assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", dep), f"not pinned: {dep}"
  return {re.split(r"[=\[]", d)[0].lower().replace("_", "-") for d in deps}


# Scripts that run in the reference venv (`make reference`: llama-cpp-python, pinned in the
# Makefile), never in hire's own environment.
REFERENCE_ONLY = REPO / "tests" / "reference" / "make_reference.py"


def _imported(root: pathlib.Path) -> set[str]:
  """Top-level names of the non-standard modules imported anywhere under `root`."""
  names = set()
  for path in root.rglob("*.py"):
    if path == REFERENCE_ONLY:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names |= {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names.add(node.module.split(".")[0])
  return {n for n in names if n not in sys.stdlib_module_names and n not in ("hire_cli", "tests")}


def test_every_imported_package_is_declared_and_pinned():
  declared, dists = _declared(), importlib.metadata.packages_distributions()
  for name in sorted(_imported(REPO / "hire_cli") | _imported(REPO / "tests")):
    found = [d.lower().replace("_", "-") for d in dists.get(name, [])]
    assert found, f"{name} is imported but not installed"
    assert set(found) & declared, f"{name} (from {found}) is imported but not in pyproject.toml"


def _venv_with_test_deps(venv: pathlib.Path) -> pathlib.Path:
  """A venv without pip whose site-packages also sees this interpreter's (pip included)."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  py = venv / "bin" / "python"
  site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  (pathlib.Path(site) / "hire_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
  return py


def _run(cmd, cwd, env, timeout=600) -> str:
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout + proc.stderr


@pytest.mark.slow
def test_pip_install_gives_a_working_hire(tmp_path):
  src = tmp_path / "src"  # the tracked layout, without anything built in the checkout
  for name in ("hire_cli", "configs", "data"):
    shutil.copytree(REPO / name, src / name,
                    ignore=shutil.ignore_patterns("tfds", "__pycache__", "*.pyc"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  py = _venv_with_test_deps(tmp_path / "venv")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HIRE_DATA_DIR")}
  _run([py, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(src)],
       tmp_path, env)
  shutil.rmtree(src)  # the installed package must not need the source tree

  work = tmp_path / "elsewhere"
  work.mkdir()
  where = _run([py, "-c", "import hire_cli, hire_cli.paths as p; print(hire_cli.__file__); "
                "print(p.INSTALLED, p.corpus_dir().is_dir(), p.default_vocab_path().is_file(), "
                "p.tfds_data_dir())"], work, dict(env, XDG_CACHE_HOME=str(tmp_path / "cache")))
  assert str(tmp_path / "venv") in where.splitlines()[0], where
  assert where.splitlines()[1] == f"True True True {tmp_path / 'cache' / 'hire' / 'tfds'}", where

  # The TFDS corpus built by the rest of the suite, so that this test takes seconds.
  env = dict(env, HIRE_TFDS_DIR=str(REPO / "data" / "tfds"))
  hire = str(tmp_path / "venv" / "bin" / "hire")
  out = _run([hire, "train", "--gin.TRAIN_STEPS=2"], work, env)  # into ./runs/default
  assert "Finished at step 2 of 2" in out, out
  out += _run([hire, "eval", "--gin.EVAL_BATCHES=1", "--gin.DOWNSTREAM_LIMIT=1",
               "--gin.MINIMAL_PAIRS_LIMIT=1", "--gin.LATENCY_STEPS=0"], work, env)
  metrics = json.loads((work / "runs" / "default" / "eval" / "hire_corpus_lm" / "metrics.json")
                       .read_text())
  assert metrics["step"] == 2 and "downstream/mean/accuracy" in metrics, metrics
  for noise in ("Path not found", "cuInit", "cudart", "Traceback"):
    assert noise not in out, out
