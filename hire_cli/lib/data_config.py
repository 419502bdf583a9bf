"""Which data a run reads; light, so that runs that never read data need no input pipeline."""

import dataclasses
import hashlib
import re

from hire_cli import errors, validate

SHIPPED_TASK = "hire_corpus_lm"
TEXT_TASK = "text_files"  # the built-in task over TRAIN_FILES / EVAL_FILES
TFDS_TASKS = ("lm1b_lm", "c4_lm")  # the built-in tasks that read tfds_data_dir (tasks.py)


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
    _refuse_unread(self)

  def task_for(self, split: str) -> str:
    """Training reads TASK; evaluation (any other split) reads EVAL_TASK if set."""
    return self.eval_task or self.task if split != "train" else self.task


def _refuse_unread(cfg: DataConfig) -> None:
  """A data setting that the chosen tasks do not read is refused, never silently ignored (files
  given without TASK=text_files would train on the shipped corpus)."""
  def name(field):
    return validate.setting("DataConfig", field)

  val_field = "eval_task" if cfg.eval_task else "task"
  train, val = (name("task"), cfg.task), (name(val_field), cfg.task_for("validation"))
  tasks = {cfg.task, cfg.task_for("validation")}
  unread = []
  if cfg.train_files and cfg.task != TEXT_TASK:
    unread.append(("train_files", [train], f"add --gin.{name('task')}={TEXT_TASK}"))
  if cfg.eval_files and val[1] != TEXT_TASK:
    unread.append(("eval_files", [val], f"add --gin.{name('eval_task')}={TEXT_TASK}"))
  if cfg.text_key != "text" and TEXT_TASK not in tasks:
    unread.append(("text_key", [train, val], f"it is read by {TEXT_TASK}; add --gin."
                   f"{name('task')}={TEXT_TASK} or --gin.{name('eval_task')}={TEXT_TASK}"))
  if cfg.tfds_data_dir and not tasks & set(TFDS_TASKS):
    unread.append(("tfds_data_dir", [train, val], f"it is read by {' and '.join(TFDS_TASKS)} "
                   f"(TFDS datasets); e.g. add --gin.{name('task')}={TFDS_TASKS[0]}"))
  for field, readers, fix in unread:
    shown = list(dict.fromkeys(f"{n}={t!r}" for n, t in readers))
    who = f"{shown[0]} does not" if len(shown) == 1 else f"neither {shown[0]} nor {shown[1]}"
    raise errors.UserError(f"{name(field)} is set but {who} read{'s' * (len(shown) > 1)} it; "
                           f"{fix}")


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
