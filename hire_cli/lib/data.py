"""Batches for training and evaluation, drawn from a seqio task or mixture.

The task's packed rows are materialised once into a cached .npy array whose name holds a
fingerprint of everything that decides them (the files read and their contents, the task's
definition, the vocabulary, the row length): changed text is read again, never served stale. A
batch is then a pure function of (seed, step): resuming at step t gives exactly the batches an
uninterrupted run would have seen, and each process reads only its own rows.
"""

import dataclasses
import os
import pathlib

import numpy as np

from hire_cli import errors, paths
from hire_cli.lib import data_config

DataConfig = data_config.DataConfig  # where runs name it without the input pipeline
_RECORDS: dict = {}  # (cfg, split) -> what the rows were read from (record())


def input_pipeline():
  """(hire_cli.lib.tasks, seqio), imported when data is first read: TensorFlow and seqio load
  only in runs that read data, and a host without them gets one line saying so."""
  try:
    import seqio

    from hire_cli.lib import tasks
  except ImportError as e:
    raise errors.UserError(f"reading data needs the input pipeline, and {e.name} is not "
                           "installed here; install the package (pip install .) or run this "
                           "on a host that has it") from None
  return tasks, seqio


def check(cfg: DataConfig, split: str):
  """The task or mixture of `split`, its files listed and its vocabulary found: the cheap checks
  of load_rows, for runs to make before they write anything."""
  tasks, seqio = input_pipeline()
  tasks.vocabulary(cfg.vocab_path)  # fails early with a clear message
  provider = tasks.resolve(cfg, split)
  if "targets" not in provider.output_features:
    raise errors.UserError(f"task {provider.name} has no 'targets' feature; hire trains "
                           "decoder-only LMs on a task's `targets`")
  if split not in provider.splits:
    hint = ""
    if cfg.task_for(split) == data_config.TEXT_TASK:
      hint = ("; set EVAL_FILES (or, to train without validation, EVAL_EVERY=0)" if split !=
              "train" else "; set TRAIN_FILES")
    raise errors.UserError(f"task {cfg.task_for(split)} has no split {split!r}; it has "
                           f"{list(provider.splits)}{hint}")
  from hire_cli.lib import fingerprint
  files = fingerprint.files_of(provider, split)  # lists the globs: an empty one fails here
  return provider, files


def record(cfg: DataConfig, split: str) -> dict:
  """What `split` of `cfg` is read from: the task, the files, and the fingerprint that keys the
  cache of its rows ('none' for a source that cannot be fingerprinted)."""
  if (cfg, split) not in _RECORDS:
    _describe(cfg, split)
  return _RECORDS[(cfg, split)]


def _describe(cfg: DataConfig, split: str):
  from hire_cli.lib import fingerprint
  provider, files = check(cfg, split)
  fp = fingerprint.of(provider, split)
  rec = {"task": cfg.task_for(split), "seqio_name": provider.name, "split": split,
         "fingerprint": fp or "none", "seq_len": cfg.seq_len}
  if files:
    rec["files"], rec["num_files"] = files[:20], len(files)  # the fingerprint covers them all
  _RECORDS[(cfg, split)] = rec
  return provider, fp


def _cache_path(cfg: DataConfig, split: str, fp: str) -> pathlib.Path:
  name = f"{cfg.task_for(split)}-{split}-L{cfg.seq_len}-n{cfg.max_rows}-{fp[:16]}.npy"
  return paths.tfds_data_dir() / "arrays" / name


def load_rows(cfg: DataConfig, split: str) -> np.ndarray:
  """All packed rows of `split` as an int32 array of shape (N, seq_len): TASK's for train,
  EVAL_TASK's (or TASK's) for any other split."""
  tasks, seqio = input_pipeline()
  provider, fp = _describe(cfg, split)
  cache = _cache_path(cfg, split, fp) if fp else None
  if cache is not None and cache.is_file():
    return np.load(cache)
  ds = provider.get_dataset(sequence_length={"targets": cfg.seq_len}, split=split, shuffle=False,
                            seed=0, use_cached=False, try_in_mem_cache=False, num_epochs=1)
  # A task of our own yields full rows already; any other one is concatenated and split here.
  ds = tasks.concat_and_split(ds, {"targets": cfg.seq_len})
  if cfg.max_rows:
    ds = ds.take(cfg.max_rows)
  rows = [ex["targets"] for ex in ds.as_numpy_iterator()]
  if not rows:
    raise errors.UserError(
        f"split {split!r} of task {cfg.task_for(split)} gave no rows of {cfg.seq_len} tokens; "
        "the dataset is empty or shorter than one row")
  rows_NxL = np.stack(rows).astype(np.int32)
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")  # processes may share the cache folder
    np.save(tmp, rows_NxL)
    tmp.replace(cache)
  return rows_NxL


def lm_inputs(targets_BxL: np.ndarray, first: int = 0) -> np.ndarray:
  """Decoder inputs for LM targets: shifted right with `first` first (0 as
  seqio.LMFeatureConverter; a BOS model's bos_id, so each row is predicted from BOS on)."""
  return np.pad(targets_BxL[:, :-1], ((0, 0), (1, 0)), constant_values=first)


@dataclasses.dataclass
class BatchStream:
  """Deterministic batches: each epoch is a permutation of the rows seeded by (seed, epoch)."""
  rows_NxL: np.ndarray
  batch_size: int  # global batch
  seed: int = 0
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    if self.batch_size % self.process_count:
      raise errors.UserError(
          f"BATCH_SIZE={self.batch_size} does not divide over {self.process_count} processes; "
          "use a multiple of the process count")
    self._perm_cache = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perm_cache:
      self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
          len(self.rows_NxL))}
    return self._perm_cache[epoch]

  def global_indices(self, step: int) -> np.ndarray:
    n = len(self.rows_NxL)
    flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
    epochs, offsets = flat // n, flat % n
    return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offsets)])

  def batch(self, step: int) -> np.ndarray:
    """This process's rows of the global batch of `step`: (batch_size / process_count, L)."""
    idx = self.global_indices(step)
    per = self.batch_size // self.process_count
    return self.rows_NxL[idx[self.process_index * per:(self.process_index + 1) * per]]


def eval_batches(rows_NxL: np.ndarray, batch_size: int, max_batches: int):
  """Fixed, ordered validation batches (the same every time)."""
  n = min(len(rows_NxL) // batch_size, max_batches)
  return [rows_NxL[i * batch_size:(i + 1) * batch_size] for i in range(max(n, 1))]


def unigram_loss(train_NxL: np.ndarray, eval_NxL: np.ndarray, vocab_size: int) -> float:
  """Cross-entropy (nats/token) of an add-one unigram model of the train rows on `eval_NxL`."""
  counts = np.bincount(train_NxL.ravel(), minlength=vocab_size).astype(np.float64) + 1.0
  logp = np.log(counts / counts.sum())
  return float(-logp[eval_NxL.ravel()].mean())
