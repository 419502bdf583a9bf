"""seqio Tasks for pretraining, registered when this module is imported (as a T5X task module):
the shipped corpus `hire_corpus_lm`, and `lm1b_lm` and `c4_lm` for people who have those public
datasets in a TFDS data_dir. `text_files` is the built-in task over TRAIN_FILES / EVAL_FILES.

Each task reads text, tokenizes it with the SentencePiece vocabulary, appends EOS to each
document, then concatenates documents and splits the stream into full `targets` rows of the
requested length (packed LM features: every position is a real token, no padding). A module of
your own registers more with `add_lm_task`, `add_text_task` or plain `seqio.TaskRegistry.add`;
name it in MIXTURE_OR_TASK_MODULE and its tasks become valid values of TASK and EVAL_TASK.
"""

import difflib
import functools
import hashlib
import importlib

import seqio
import tensorflow as tf

from hire_cli import errors, paths
from hire_cli.lib import data_config, hf_vocab, text_source, tfds_corpus

PUBLIC_SOURCES = {
    "lm1b_lm": ("lm1b:1.1.0", "text"),
    "c4_lm": ("c4/en:3.1.0", "text"),
}
SHIPPED_TASK = data_config.SHIPPED_TASK
TEXT_TASK = data_config.TEXT_TASK

# TensorFlow only feeds data: keep it off the accelerators so JAX has all their memory.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised; nothing to do
  pass


Vocab = seqio.SentencePieceVocabulary | hf_vocab.TokenizersVocabulary


# Keyed by path, and every imported model brings its own: a few recent ones are kept (a
# 256k-token one can take tens of MB); the tasks registered with one keep their own reference.
@functools.lru_cache(maxsize=8)
def _vocab(path: str) -> Vocab:
  """A tokenizers .json (what `hire import` writes for byte-level BPE models) or a SentencePiece
  .model, which loads on first use."""
  if path.endswith(".json"):
    return hf_vocab.TokenizersVocabulary(path)
  return seqio.SentencePieceVocabulary(path)


def vocabulary(path: str = "") -> Vocab:
  path = path or str(paths.default_vocab_path())
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise errors.UserError(
        f"vocabulary {path} not found (or a folder); run `python data/build_vocab.py` or set "
        "VOCAB_PATH to a SentencePiece .model file or a tokenizers .json file")
  return _vocab(path)


def concat_and_split(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  """Concatenates the token stream of all examples and cuts it into rows of full length."""
  length = sequence_length["targets"]
  stream = dataset.map(lambda ex: ex["targets"]).unbatch()
  return stream.batch(length, drop_remainder=True).map(lambda t: {"targets": t})


def add_lm_task(name: str, source: seqio.DataSource, *, text_key: str = "text",
                vocab_path: str = "") -> str:
  """Registers (once) a packed-LM task over `source`'s `text_key` field; returns its name."""
  if name in seqio.TaskRegistry.names():
    return name
  seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos,
          concat_and_split,
      ],
      output_features={"targets": seqio.Feature(
          vocabulary=_vocab(vocab_path or str(paths.default_vocab_path())), add_eos=True)},
      metric_fns=[],
  )
  return name


def add_text_task(name: str, *, train_files=(), validation_files=(), text_key: str = "text",
                  vocab_path: str = "", settings: dict | None = None) -> str:
  """Registers a packed-LM task over text files (globs or folders of .txt, .jsonl, .jsonl.gz)."""
  source = text_source.TextFilesSource({"train": tuple(train_files),
                                        "validation": tuple(validation_files)}, text_key, settings)
  return add_lm_task(name, source, vocab_path=vocab_path)


def _builtin(name: str, vocab_path: str, tfds_data_dir: str) -> seqio.DataSource:
  if name == SHIPPED_TASK:
    return tfds_corpus.CorpusSource()
  tfds_name, _ = PUBLIC_SOURCES[name]
  return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir or None)


for _name in (SHIPPED_TASK, *PUBLIC_SOURCES):
  add_lm_task(_name, _builtin(_name, "", ""))


def import_modules(modules: tuple[str, ...]) -> None:
  """Imports MIXTURE_OR_TASK_MODULE's modules (they register their tasks on import)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except errors.UserError:
      raise
    except ModuleNotFoundError as e:
      if e.name and module.startswith(e.name):
        raise errors.UserError(f"MIXTURE_OR_TASK_MODULE {module!r} was not found; put the folder "
                               "that holds it on PYTHONPATH (or install it)") from None
      raise errors.UserError(f"MIXTURE_OR_TASK_MODULE {module!r} failed to import: it needs "
                             f"{e.name!r}, which is not installed") from None
    except Exception as e:  # noqa: BLE001 - the user's code: name it, one line
      raise errors.UserError(f"MIXTURE_OR_TASK_MODULE {module!r} failed to import: "
                             f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None


def user_facing_names() -> list[str]:
  """Registered tasks and mixtures, without this module's per-vocabulary and per-file copies
  and the downstream evaluation tasks."""
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  return sorted(n for n in names if "__" not in n and not n.startswith("hire_ds_")) + [TEXT_TASK]


def resolve(cfg: data_config.DataConfig, split: str) -> seqio.DatasetProviderBase:
  """The seqio task or mixture that `split` of `cfg` reads: TASK for train, EVAL_TASK (or TASK)
  otherwise, after importing MIXTURE_OR_TASK_MODULE. Built-in tasks are registered again under
  another name for another vocabulary, TFDS data_dir or set of files."""
  import_modules(cfg.modules)
  name, setting = cfg.task_for(split), "EVAL_TASK" if split != "train" and cfg.eval_task else "TASK"
  extra = (cfg.vocab_path if cfg.vocab_path != str(paths.default_vocab_path()) else "",
           cfg.tfds_data_dir)
  if name == TEXT_TASK:
    if not cfg.train_files and not cfg.eval_files:
      raise errors.UserError(f"{setting}={TEXT_TASK} reads TRAIN_FILES and EVAL_FILES, and both "
                             "are empty; e.g. --gin.TRAIN_FILES='my_text/*.txt'")
    spec = (cfg.train_files, cfg.eval_files, cfg.text_key, *extra)
    return seqio.get_mixture_or_task(add_text_task(
        f"{TEXT_TASK}__{hashlib.sha1(repr(spec).encode()).hexdigest()[:10]}",
        train_files=cfg.train_files, validation_files=cfg.eval_files, text_key=cfg.text_key,
        vocab_path=cfg.vocab_path, settings={"train": "TRAIN_FILES", "validation": "EVAL_FILES"}))
  if (name == SHIPPED_TASK or name in PUBLIC_SOURCES) and any(extra):
    variant = f"{name}__{hashlib.sha1(repr(extra).encode()).hexdigest()[:10]}"
    add_lm_task(variant, _builtin(name, *extra), text_key=PUBLIC_SOURCES.get(name, ("", "text"))[1],
                vocab_path=cfg.vocab_path)
    name = variant
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = user_facing_names()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    raise errors.UserError(f"{setting}={name!r} is not a registered seqio task or mixture; {hint}"
                           f"registered: {shown} (a module of yours that registers tasks goes in "
                           "MIXTURE_OR_TASK_MODULE)") from None
