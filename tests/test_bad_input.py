"""Bad input: one line naming the problem and the fix, exit code 2, nothing saved damaged."""

import errno
import gzip
import pathlib

import orbax.checkpoint as ocp
import pytest

from hire_cli import paths
from hire_cli.cli import runner

TINY = ["ModelConfig.d_model = 16", "ModelConfig.n_layers = 1", "ModelConfig.d_ff = 32",
        "BATCH_SIZE = 2", "EVAL_EVERY = 0"]
SOFTMAX = "configs/experiments/tiny_hire_softmax.gin"
FFN = "configs/experiments/tiny_hire_ffn.gin"
CORPUS = paths.corpus_dir() / "validation.jsonl.gz"  # a .jsonl.gz of real text with a 'text' key


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny dense run with one checkpoint (step 2), the victim of the checkpoint cases."""
  run = tmp_path_factory.mktemp("trained")
  assert runner.execute("train", None, [*TINY, f"MODEL_DIR = '{run}'", "TRAIN_STEPS = 2"]) == 0
  return run


def _case(tmp, trained):
  """(command, gin files, bindings, expected message fragment) per case."""
  run = f"MODEL_DIR = '{tmp}'"
  old = f"MODEL_DIR = '{trained}'"
  not_writable = tmp / "a_file"
  not_writable.write_text("")
  return {
      "missing gin file": ("train", ["configs/experiments/nope.gin"], [], "not found"),
      "misspelled gin file": ("train", ["configs/experiments/tiny_dnse.gin"], [], "did you mean"),
      "unknown gin binding": ("train", None, ["ModelConfg.d_model = 3"], "unknown gin name"),
      "gin syntax error": ("train", None, ["TRAIN_STEPS = = 3"], "bad gin config"),
      "required macro unset": ("train", ["configs/models/tiny.gin", "configs/runs/pretrain.gin"],
                               [], "MODEL_DIR is required"),
      "k > V": ("train", [SOFTMAX], [*TINY, run, "HiReSoftmaxConfig.k = 40000"], "k=40000"),
      "k' < k": ("train", [SOFTMAX], [*TINY, run, "HiReSoftmaxConfig.k_prime = 8"], "k_prime=8"),
      "rank >= d": ("train", [SOFTMAX], [*TINY, run, "softmax/ApproxConfig.rank = 16"],
                    "rank=16"),
      "bits not 4 or 8": ("train", [SOFTMAX], [*TINY, run, "softmax/ApproxConfig.bits = 3"],
                          "bits=3"),
      "unknown top-k method": ("train", [SOFTMAX], [*TINY, run,
                                                    "HiReSoftmaxConfig.topk_method = 'fast'"],
                               "topk_method"),
      "group size not dividing F": ("train", [FFN], [*TINY, run, "HiReFfnConfig.group_size = 5"],
                                    "group_size=5"),
      "unknown activation": ("train", None, [*TINY, run, "ModelConfig.activation = 'tanh'"],
                             "activation"),
      "zero steps": ("train", None, [*TINY, run, "TRAIN_STEPS = 0"], "TRAIN_STEPS=0"),
      "negative steps": ("train", None, [*TINY, run, "TRAIN_STEPS = -5"], "TRAIN_STEPS=-5"),
      "zero batch": ("train", None, [*TINY, run, "BATCH_SIZE = 0"], "BATCH_SIZE=0"),
      "mesh larger than devices": ("train", None, [*TINY, run, "MESH_DATA = 4"],
                                   "needs 4 devices"),
      "sequence longer than the model": ("train", None, [*TINY, run, "SEQ_LEN = 4096"],
                                         "SEQ_LEN=4096"),
      "unknown task": ("train", None, [*TINY, run, "TASK = 'hire_corpus'"],
                       "did you mean 'hire_corpus_lm'?"),
      "unknown eval task": ("eval", None, [*TINY, old, "EVAL_TASK = 'lm1b'"],
                            "EVAL_TASK='lm1b' is not a registered seqio task"),
      "text files without files": ("train", None, [*TINY, run, "TASK = 'text_files'"],
                                   "TRAIN_FILES and EVAL_FILES"),
      "empty train glob": ("train", None, [*TINY, run, "TASK = 'text_files'",
                                           "TRAIN_FILES = '/nonexistent/*.txt'"],
                           "TRAIN_FILES: '/nonexistent/*.txt' matches no file"),
      "empty eval glob": ("train", None, [*TINY, run, "TASK = 'text_files'", "EVAL_EVERY = 5",
                                          f"TRAIN_FILES = '{CORPUS}'",
                                          "EVAL_FILES = ['/nonexistent/held/*.txt']"],
                          "EVAL_FILES: '/nonexistent/held/*.txt' matches no file"),
      "empty eval glob at eval": ("eval", None, [*TINY, old, "EVAL_TASK = 'text_files'",
                                                 "EVAL_FILES = '/nonexistent/*.jsonl'"],
                                  "EVAL_FILES: '/nonexistent/*.jsonl' matches no file"),
      "wrong text key": ("train", None, [*TINY, run, "TASK = 'text_files'",
                                         f"TRAIN_FILES = '{CORPUS}'", "TEXT_KEY = 'body'"],
                         "no text under 'body'"),
      "task module not found": ("train", None, [*TINY, run,
                                                "MIXTURE_OR_TASK_MODULE = 'no_such_tasks'"],
                                "MIXTURE_OR_TASK_MODULE 'no_such_tasks' was not found"),
      "missing vocabulary": ("train", None, [*TINY, run, "VOCAB_PATH = '/nonexistent.model'"],
                             "vocabulary /nonexistent.model not found"),
      "vocabulary is a folder": ("train", None, [*TINY, run, "VOCAB_PATH = '/'"],
                                 "vocabulary / not found (or a folder)"),
      "vocabulary larger than the model": ("train", None, [*TINY, run,
                                                           "ModelConfig.vocab_size = 1000"],
                                           "vocab_size"),
      "checkpoint of another shape": ("train", None, [*TINY, old, "ModelConfig.d_model = 24",
                                                      "TRAIN_STEPS = 4"], "different model"),
      "checkpoint of another vocabulary size": ("eval", None, [*TINY, old,
                                                               "ModelConfig.vocab_size = 32001"],
                                                "vocab_size"),
      "MODEL_DIR not writable": ("train", None, [*TINY, f"MODEL_DIR = '{not_writable}/run'",
                                                 "TRAIN_STEPS = 2"], "not writable"),
      "eval without checkpoints": ("eval", None, [*TINY, run], "no checkpoints"),
      "prompt longer than the context": ("bench-latency", None, [*TINY, old,
                                                                 "CONTEXT_LEN = 500"],
                                         "max_len"),
      "generate prompt longer than the context": ("generate", None, [
          *TINY, old, "generate_text.prompt = '" + "word " * 200 + "'"], "exceeds the model's"),
      "generate without a prompt": ("generate", None, [*TINY, old], "no prompt"),
      "bad INIT": ("bench-latency", None, [*TINY, old, "INIT = 'zeros'"], "INIT='zeros'"),
      "post-hoc without a HiRE variant": ("train", None, [*TINY, run, f"POST_HOC_FROM = "
                                                          f"'{trained}'"], "no HiRE layer"),
      # Issue 20's traceback cases: each one line and exit 2, nothing written.
      "unclosed gin expression": ("train", None, [*TINY, run, "TRAIN_STEPS = ((("], "bad gin"),
      "steps not a number": ("train", None, [*TINY, run, "TRAIN_STEPS = 'abc'"], "integer"),
      "steps a float": ("train", None, [*TINY, run, "TRAIN_STEPS = 1e12"], "integer"),
      "negative sequence length": ("train", None, [*TINY, run, "SEQ_LEN = -1"], "positive"),
      "checkpoint every 0 steps": ("train", None, [*TINY, run, "CHECKPOINT_EVERY = 0"],
                                   "CHECKPOINT_EVERY=0"),
      "learning rate not a number": ("train", None, [*TINY, run, "LEARNING_RATE = 'abc'"],
                                     "LEARNING_RATE='abc' must be a number"),
      "model not a config": ("train", None, [*TINY, run, "MODEL = 'abc'"], "ModelConfig"),
      "fractional batch": ("train", None, [*TINY, run, "BATCH_SIZE = 2.5"], "BATCH_SIZE=2.5"),
      "empty MODEL_DIR": ("train", None, [*TINY, "MODEL_DIR = ''"], "MODEL_DIR is empty"),
      "dtype change on resume": ("train", None, [*TINY, old,
                                                 "ModelConfig.param_dtype = 'bfloat16'"],
                                 "param_dtype"),
      "top-k over the vocabulary": ("generate", None, [*TINY, old, "TOP_K = 100000",
                                                       "generate_text.prompt = 'Hi'"], "TOP_K"),
      "zero decode steps": ("bench-latency", None, [*TINY, old, "DECODE_STEPS = 0"],
                            "DECODE_STEPS=0"),
      "zero eval batch": ("eval", None, [*TINY, old, "BATCH_SIZE = 0"], "BATCH_SIZE=0"),
      "zero eval batches": ("eval", None, [*TINY, old, "EVAL_BATCHES = 0"], "EVAL_BATCHES=0"),
      "eval longer than the model": ("eval", None, [*TINY, old, "SEQ_LEN = 4096"], "SEQ_LEN"),
      "bench batch 0": ("bench-latency", None, [*TINY, old, "BENCH_BATCHES = [0]"],
                        "BENCH_BATCHES"),
      "prompt not UTF-8": ("generate", None, [*TINY, old, "generate_text.prompt = 'a\\udcff'"],
                           "not valid UTF-8"),
      "bench no batches": ("bench-latency", None, [*TINY, old, "BENCH_BATCHES = []"],
                           "BENCH_BATCHES"),
      "post-hoc HiRE-FFN on a dense FFN": ("train", [FFN], [*TINY, run, "ffn/ApproxConfig.rank = 4",
                                                            f"POST_HOC_FROM = "
                                                            f"'{trained}'"], "has a dense FFN"),
  }


CASES = sorted([
    "missing gin file", "misspelled gin file", "unknown gin binding", "gin syntax error",
    "required macro unset", "k > V", "k' < k", "rank >= d", "bits not 4 or 8",
    "unknown top-k method", "group size not dividing F", "unknown activation", "zero steps",
    "negative steps", "zero batch", "mesh larger than devices", "sequence longer than the model",
    "unknown task", "unknown eval task", "text files without files", "empty train glob",
    "empty eval glob", "empty eval glob at eval", "wrong text key", "task module not found",
    "missing vocabulary", "vocabulary is a folder", "vocabulary larger than the model",
    "checkpoint of another shape", "post-hoc HiRE-FFN on a dense FFN",
    "checkpoint of another vocabulary size",
    "MODEL_DIR not writable", "eval without checkpoints", "prompt longer than the context",
    "bad INIT", "generate prompt longer than the context", "generate without a prompt",
    "post-hoc without a HiRE variant", "unclosed gin expression", "steps not a number",
    "steps a float", "negative sequence length", "checkpoint every 0 steps",
    "learning rate not a number", "model not a config", "fractional batch", "empty MODEL_DIR",
    "dtype change on resume", "top-k over the vocabulary", "zero decode steps",
    "zero eval batch", "zero eval batches", "eval longer than the model", "bench batch 0",
    "bench no batches", "prompt not UTF-8"])


def _snapshot(run: pathlib.Path):
  """Every file of a run folder: a refused run changes none (eval/, bench/ included)."""
  return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, tmp_path, trained, capsys):
  command, files, bindings, fragment = _case(tmp_path, trained)[name]
  before = _snapshot(trained)
  capsys.readouterr()
  assert runner.execute(command, files, bindings) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"hire {command}: error:"), err
  assert fragment in err[0], err[0]
  assert _snapshot(trained) == before, "a bad run touched an existing run folder"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"], "a refused run wrote files"


def test_empty_dataset(tmp_path, capsys):
  """Text files that hold less than one row: one line, exit 2, no run folder."""
  (tmp_path / "empty.txt").write_text("")
  (tmp_path / "short.txt").write_text("Too short for a row.")
  for files in ("empty.txt", "*.txt"):
    assert runner.execute("train", None, [*TINY, f"MODEL_DIR = '{tmp_path}/run'",
                                          "TASK = 'text_files'",
                                          f"TRAIN_FILES = '{tmp_path}/{files}'"]) == 2
    assert "gave no rows of 128 tokens" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_empty_or_missing_corpus(tmp_path):
  """The shipped corpus's TFDS build refuses missing or empty split files (e.g. a partial
  `make data`) instead of building an empty dataset."""
  from hire_cli import errors
  from hire_cli.lib import tfds_corpus
  with pytest.raises(errors.UserError, match="corpus split"):
    tfds_corpus.prepare(tmp_path / "tfds", tmp_path)
  for split in tfds_corpus.SPLITS:
    with gzip.open(tmp_path / f"{split}.jsonl.gz", "wt") as f:
      f.write("")
  with pytest.raises(errors.UserError, match="is empty"):
    tfds_corpus.prepare(tmp_path / "tfds", tmp_path)
  assert not (tmp_path / "tfds").exists()


def test_disk_full_while_saving(trained, monkeypatch, capsys, tmp_path):
  """A save that fails (simulated ENOSPC) stops with exit 2; earlier checkpoints are intact."""
  import shutil
  run = tmp_path / "run"
  shutil.copytree(trained, run)
  before = _snapshot(run / "checkpoints")

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  assert runner.execute("train", None, [*TINY, f"MODEL_DIR = '{run}'", "TRAIN_STEPS = 4"]) == 2
  err = capsys.readouterr().err
  assert "No space left on device" in err and "resumes from step 2" in err
  assert _snapshot(run / "checkpoints") == before
