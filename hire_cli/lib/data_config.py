"""Which data a run reads; light, so that runs that never read data need no input pipeline."""

import dataclasses
import hashlib
import re

from hire_cli import errors, validate

SHIPPED_TASK = "hire_corpus_lm"
TEXT_TASK = "text_files"  # the built-in task over TRAIN_FILES / EVAL_FILES


MACROS = {"modules": "MIXTURE_OR_TASK_MODULE", "train_files": "TRAIN_FILES",
          "eval_files": "EVAL_FILES"}


def _strings(value, field: str) -> tuple[str, ...]:
  """A string or a list of strings, as a tuple (gin gives lists; one glob needs no brackets)."""
  items = (value,) if isinstance(value, str) else tuple(value)
  if not all(isinstance(v, str) and v for v in items):
    raise errors.UserError(f"{MACROS[field]}={value!r} must be a non-empty string or a list of "
                           "them")
  return items


@dataclasses.dataclass(frozen=True)
class DataConfig:
  task: str = SHIPPED_TASK  # any registered seqio task or mixture (TASK)
  eval_task: str = ""  # the task whose validation split is evaluated; "" = task (EVAL_TASK)
  modules: str | list | tuple = ()  # modules imported first; they register tasks
  train_files: str | list | tuple = ()  # text_files: globs or folders (.txt/.jsonl/.jsonl.gz)
  eval_files: str | list | tuple = ()  # text_files: its validation split
  text_key: str = "text"  # text_files: the field of a .jsonl line that holds the text
  vocab_path: str = ""  # SentencePiece model; "" = data/vocab/hire_32k.model
  seq_len: int = 128  # tokens per row
  tfds_data_dir: str = ""  # TFDS data_dir for public tasks; "" = default
  max_rows: int = 0  # cap on rows materialised per split (0 = all); for huge public datasets

  def __post_init__(self):
    validate.fields(self)
    for field in MACROS:
      object.__setattr__(self, field, _strings(getattr(self, field), field))
    if not self.task:
      raise errors.UserError("TASK is empty; name a registered seqio task, e.g. "
                             f"{SHIPPED_TASK} or {TEXT_TASK}")

  def task_for(self, split: str) -> str:
    """Training reads TASK; evaluation (any other split) reads EVAL_TASK if set."""
    return self.eval_task or self.task if split != "train" else self.task


def eval_name(cfg: DataConfig) -> str:
  """The folder (under MODEL_DIR/eval and tb/eval) of an evaluation on `cfg`'s validation data:
  the task's name; for text files the name of the files and a hash of their globs."""
  task = cfg.task_for("validation")
  if task != TEXT_TASK:
    return task
  stems = "+".join(re.sub(r"\.(txt|jsonl|jsonl\.gz)$", "", g.rstrip("/").split("/")[-1])
                   for g in cfg.eval_files)
  slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", stems)[:40].strip("_.") or "files"
  digest = hashlib.sha1(repr((cfg.eval_files, cfg.text_key)).encode()).hexdigest()[:6]
  return f"{TEXT_TASK}-{slug}-{digest}"
