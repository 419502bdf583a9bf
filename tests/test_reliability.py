"""A run that is killed, preempted or damaged loses at most one checkpoint interval."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hire_cli.lib import checkpoint, sharding
from hire_cli.nn.config import ModelConfig


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, capsys, small_run):
  straight, damaged = tmp_path / "straight", tmp_path / "damaged"
  small_run.trained(straight, 6)
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


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_saves_then_exits(tmp_path, sig, code):
  """SIGTERM (preemption) saves and exits 0; Ctrl-C saves and exits 130 with one line."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  args = [sys.executable, "-m", "hire_cli.cli.main", "train", f"--gin.MODEL_DIR={tmp_path}",
          "--gin.TRAIN_STEPS=100000", "--gin.CHECKPOINT_EVERY=100000", "--gin.EVAL_EVERY=0",
          "--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1",
          "--gin.BATCH_SIZE=2", "--gin.train.log_every=1"]
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("[3/") or time.time() > deadline:
      break
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  text = "".join(lines) + out
  assert proc.returncode == code, text + err
  assert f"{sig.name} received: saved checkpoint at step" in text, text
  if code == 0:  # not "Finished": the run has 100000 steps to go
    assert "Stopped early at step" in text and "rerun the same command to resume" in text, text
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and min(steps) >= 3
  if code == 130:
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "hire train: error: interrupted"), err


def _cli_train(model_dir, steps):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  return [sys.executable, "-m", "hire_cli.cli.main", "train", f"--gin.MODEL_DIR={model_dir}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_EVERY=2", "--gin.EVAL_EVERY=0",
          "--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1", "--gin.BATCH_SIZE=2",
          "--gin.train.log_every=1"], env


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  args, env = _cli_train(straight, 8)
  subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
  kill_after = int(np.random.default_rng(29).integers(3, 7))  # a step in 3..6, seeded: it reruns
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


def _flip_bytes(model_dir, step: int, n: int = 64) -> None:
  """Flips `n` bytes in the middle of the largest file of checkpoint `step` (bit rot)."""
  files = [f for f in (model_dir / "checkpoints" / str(step)).rglob("*") if f.is_file()]
  big = max(files, key=lambda f: f.stat().st_size)
  data = bytearray(big.read_bytes())
  mid = len(data) // 2
  data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
  big.write_bytes(bytes(data))


@pytest.mark.slow
def test_bit_flipped_latest_checkpoint_falls_back_and_ends_bitwise_equal(tmp_path, capsys,
                                                                         small_run):
  straight, flipped = tmp_path / "straight", tmp_path / "flipped"
  small_run.trained(straight, 6)
  small_run.trained(flipped, 4)
  _flip_bytes(flipped, 4)
  capsys.readouterr()
  small_run.train(flipped, 6)
  out = capsys.readouterr().out
  assert "checkpoints/4 is damaged" in out and "Resuming from checkpoint at step 2" in out, out
  assert (flipped / "damaged_checkpoints").is_dir()  # train sets it aside, keeps it
  _, _, a = small_run.params(straight)
  _, _, b = small_run.params(flipped)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checksums_catch_a_changed_value(tmp_path, small_run):
  """Bytes that still decode but differ from what was saved fail the checksum."""
  from hire_cli.lib import checkpoint
  small_run.trained(tmp_path, 2)
  mgr = checkpoint.manager(tmp_path)
  meta = checkpoint.read_meta(mgr, 2)
  step, graphdef, params = small_run.params(tmp_path)
  state = {"params": params}
  assert checkpoint.verify(state, meta) is None
  leaf = jax.tree.leaves(params)[0]
  changed = jax.tree.map(lambda x: x.at[(0,) * x.ndim].add(1e-3) if x is leaf else x, params)
  assert "checksum mismatch" in checkpoint.verify({"params": changed}, meta)
  nan = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(np.nan) if x is leaf else x, params)
  assert checkpoint.verify({"params": nan}, {}) .startswith("non-finite")
  mgr.close()


def _tree_bytes(folder):
  """Every file but the lock's record of its last holder."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
          if p.is_file() and p.name != ".lock"}


def test_eval_leaves_a_damaged_run_folder_unchanged(tmp_path, small_run, capsys):
  small_run.trained(tmp_path, 4)
  for f in (tmp_path / "checkpoints" / "4").rglob("*"):  # every file cut to a third
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  before = _tree_bytes(tmp_path / "checkpoints")
  step, _, _ = small_run.params(tmp_path)  # eval's params-only restore
  assert step == 2 and "checkpoints/4 is damaged" in capsys.readouterr().out
  assert _tree_bytes(tmp_path / "checkpoints") == before
  assert not (tmp_path / "damaged_checkpoints").exists()


@pytest.mark.slow
def test_every_checkpoint_damaged_refuses_then_starts_over_when_asked(tmp_path, small_run):
  from hire_cli import errors
  small_run.trained(tmp_path, 2)
  _flip_bytes(tmp_path, 2)
  before = _tree_bytes(tmp_path)
  with pytest.raises(errors.UserError, match="START_OVER=True"):
    small_run.train(tmp_path, 4)
  assert _tree_bytes(tmp_path) == before  # nothing changed, nothing restarted
  small_run.train(tmp_path, 4, start_over=True)
  assert (tmp_path / "checkpoints" / "4").is_dir() and (tmp_path / "damaged_checkpoints").is_dir()


@pytest.mark.slow
def test_second_trainer_is_refused_and_the_first_keeps_its_checkpoints(tmp_path, small_run):
  from hire_cli import errors
  from hire_cli.lib import lock
  small_run.trained(tmp_path, 2)
  before = _tree_bytes(tmp_path / "checkpoints")
  with lock.RunLock(tmp_path):  # a trainer that holds the folder
    with pytest.raises(errors.UserError, match=f"another `hire train` \\(pid {os.getpid()}"):
      small_run.train(tmp_path, 4)
  assert _tree_bytes(tmp_path / "checkpoints") == before
  small_run.train(tmp_path, 4)  # free again once the holder is done
  assert (tmp_path / "checkpoints" / "4").is_dir()


def test_the_lock_dies_with_its_process(tmp_path):
  from hire_cli import errors
  from hire_cli.lib import lock
  code = ("import sys, time; from hire_cli.lib import lock; lock.RunLock(sys.argv[1]).__enter__();"
          " print('held', flush=True); time.sleep(600)")
  proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(errors.UserError, match=f"pid {proc.pid}"):
      lock.RunLock(tmp_path).__enter__()
  finally:
    proc.kill()
    proc.wait()
  with lock.RunLock(tmp_path):  # SIGKILL left no stale lock
    pass
