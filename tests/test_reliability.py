"""A run that is killed, preempted or damaged loses at most one checkpoint interval."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from hire_cli.lib import checkpoint, sharding
from hire_cli.nn.config import ModelConfig


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, capsys, small_run):
  straight, damaged = tmp_path / "straight", tmp_path / "damaged"
  small_run.train(straight, 6)
  shutil.copytree(straight, damaged)
  shutil.rmtree(damaged / "checkpoints" / "6")
  for f in (damaged / "checkpoints" / "4").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # a partially written save
  capsys.readouterr()
  small_run.train(damaged, 6)
  out = capsys.readouterr().out
  assert "checkpoints/4 is damaged" in out, out
  assert "Resuming from checkpoint at step 2" in out
  _, _, a = small_run.params(straight)
  _, _, b = small_run.params(damaged)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_and_exits_zero(tmp_path):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  args = [sys.executable, "-m", "hire_cli.cli.main", "train", f"--gin.MODEL_DIR={tmp_path}",
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


def _cli_train(model_dir, steps):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  return [sys.executable, "-m", "hire_cli.cli.main", "train", f"--gin.MODEL_DIR={model_dir}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_EVERY=2", "--gin.EVAL_EVERY=0",
          "--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1", "--gin.BATCH_SIZE=2",
          "--gin.train.log_every=1"], env


def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  args, env = _cli_train(straight, 8)
  subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
  kill_after = int(np.random.default_rng().integers(3, 7))  # a random step
  args, env = _cli_train(killed, 8)
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=env)
  for line in proc.stdout:
    if line.startswith(f"[{kill_after}/"):
      break
  proc.kill()  # SIGKILL: no handler runs
  proc.wait(timeout=60)
  out = subprocess.run(args, env=env, check=True, capture_output=True, text=True, timeout=300)
  assert "Resuming from checkpoint at step" in out.stdout, out.stdout
  # The model _cli_train trains: configs/models/tiny.gin with its overrides.
  cfg = ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=32, d_ff=256,
                    max_len=128)
  mesh = sharding.make_mesh(sharding.MeshConfig())
  _, _, a = checkpoint.restore_params(str(straight), cfg, mesh)
  _, _, b = checkpoint.restore_params(str(killed), cfg, mesh)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
