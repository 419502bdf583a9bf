"""Shared fixtures: tiny model sizes, quick CPU compiles, small training runs and the harness that
runs a snippet in a subprocess with several CPU devices."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's CPU backend with LLVM optimisation turned down (STYLE.md: lm1b's tests turn XLA down): the
# suite's programs are tiny, so compiling them is most of its time; this cuts that by a third
# (measured on test_golden, test_model, test_approx, test_train_step). The golden values still
# hold to 1e-5. Subprocesses (cpu_devices, the CLI tests) inherit it through os.environ.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import pytest  # noqa: E402

from hire_cli.nn.config import ModelConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


@pytest.fixture
def tiny_cfg():
  return ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=2, d_head=16, d_ff=64,
                     max_len=32)


class CpuDevices:
  """Subprocesses that see `n` CPU devices (XLA's forced host device count).

  JAX fixes its device count when it starts, so a test that needs a mesh of several devices runs
  its code in a fresh interpreter: `run` for a snippet that prints `RESULT<json>`, `env` for a
  process the test starts itself."""

  def env(self, n: int = 8) -> dict[str, str]:
    """os.environ for a subprocess on `n` CPU devices, with the repository importable."""
    flags = _DEVICE_COUNT_FLAG.sub("", os.environ.get("XLA_FLAGS", ""))
    return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO),
                XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={n}".strip())

  def run(self, script: str, *argv: str, n: int = 8, timeout: float = 300) -> dict:
    """Runs `python -c script *argv` on `n` devices; returns the JSON of its `RESULT` line."""
    proc = subprocess.run([sys.executable, "-c", script, *argv], env=self.env(n), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, f"no RESULT line in the output:\n{proc.stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT"):])


@pytest.fixture
def cpu_devices() -> CpuDevices:
  """`cpu_devices.run(SCRIPT)` (8 devices by default) or `cpu_devices.env(n)` for a Popen."""
  return CpuDevices()


@dataclasses.dataclass(frozen=True)
class SmallRun:
  """`train.train` runs of a model with the shipped vocabulary (V = 32000), everything else tiny,
  on one device: for tests of checkpoints, resume and evaluation."""

  model: ModelConfig
  data: object  # data.DataConfig
  mesh: object  # sharding.MeshConfig
  opt: object  # optimizer.OptimizerConfig
  cache: pathlib.Path  # one finished run per step count, for `trained`

  def train(self, model_dir, steps: int, **kw):
    """Trains to `steps` in `model_dir` (resuming from its checkpoints), batch 4, seed 0."""
    from hire_cli.runs import train
    return train.train(model_dir=str(model_dir), model=kw.pop("model", self.model),
                       data_cfg=self.data, opt=self.opt, mesh_cfg=self.mesh, train_steps=steps,
                       batch_size=4, seed=0, checkpoint_every=kw.pop("checkpoint_every", 2),
                       log_every=1, **kw)

  def trained(self, model_dir, steps: int):
    """`model_dir` as `train(model_dir, steps)` leaves it (fresh), copied from a run trained once
    per session: for tests that damage or continue a finished run, not ones that read its log."""
    done = self.cache / str(steps)
    if not done.is_dir():
      partial = self.cache / f"{steps}.partial"
      shutil.rmtree(partial, ignore_errors=True)
      self.train(partial, steps)
      partial.rename(done)
    shutil.copytree(done, model_dir, dirs_exist_ok=True)
    return model_dir

  def params(self, model_dir):
    """(step, graphdef, params) of the newest good checkpoint in `model_dir`."""
    from hire_cli.lib import checkpoint, sharding
    return checkpoint.restore_params(str(model_dir), self.model, sharding.make_mesh(self.mesh))


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> SmallRun:
  from hire_cli.lib import data, optimizer, sharding
  return SmallRun(
      model=ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32,
                        max_len=128),
      data=data.DataConfig(seq_len=128), mesh=sharding.MeshConfig(),
      opt=optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=2),
      cache=tmp_path_factory.mktemp("small_runs"))
