"""Tasks from gin, T5X-style: the project's tasks registered on import, a module of the user's
own (MIXTURE_OR_TASK_MODULE) registering plain seqio tasks and mixtures that TASK then names."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from hire_cli import errors
from hire_cli.lib import data, downstream_tasks, tasks
from tests.conftest import REPO

MODULE = '''
"""A user's task module: plain seqio, one task per line file, and a mixture of the two."""
import seqio
from hire_cli.lib import tasks

def to_targets(dataset):
  return dataset.map(lambda line: {{"targets": line}})

for name, path in (("my_lines_lm", {a!r}), ("my_other_lm", {b!r})):
  seqio.TaskRegistry.add(
      name, source=seqio.TextLineDataSource({{"train": path, "validation": path}}),
      preprocessors=[to_targets, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={{"targets": seqio.Feature(tasks.vocabulary(), add_eos=True)}})
seqio.MixtureRegistry.add("my_mix", [("my_lines_lm", 1.0), ("my_other_lm", 1.0)])
'''


def _write_module(tmp_path, name: str) -> None:
  a, b = tmp_path / "a.txt", tmp_path / "b.txt"
  a.write_text("It is a truth universally acknowledged, that a single man.\n" * 40)
  b.write_text("In the beginning God created the heavens and the earth.\n" * 40)
  (tmp_path / f"{name}.py").write_text(MODULE.format(a=str(a), b=str(b)))


def test_importing_the_task_modules_registers_their_tasks():
  assert {tasks.SHIPPED_TASK, "lm1b_lm", "c4_lm"} <= set(seqio.TaskRegistry.names())
  assert "hire_ds_cloze_0shot" in seqio.TaskRegistry.names()
  assert downstream_tasks.task_name("cloze", 0, "") == "hire_ds_cloze_0shot"


@pytest.mark.slow
def test_a_user_module_on_pythonpath_is_used_through_gin(tmp_path):
  """`hire train --gin.MIXTURE_OR_TASK_MODULE=my_tasks --gin.TASK=my_lines_lm` with my_tasks.py
  on PYTHONPATH, as a user runs it; the run records the task and its fingerprint."""
  _write_module(tmp_path, "my_tasks")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
         "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
  run = tmp_path / "run"
  args = ["--gin.MIXTURE_OR_TASK_MODULE=my_tasks", "--gin.TASK=my_lines_lm",
          f"--gin.MODEL_DIR={run}", "--gin.TRAIN_STEPS=2", "--gin.EVAL_EVERY=2",
          "--gin.SEQ_LEN=16", "--gin.BATCH_SIZE=2", "--gin.ModelConfig.d_model=16",
          "--gin.ModelConfig.n_layers=1", "--gin.ModelConfig.d_ff=32"]
  proc = subprocess.run([sys.executable, "-m", "hire_cli.cli.main", "train", *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "eval at step 2: validation loss" in proc.stdout
  start = json.loads((run / "history.jsonl").read_text().splitlines()[0])
  assert start["data"]["train"]["task"] == "my_lines_lm"
  assert start["data"]["validation"]["fingerprint"] != "none"  # a file source: fingerprinted


def test_a_mixture_of_the_users_tasks(tmp_path, monkeypatch):
  _write_module(tmp_path, "my_mix_tasks")
  monkeypatch.syspath_prepend(str(tmp_path))
  cfg = data.DataConfig(task="my_mix", modules="my_mix_tasks", seq_len=16)
  rows = data.load_rows(cfg, "train")
  text = " ".join(tasks.vocabulary().decode(r.tolist()) for r in rows)
  assert "truth" in text and "beginning" in text, "both tasks of the mixture are read"
  one = data.load_rows(data.DataConfig(task="my_lines_lm", modules="my_mix_tasks", seq_len=16),
                       "train")
  assert len(rows) >= len(one) and not np.array_equal(rows[:len(one)], one)


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
  (tmp_path / "broken_tasks.py").write_text("raise RuntimeError('no corpus on this host')\n")
  (tmp_path / "needy_tasks.py").write_text("import not_installed_package\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(errors.UserError, match="'broken_tasks' failed to import: RuntimeError: no "
                     "corpus on this host"):
    tasks.import_modules(("broken_tasks",))
  with pytest.raises(errors.UserError, match="'needy_tasks' failed to import: it needs "
                     "'not_installed_package'"):
    tasks.import_modules(("needy_tasks",))
  with pytest.raises(errors.UserError, match="'nowhere_tasks' was not found; put the folder"):
    tasks.import_modules(("nowhere_tasks",))


def test_a_tokenizers_json_is_a_seqio_vocabulary_in_tf_data(tmp_path):
  """`hire import` writes a tokenizer.json for byte-level BPE models: tasks.vocabulary reads it
  as a seqio Vocabulary whose tf.data path gives the Python path's ids, ending text at EOS."""
  import gguf
  import tensorflow as tf

  from hire_cli.lib import gguf_vocab, hf_vocab
  from tests import test_gguf_vocab
  path = gguf_vocab.write_vocabulary(
      gguf.GGUFReader(test_gguf_vocab.write_bpe(tmp_path / "b.gguf")), tmp_path)
  vocab = tasks.vocabulary(str(path))
  assert isinstance(vocab, hf_vocab.TokenizersVocabulary)
  assert (vocab.eos_id, vocab.unk_id, vocab.bos_id, vocab.pad_id) == (2, 0, 1, 0)
  texts = ["hello world", "é ü 123", ""]
  want = [vocab.encode(t) for t in texts]
  ds = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
  assert [list(x.numpy()) for x in ds] == want
  assert vocab.encode_tf(tf.constant(texts)).to_list() == want
  ids = tf.constant([want[0] + [2] + want[0], want[0] + [0] * (len(want[0]) + 1)])
  assert [s.decode() for s in vocab.decode_tf(ids).numpy()] == ["hello world"] * 2
  assert vocab.decode(want[0] + [2, 5]) == "hello world" and vocab == tasks.vocabulary(str(path))
