import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from hire_cli import errors
from hire_cli.lib import data, tasks


@pytest.fixture(scope="module")
def val_rows():
  return data.load_rows(data.DataConfig(seq_len=64), "validation")


def test_shipped_task_yields_packed_rows():
  task = seqio.get_mixture_or_task(tasks.SHIPPED_TASK)  # registered on import
  assert set(task.splits) >= {"train", "validation", "test"}
  ds = task.get_dataset(sequence_length={"targets": 64}, split="validation", shuffle=False)
  batch = next(ds.batch(4, drop_remainder=True).as_numpy_iterator())
  targets = batch["targets"]
  assert targets.shape == (4, 64)
  assert (targets != 0).all(), "packed rows are full of real tokens, no padding"
  stream = np.concatenate([ex["targets"] for ex in ds.take(500).as_numpy_iterator()])
  assert (stream == 1).any(), "documents are separated by EOS"
  text = tasks.vocabulary().decode(targets[0].tolist())
  assert sum(w.isalpha() for w in text.split()) > 20, text


def test_rows_are_cached_and_deterministic(val_rows):
  again = data.load_rows(data.DataConfig(seq_len=64), "validation")
  np.testing.assert_array_equal(val_rows, again)
  assert val_rows.dtype == np.int32 and val_rows.shape[1] == 64


def test_lm_inputs_match_seqio_feature_converter(val_rows):
  ds = seqio.LMFeatureConverter(pack=False)(
      __import__("tensorflow").data.Dataset.from_tensor_slices({"targets": val_rows[:3]}),
      {"targets": 64})
  ex = [e for e in ds.as_numpy_iterator()]
  np.testing.assert_array_equal(data.lm_inputs(val_rows[:3]),
                                np.stack([e["decoder_input_tokens"] for e in ex]))


def test_lm_inputs_put_the_first_id_first_and_default_to_0():
  targets_BxL = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
  np.testing.assert_array_equal(data.lm_inputs(targets_BxL), [[0, 5, 6], [0, 8, 9]])
  bos_BxL = data.lm_inputs(targets_BxL, first=2)  # Gemma's bos_id
  np.testing.assert_array_equal(bos_BxL, [[2, 5, 6], [2, 8, 9]])
  assert bos_BxL.dtype == np.int32


def test_batch_stream_is_a_function_of_step_and_shards_cover_the_batch(val_rows):
  a = data.BatchStream(val_rows, 8, seed=3)
  b = data.BatchStream(val_rows, 8, seed=3)
  np.testing.assert_array_equal(a.batch(17), b.batch(17))  # no hidden iterator state
  assert not np.array_equal(a.batch(0), a.batch(1))
  shards = [data.BatchStream(val_rows, 8, 3, i, 2).batch(5) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(shards), a.batch(5))
  # One epoch visits every row once.
  steps = len(val_rows) // 8
  seen = np.concatenate([a.global_indices(s) for s in range(steps)])
  assert len(set(seen.tolist())) == len(seen)
  with pytest.raises(errors.UserError, match="processes"):
    data.BatchStream(val_rows, 3, 0, 0, 2)


def test_unigram_baseline_is_sane(val_rows):
  u = data.unigram_loss(val_rows, val_rows, 32000)
  assert 3.0 < u < np.log(32000)


def test_lm1b_task_with_mock_data():
  """The public-dataset path, for users who have lm1b in a TFDS data_dir."""
  with tfds.testing.mock_data(num_examples=20):
    task = seqio.get_mixture_or_task("lm1b_lm")
    ds = task.get_dataset(sequence_length={"targets": 16}, split="train", shuffle=False,
                          try_in_mem_cache=False)
    rows = [ex["targets"] for ex in ds.as_numpy_iterator()]
  assert rows and all(r.shape == (16,) for r in rows)


def test_unknown_task_is_a_user_error_with_a_did_you_mean():
  with pytest.raises(errors.UserError) as e:
    data.load_rows(data.DataConfig(task="hire_corpus_llm"), "train")
  assert "TASK='hire_corpus_llm' is not a registered seqio task" in str(e.value)
  assert "did you mean 'hire_corpus_lm'?" in str(e.value) and "lm1b_lm" in str(e.value)


def test_the_corpus_build_follows_its_files(tmp_path):
  """The TFDS build of the shipped corpus records the files it was made from: changed corpus
  files are built again, never read stale."""
  import gzip
  import json

  from hire_cli.lib import tfds_corpus
  corpus, built = tmp_path / "corpus", tmp_path / "tfds"
  corpus.mkdir()

  def write(text):
    for split in tfds_corpus.SPLITS:
      with gzip.open(corpus / f"{split}.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": f"{split}-0", "source": "t", "text": text}) + "\n")

  def read():
    ds = tfds_corpus.HireCorpus(data_dir=str(built)).as_dataset(split="train")
    return [ex["text"].decode() for ex in ds.as_numpy_iterator()]

  write("first text")
  tfds_corpus.prepare(built, corpus)
  assert read() == ["first text"]
  write("second text")
  tfds_corpus.prepare(built, corpus)
  assert read() == ["second text"]
