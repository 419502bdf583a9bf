"""Where the shipped data lives. Other data is named in gin (TASK, TRAIN_FILES, EVAL_FILES,
VOCAB_PATH, evaluate.downstream_dir); HIRE_TFDS_DIR moves the built corpus and the row caches."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def data_dir() -> pathlib.Path:
  return REPO_ROOT / "data"


def corpus_dir() -> pathlib.Path:
  return data_dir() / "corpus"


def default_vocab_path() -> pathlib.Path:
  return data_dir() / "vocab" / "hire_32k.model"


def tfds_data_dir() -> pathlib.Path:
  """Where the TFDS builders of the shipped data are prepared (built offline on first use)."""
  return pathlib.Path(os.environ.get("HIRE_TFDS_DIR", data_dir() / "tfds"))
