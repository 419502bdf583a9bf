"""A run that is killed, preempted or damaged loses at most one checkpoint interval."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from hire_cli import sharding, train
from tests.test_train import DATA, MESH, OPT, SMALL, _params, _run


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
  straight, damaged = tmp_path / "straight", tmp_path / "damaged"
  _run(straight, 6)
  shutil.copytree(straight, damaged)
  shutil.rmtree(damaged / "checkpoints" / "6")
  for f in (damaged / "checkpoints" / "4").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # a partially written save
  capsys.readouterr()
  _run(damaged, 6)
  out = capsys.readouterr().out
  assert "checkpoints/4 is damaged" in out, out
  assert "Resuming from checkpoint at step 2" in out
  _, _, a = _params(straight)
  _, _, b = _params(damaged)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_and_exits_zero(tmp_path):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  args = [sys.executable, "-m", "hire_cli.main", "train", f"--gin.MODEL_DIR={tmp_path}",
          "--gin.TRAIN_STEPS=100000", "--gin.CHECKPOINT_EVERY=100000", "--gin.EVAL_EVERY=0",
          "--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1",
          "--gin.BATCH_SIZE=2", "--gin.train.log_every=1"]
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("[3/") or time.time() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  text = "".join(lines) + out
  assert proc.returncode == 0, text
  assert "SIGTERM received: saved checkpoint at step" in text, text
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and min(steps) >= 3
