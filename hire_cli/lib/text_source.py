"""Text files as a seqio DataSource: globs or folders of `.txt` (one document per file) and
`.jsonl` / `.jsonl.gz` (one document per line, its text under a key). The files are listed when
read, and `fingerprint(split)` hashes what is read (path, size and content) so that a cache keyed
by it changes when the text does."""

import glob
import gzip
import hashlib
import json
import os
import pathlib

import seqio
import tensorflow as tf

from hire_cli import errors

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz")
HASH_LIMIT = 64 << 20  # files up to this size are hashed whole; larger ones by size and mtime


def expand(globs: tuple[str, ...], setting: str) -> list[str]:
  """The files of `globs` (a folder means the supported files below it), sorted, each once."""
  files = []
  for g in globs:
    path = os.path.expanduser(g)
    found = sorted(glob.glob(path, recursive=True))
    if len(found) == 1 and os.path.isdir(found[0]):
      found = sorted(str(p) for p in pathlib.Path(found[0]).rglob("*")
                     if p.is_file() and p.name.endswith(SUFFIXES))
    found = [f for f in found if os.path.isfile(f)]
    if not found:
      raise errors.UserError(f"{setting}: {g!r} matches no file; give a glob or a folder of "
                             f"{'/'.join(SUFFIXES)} files")
    bad = [f for f in found if not f.endswith(SUFFIXES)]
    if bad:
      raise errors.UserError(f"{setting}: {bad[0]} is not a {'/'.join(SUFFIXES)} file; narrow "
                             f"the glob {g!r}")
    files += [f for f in found if f not in files]
  return files


def _open(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", errors="replace")
  return open(path, encoding="utf-8", errors="replace")


def check_key(path: str, text_key: str) -> None:
  """The first line of a .jsonl file is JSON with a string under `text_key` (TEXT_KEY)."""
  with _open(path) as f:
    line = f.readline()
  try:
    ok = isinstance(json.loads(line).get(text_key), str) if line.strip() else True
  except (json.JSONDecodeError, AttributeError):
    raise errors.UserError(f"{path}: the first line is not a JSON object; a .jsonl file holds "
                           "one JSON object a line") from None
  if not ok:
    raise errors.UserError(f"{path}: the first line has no text under {text_key!r}; set "
                           "TEXT_KEY to the field that holds the text")


def documents(path: str, text_key: str):
  with _open(path) as f:
    if not path.endswith((".jsonl", ".jsonl.gz")):
      yield f.read()
      return
    for line in f:
      if line.strip():
        yield json.loads(line)[text_key]


def file_signature(path: str) -> list:
  st = os.stat(path)
  if st.st_size > HASH_LIMIT:
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]
  return [os.path.abspath(path), st.st_size,
          hashlib.sha1(pathlib.Path(path).read_bytes()).hexdigest()]


class TextFilesSource(seqio.FunctionDataSource):
  """Splits of text files, each given by globs; yields {"text": document}."""

  def __init__(self, split_globs: dict[str, tuple[str, ...]], text_key: str = "text",
               settings: dict[str, str] | None = None):
    self.split_globs = {s: tuple(g) for s, g in split_globs.items() if g}
    self.text_key = text_key
    self.settings = settings or {}  # split -> the gin setting that gave it, for error messages
    super().__init__(dataset_fn=self._dataset, splits=list(self.split_globs))

  def files(self, split: str) -> list[str]:
    files = expand(self.split_globs[split], self.settings.get(split, f"{split} files"))
    for f in files:
      if f.endswith((".jsonl", ".jsonl.gz")):
        check_key(f, self.text_key)
    return files

  def _dataset(self, split, shuffle_files=False, seed=None):
    del shuffle_files, seed  # the order of the files; rows are shuffled by the batch stream
    files = self.files(split)

    def gen():
      for path in files:
        for doc in documents(path, self.text_key):
          yield {"text": doc}

    return tf.data.Dataset.from_generator(
        gen, output_signature={"text": tf.TensorSpec((), tf.string)})

  def fingerprint(self, split: str) -> dict:
    return {"files": [file_signature(f) for f in self.files(split)], "text_key": self.text_key}
