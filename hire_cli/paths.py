"""Where the shipped data lives. Override with HIRE_DATA_DIR (e.g. a copy on a bucket or NFS)."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("HIRE_DATA_DIR", REPO_ROOT / "data"))


def corpus_dir() -> pathlib.Path:
  return data_dir() / "corpus"


def default_vocab_path() -> pathlib.Path:
  return data_dir() / "vocab" / "hire_32k.model"


def tfds_data_dir() -> pathlib.Path:
  """Where the TFDS builders of the shipped data are prepared (built offline on first use)."""
  return pathlib.Path(os.environ.get("HIRE_TFDS_DIR", data_dir() / "tfds"))
