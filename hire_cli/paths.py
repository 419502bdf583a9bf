"""Where the shipped configs and data live.

In a checkout (and an editable install) `configs/` and `data/` sit next to `hire_cli/`; a wheel
(`pip install .`) carries the same folders inside the package as `hire_cli/configs` and
`hire_cli/data` (pyproject.toml maps them). Other data is named in gin (TASK, TRAIN_FILES,
EVAL_FILES, VOCAB_PATH, evaluate.downstream_dir). What is built from the shipped data (the TFDS
corpus, tokenized rows) goes next to it in a checkout and under ~/.cache/hire for an installed
package, or where HIRE_TFDS_DIR says."""

import os
import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
INSTALLED = (PACKAGE_DIR / "configs").is_dir()  # a wheel install: configs/ is package data
# The folder that holds configs/ and data/ (the checkout's root, or the package when installed).
REPO_ROOT = PACKAGE_DIR if INSTALLED else PACKAGE_DIR.parent


def data_dir() -> pathlib.Path:
  return REPO_ROOT / "data"


def corpus_dir() -> pathlib.Path:
  return data_dir() / "corpus"


def default_vocab_path() -> pathlib.Path:
  return data_dir() / "vocab" / "hire_32k.model"


def cache_dir() -> pathlib.Path:
  """Where an installed package keeps what it builds (site-packages may be read-only)."""
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "hire"


def tfds_data_dir() -> pathlib.Path:
  """Where the TFDS builders of the shipped data are prepared (built offline on first use)."""
  if "HIRE_TFDS_DIR" in os.environ:
    return pathlib.Path(os.environ["HIRE_TFDS_DIR"])
  if INSTALLED:
    return cache_dir() / "tfds"
  return data_dir() / "tfds"
