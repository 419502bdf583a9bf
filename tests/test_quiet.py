"""What reaches the console when a library has something to say that is not for the user: one
line from `hire`, the rest only under HIRE_VERBOSE=1."""

import dataclasses
import gzip
import json
import os
import subprocess
import sys

import pytest

NOISE = ("Traceback", "Exception ignored", "Event loop is closed", "ERROR:absl",
         "exception was never retrieved")


def _python(code: str, *argv: str, verbose: bool = False) -> str:
  """stdout and stderr of `python -c code *argv`, with or without HIRE_VERBOSE=1."""
  env = {k: v for k, v in os.environ.items() if k != "HIRE_VERBOSE"}
  env = {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **({"HIRE_VERBOSE": "1"} if verbose else {})}
  proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                        env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc.stdout + proc.stderr


def test_the_noise_held_back_is_dropped_and_verbose_keeps_it(capfd, caplog, monkeypatch):
  """What Orbax leaves behind when a restore fails: an absl error, and an object in a reference
  cycle whose finaliser raises (reported through the unraisable hook when the cycle is
  collected, which the block does before it ends)."""
  import logging

  from hire_cli import quiet

  class Callback:
    def __del__(self):
      raise RuntimeError("Event loop is closed")

  def noisy(cycle: bool):
    logging.getLogger("absl").error("Failed to read Metadata file")
    if cycle:
      callback = Callback()
      callback.me = callback
    print("Downloading and preparing dataset Unknown size")

  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  hook = sys.unraisablehook
  with quiet.library_noise_dropped(), quiet.library_prints_dropped():
    noisy(cycle=True)
  assert sys.unraisablehook is hook and not reported
  assert "Downloading" not in capfd.readouterr().out and "Failed to read" not in caplog.text
  monkeypatch.setenv("HIRE_VERBOSE", "1")
  with quiet.library_noise_dropped(), quiet.library_prints_dropped():
    assert sys.unraisablehook is hook
    noisy(cycle=False)  # a cycle collected outside the block would reach pytest's hook
  assert "Downloading" in capfd.readouterr().out and "Failed to read" in caplog.text


def test_a_read_abandoned_by_a_failed_restore_is_not_reported_later(caplog):
  """Orbax's abandoned checkpoint reads can fail after the block has ended; asyncio then reports
  "Task exception was never retrieved" when the task is collected. That report is dropped, any
  other asyncio report is kept (deterministic: the end-to-end test below depends on timing)."""
  import asyncio
  import gc

  from hire_cli import quiet

  async def async_deserialize():
    raise ValueError("DATA_LOSS reading params")

  async def a_task_of_the_user():
    raise ValueError("kept")

  with quiet.library_noise_dropped():
    pass
  loop = asyncio.new_event_loop()
  for coro in (async_deserialize, a_task_of_the_user):
    task = loop.create_task(coro())
    loop.run_until_complete(asyncio.sleep(0.01))
    del task
    gc.collect()
  loop.close()
  assert "a_task_of_the_user" in caplog.text, caplog.text
  assert "async_deserialize" not in caplog.text, caplog.text


def _damage(model_dir, step: int) -> None:
  """64 bytes flipped in the middle of every array file of checkpoint `step`."""
  for f in (model_dir / "checkpoints" / str(step) / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      data = bytearray(f.read_bytes())
      mid = len(data) // 2
      data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
      f.write_bytes(bytes(data))


RESTORE = """
import sys
from hire_cli.lib import checkpoint, sharding
from hire_cli.nn.config import ModelConfig
cfg = ModelConfig(vocab_size=32000, d_model=64, n_layers=2, n_heads=2, d_head=32, d_ff=256,
                  max_len=128)
for _ in range(3):  # the TensorStore tracebacks depend on timing: three tries to show them
  print("RESTORED", checkpoint.restore_params(sys.argv[1], cfg,
                                              sharding.make_mesh(sharding.MeshConfig()))[0])
import gc, time
time.sleep(2)  # the reads Orbax abandoned finish late: their reports come out here, if at all
gc.collect()
"""


def test_a_damaged_checkpoint_is_one_warning_line(tmp_path, small_run):
  """`hire eval` on a run whose newest checkpoint has bit rot in every array file: one line says
  what was skipped and why, then the previous step is used; no Orbax or asyncio tracebacks."""
  model = dataclasses.replace(small_run.model, d_model=64, n_layers=2, d_head=32, d_ff=256)
  small_run.train(tmp_path, 4, model=model)  # the tiny.gin model: enough reads in flight
  _damage(tmp_path, 4)
  out = _python(RESTORE, str(tmp_path))
  assert out.count("RESTORED 2") == 3, out
  warnings = [line for line in out.splitlines() if "WARNING" in line]
  assert len(warnings) == 3 and all("checkpoints/4 is damaged (it does not restore" in w
                                    for w in warnings), out
  assert not [line for line in out.splitlines() if line.startswith(NOISE) or any(
      n in line for n in NOISE)], out


def _tiny_corpus(folder) -> None:
  folder.mkdir()
  from hire_cli.lib import tfds_corpus
  for split in tfds_corpus.SPLITS:
    with gzip.open(folder / f"{split}.jsonl.gz", "wt") as f:
      f.write(json.dumps({"id": f"{split}-0", "source": "t", "text": "Some text."}) + "\n")


BUILD = """
import pathlib, sys
from hire_cli.lib import tfds_corpus
tfds_corpus.prepare(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
print("BUILT")
"""
FIRST_RUN_NOISE = ("has no dataset_info.json", "Downloading and preparing dataset",
                   "downloaded and prepared to")


@pytest.mark.parametrize("verbose", [False, True])
def test_the_first_corpus_build_prints_nothing(tmp_path, verbose):
  """A fresh clone's first command builds the corpus: TFDS's notices only under HIRE_VERBOSE=1
  (where they show the build really was a first one)."""
  _tiny_corpus(tmp_path / "corpus")
  out = _python(BUILD, str(tmp_path / "tfds"), str(tmp_path / "corpus"), verbose=verbose)
  assert "BUILT" in out and (tmp_path / "tfds" / "hire_corpus").is_dir(), out
  seen = [n for n in FIRST_RUN_NOISE if n in out]
  assert seen == (list(FIRST_RUN_NOISE) if verbose else []), out


@pytest.mark.slow
def test_two_first_runs_at_once_build_the_corpus_once(tmp_path):
  """Two commands started together on a fresh clone (or two test workers): one builds, the other
  waits on the lock and then finds the build done (under HIRE_VERBOSE=1 TFDS announces a build,
  so exactly one of the two announces it)."""
  _tiny_corpus(tmp_path / "corpus")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HIRE_VERBOSE": "1"}
  procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path / "tfds"),
                             str(tmp_path / "corpus")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 and "BUILT" in out for p, out in zip(procs, outs)), outs
  assert sum("Downloading and preparing dataset" in out for out in outs) == 1, outs
