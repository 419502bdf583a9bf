"""Your own data: text files as a task (TASK=text_files, TRAIN_FILES / EVAL_FILES), row caches
keyed by what they read, and evaluations of other data in their own folder, recording the data
each number was measured on."""

import gzip
import json
import shutil

import pytest

from hire_cli import errors, paths
from hire_cli.cli import runner
from hire_cli.lib import data, text_source
from hire_cli.runs import compare

TINY = ["ModelConfig.d_model = 16", "ModelConfig.n_layers = 1", "ModelConfig.d_ff = 32",
        "BATCH_SIZE = 2", "SEQ_LEN = 32", "LATENCY_STEPS = 0", "DOWNSTREAM = False",
        "EVAL_BATCHES = 2", "EVAL_EVERY = 0"]


def _docs(n: int, source: str) -> list[str]:
  """The first n documents of one source of the shipped validation split (real English)."""
  with gzip.open(paths.corpus_dir() / "validation.jsonl.gz", "rt") as f:
    found = [json.loads(line)["text"] for line in f if f'"source": "{source}"' in line]
  return found[:n]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """A folder of nine .txt files."""
  root = tmp_path_factory.mktemp("my_text")
  for i, doc in enumerate(_docs(9, "austen")):
    (root / f"doc{i}.txt").write_text(doc[:3000])
  return root


def test_globs_and_folders_expand_to_each_file_once(folder, tmp_path):
  files = sorted(str(p) for p in folder.glob("*.txt"))
  assert text_source.expand((str(folder),), "TRAIN_FILES") == files
  assert text_source.expand((f"{folder}/doc1.txt", f"{folder}/*.txt"), "X") == [
      f"{folder}/doc1.txt"] + [f for f in files if not f.endswith("doc1.txt")]
  with pytest.raises(errors.UserError, match=r"EVAL_FILES: '.*/nope/\*.txt' matches no file"):
    text_source.expand((f"{tmp_path}/nope/*.txt",), "EVAL_FILES")
  (tmp_path / "a.csv").write_text("x")
  with pytest.raises(errors.UserError, match="a.csv is not a"):
    text_source.expand((f"{tmp_path}/a.*",), "TRAIN_FILES")


def test_jsonl_documents_under_the_text_key(tmp_path):
  path = tmp_path / "notes.jsonl.gz"
  with gzip.open(path, "wt") as f:
    f.write('{"body": "first note"}\n\n{"body": "second note"}\n')
  assert list(text_source.documents(str(path), "body")) == ["first note", "second note"]
  text_source.check_key(str(path), "body")
  with pytest.raises(errors.UserError, match="no text under 'text'; set TEXT_KEY"):
    text_source.check_key(str(path), "text")


def test_changed_text_is_read_again_not_served_from_the_cache(tmp_path):
  held = tmp_path / "held.txt"
  held.write_text(_docs(1, "austen")[0])
  cfg = data.DataConfig(task="text_files", eval_files=str(held), seq_len=32)
  before = data.load_rows(cfg, "validation")
  fp = data.record(cfg, "validation")["fingerprint"]
  held.write_text(_docs(1, "web")[0])  # same path, other text
  after = data.load_rows(cfg, "validation")
  assert data.record(cfg, "validation")["fingerprint"] != fp
  assert before.shape != after.shape or (before != after).any()
  assert data.record(cfg, "validation")["files"] == [str(held)]


@pytest.mark.slow
def test_train_on_a_folder_then_evaluate_other_text(folder, tmp_path):
  """The README's "Your own data": train the tiny model on a folder of .txt files, evaluate it
  on another file; changing that file's text changes the loss; another file gets its own
  folder and leaves the first evaluation as it was."""
  run = tmp_path / "run"
  own = ["TASK = 'text_files'", f"TRAIN_FILES = '{folder}'", f"MODEL_DIR = '{run}'"]
  assert runner.execute("train", None, [*TINY, *own, "TRAIN_STEPS = 3"]) == 0
  start = json.loads((run / "history.jsonl").read_text().splitlines()[0])
  assert start["data"]["train"]["task"] == "text_files"
  assert start["data"]["train"]["files"] == sorted(str(p) for p in folder.glob("*.txt"))

  held = tmp_path / "held.txt"
  held.write_text("\n\n".join(_docs(2, "web")))
  assert runner.execute("eval", None, [*TINY, *own, f"EVAL_FILES = '{held}'"]) == 0
  (name,) = [p.name for p in (run / "eval").iterdir()]
  assert name.startswith("text_files-held-")
  first = json.loads((run / "eval" / name / "metrics.json").read_text())
  assert first["data"]["validation"]["files"] == [str(held)]
  assert first["data"]["unigram_train"]["num_files"] == 9
  assert "held.txt" in (run / "eval" / name / "report.md").read_text()
  assert list((run / "tb" / "eval" / name).iterdir()), "TensorBoard under the data's own folder"

  held.write_text("\n\n".join(_docs(2, "brown")))  # other text behind the same eval task
  assert runner.execute("eval", None, [*TINY, *own, f"EVAL_FILES = '{held}'"]) == 0
  second = json.loads((run / "eval" / name / "metrics.json").read_text())
  assert second["loss"] != pytest.approx(first["loss"], abs=1e-6)
  assert second["data"]["validation"]["fingerprint"] != first["data"]["validation"]["fingerprint"]

  other = tmp_path / "other.txt"
  other.write_text("\n\n".join(_docs(2, "pydoc")))
  kept = (run / "eval" / name / "metrics.json").read_bytes()
  assert runner.execute("eval", None, [*TINY, *own, f"EVAL_FILES = '{other}'"]) == 0
  assert sorted(p.name.split("-")[1] for p in (run / "eval").iterdir()) == ["held", "other"]
  assert (run / "eval" / name / "metrics.json").read_bytes() == kept

  # `hire compare` asks which evaluation when a run has several, and flags different data.
  with pytest.raises(errors.UserError, match="evaluated on several datasets"):
    compare.compare_runs([str(run), str(run)], str(tmp_path / "cmp"))
  other_name = next(p.name for p in (run / "eval").iterdir() if p.name != name)
  table = compare.compare_runs([str(run), str(run)], str(tmp_path / "cmp"), data=name)
  assert table["data"][0] == table["data"][1] and table["data"][0].startswith("text_files")
  for copy, which in (("held_only", name), ("other_only", other_name)):
    shutil.copytree(run / "eval" / which, tmp_path / copy / "eval" / which)
  compare.compare_runs([str(tmp_path / "held_only"), str(tmp_path / "other_only")],
                       str(tmp_path / "cmp2"))
  assert "evaluated on different data" in (tmp_path / "cmp2.md").read_text()


def test_text_files_with_your_own_sentencepiece_model(folder, tmp_path):
  """VOCAB_PATH: text files tokenized with a user's SentencePiece model; the vocabulary is
  part of the cache key."""
  import sentencepiece
  sentencepiece.SentencePieceTrainer.train(
      input=str(next(folder.glob("*.txt"))), model_prefix=str(tmp_path / "mine"), vocab_size=200,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  mine = data.DataConfig(task="text_files", train_files=str(folder), seq_len=32,
                         vocab_path=str(tmp_path / "mine.model"))
  shipped = data.DataConfig(task="text_files", train_files=str(folder), seq_len=32)
  rows, shipped_rows = data.load_rows(mine, "train"), data.load_rows(shipped, "train")
  assert rows.max() < 200 <= shipped_rows.max()
  assert data.record(mine, "train")["fingerprint"] != data.record(shipped, "train")["fingerprint"]
