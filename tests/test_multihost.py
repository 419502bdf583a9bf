"""`hire train` as two processes (jax.distributed over localhost, gloo collectives on CPU) gives
the same run as one process with the same four devices."""

import pathlib
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hire_cli.lib import checkpoint, sharding
from hire_cli.nn.config import ModelConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # three `hire train` processes
TIMEOUT_S = 420
# A 2x2 mesh: the data axis spans the two processes, the model axis stays inside each.
ARGS = ["--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1", "--gin.ModelConfig.d_ff=32",
        "--gin.BATCH_SIZE=8", "--gin.EVAL_EVERY=0", "--gin.TRAIN_STEPS=3",
        "--gin.CHECKPOINT_EVERY=3", "--gin.WARMUP_STEPS=0", "--gin.LEARNING_RATE=1e-2",
        "--gin.MESH_MODEL=2"]
MODEL = ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=32, d_ff=32,
                    max_len=128)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(env, model_dir, log, extra=()):
  """`hire train` in the background with `env` (cpu_devices.env(n)); output goes to log.*."""
  with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
    return subprocess.Popen(
        [sys.executable, "-m", "hire_cli.cli.main", "train", f"--gin.MODEL_DIR={model_dir}", *ARGS,
         *extra], cwd=REPO, env=env, stdout=out, stderr=err)


def _wait_all(procs, logs):
  """Waits for every process; the first failure (or the deadline) kills the rest, since a peer
  of a dead process would wait for it until jax.distributed's own timeout."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      assert not failed and time.monotonic() < deadline, "\n".join(
          f"--- {log}: rc {p.poll()}\n{log.with_suffix('.out').read_text()[-2000:]}"
          f"{log.with_suffix('.err').read_text()[-3000:]}" for p, log in zip(procs, logs))
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, (log, log.with_suffix(".err").read_text()[-3000:])
  return [log.with_suffix(".out").read_text() for log in logs]


def _final_loss(stdout: str) -> float:
  m = re.search(r"Finished at step 3 of 3: train loss ([0-9.]+)", stdout)
  assert m, stdout
  return float(m.group(1))


def test_two_processes_match_one_process_with_the_same_devices(tmp_path, cpu_devices):
  multi, single = tmp_path / "multi", tmp_path / "single"
  port = _free_port()
  logs = [tmp_path / f"proc{i}" for i in range(2)]
  procs = [_start(cpu_devices.env(2), multi, logs[i], [f"--coordinator_address=127.0.0.1:{port}",
                                      "--num_processes=2", f"--process_id={i}"])
           for i in range(2)]
  out0, out1 = _wait_all(procs, logs)
  (alone,) = _wait_all([_start(cpu_devices.env(4), single, tmp_path / "single")],
                       [tmp_path / "single"])

  # Only process 0 reports; both runs see the same global batches, so the losses agree.
  assert "Finished" not in out1 and "Starting from scratch" not in out1
  assert abs(_final_loss(out0) - _final_loss(alone)) < 1e-4, (out0, alone)
  assert (multi / "config.gin").is_file()

  mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
  step_m, _, params_m = checkpoint.restore_params(str(multi), MODEL, mesh)
  step_s, _, params_s = checkpoint.restore_params(str(single), MODEL, mesh)
  assert step_m == step_s == 3
  for a, b in zip(jax.tree.leaves(params_m), jax.tree.leaves(params_s)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
