"""seqio Tasks for pretraining: the shipped corpus, and public TFDS LM datasets (lm1b, c4).

Each task reads text, tokenizes it with the SentencePiece vocabulary, appends EOS to each
document, then concatenates documents and splits the stream into full `targets` rows of the
requested length (packed LM features: every position is a real token, no padding).
"""

import functools

import seqio
import tensorflow as tf

from hire_cli import errors, paths
from hire_cli.lib import data_config, tfds_corpus

# Public datasets for people who have them in a TFDS data_dir (TFDS_DATA_DIR or --gin binding).
PUBLIC_SOURCES = {
    "lm1b_lm": ("lm1b:1.1.0", "text"),
    "c4_lm": ("c4/en:3.1.0", "text"),
}
SHIPPED_TASK = data_config.SHIPPED_TASK

# TensorFlow only feeds data: keep it off the accelerators so JAX has all their memory.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised; nothing to do
  pass


@functools.lru_cache(maxsize=None)
def vocabulary(path: str = "") -> seqio.SentencePieceVocabulary:
  path = path or str(paths.default_vocab_path())
  if not tf.io.gfile.exists(path):
    raise errors.UserError(
        f"vocabulary {path} not found; run `python data/build_vocab.py` or set VOCAB_PATH to a "
        "SentencePiece .model file")
  return seqio.SentencePieceVocabulary(path)


def concat_and_split(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  """Concatenates the token stream of all examples and cuts it into rows of full length."""
  length = sequence_length["targets"]
  stream = dataset.map(lambda ex: ex["targets"]).unbatch()
  return stream.batch(length, drop_remainder=True).map(lambda t: {"targets": t})


def _register(name: str, source: seqio.DataSource, text_key: str, vocab_path: str) -> str:
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
      output_features={
          "targets": seqio.Feature(vocabulary=vocabulary(vocab_path), add_eos=True)
      },
      metric_fns=[],
  )
  return name


def task_name(base: str, vocab_path: str) -> str:
  """Tasks are registered per vocabulary; the shipped vocabulary keeps the plain name."""
  if not vocab_path or vocab_path == str(paths.default_vocab_path()):
    return base
  return f"{base}__{abs(hash(vocab_path)) % 10**8}"


def get_task(base: str, *, vocab_path: str = "", tfds_data_dir: str = "") -> seqio.Task:
  """Registers (once) and returns the seqio Task `base` for the given vocabulary."""
  name = task_name(base, vocab_path)
  if base == SHIPPED_TASK:
    data_dir = tfds_data_dir or str(tfds_corpus.prepare())
    source = seqio.TfdsDataSource(tfds_name="hire_corpus:1.0.0", tfds_data_dir=data_dir)
    _register(name, source, "text", vocab_path)
  elif base in PUBLIC_SOURCES:
    tfds_name, text_key = PUBLIC_SOURCES[base]
    source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir or None)
    _register(name, source, text_key, vocab_path)
  else:
    known = [SHIPPED_TASK, *PUBLIC_SOURCES]
    raise errors.UserError(f"unknown task {base!r}; set TASK to one of {known}")
  return seqio.get_mixture_or_task(name)
