"""Fingerprints of what a seqio task or mixture reads, so that a cache keyed by one changes when
the data, the task's definition or the vocabulary does. A source whose data cannot be seen (a
function data source of your own) has no fingerprint, and its rows are never cached."""

import functools
import hashlib
import json

import seqio
import tensorflow as tf

from hire_cli.lib import text_source


def _gfile_signature(path: str) -> list:
  if not tf.io.gfile.exists(path):
    return [path]
  if not path.startswith(("gs://", "s3://")):
    return text_source.file_signature(path)
  st = tf.io.gfile.stat(path)
  return [path, st.length, st.mtime_nsec]


def source_signature(source, split: str):
  """What `split` of `source` reads, or None when that cannot be known."""
  if hasattr(source, "fingerprint"):
    return source.fingerprint(split)
  if isinstance(source, seqio.TfdsDataSource):
    sig = {"tfds": source.tfds_dataset.name, "data_dir": source.tfds_dataset.data_dir}
    try:  # the prepared files; a TFDS name:version alone is the fallback (versions are frozen)
      sig["files"] = [_gfile_signature(f) for f in source.list_shards(split)]
    except Exception:  # noqa: BLE001 - not prepared or not reachable: keep the name and version
      pass
    return sig
  if isinstance(source, seqio.FileDataSource):
    return {"files": [_gfile_signature(f) for f in source.list_shards(split)]}
  return None


def _describe_fn(fn) -> str:
  if isinstance(fn, functools.partial):
    return f"{_describe_fn(fn.func)}({fn.args!r}, {sorted(fn.keywords.items())!r})"
  name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
  code = getattr(fn, "__code__", None)  # a changed body (a lambda too) is another definition
  if code is not None:
    name += ":" + _code_hash(code)
  return name


def _code_hash(code) -> str:
  consts = [_code_hash(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
  return hashlib.sha1(code.co_code + repr((consts, code.co_names)).encode()).hexdigest()[:8]


def _vocab_signature(vocab) -> str:
  path = getattr(vocab, "sentencepiece_model_file", None) or getattr(
      vocab, "_sentencepiece_model_file", None)
  if path and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, "rb") as f:
      return "sentencepiece:" + hashlib.sha1(f.read()).hexdigest()
  path = getattr(vocab, "tokenizer_file", None)  # hf_vocab.TokenizersVocabulary
  if path and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, "rb") as f:
      ids = repr((vocab.eos_id, vocab.unk_id)).encode()  # from tokenizer_config.json
      return "tokenizers:" + hashlib.sha1(f.read() + ids).hexdigest()
  return f"{type(vocab).__name__}:{getattr(vocab, 'vocab_size', '?')}"


def describe(provider, split: str):
  """A JSON-able description of everything that decides `split`'s rows, or None."""
  if isinstance(provider, seqio.Mixture):
    parts = []
    for task in provider.tasks:
      part = describe(task, split)
      if part is None:
        return None
      parts.append([part, _describe_fn(provider.get_rate(task)) if callable(
          provider.get_rate(task)) else provider.get_rate(task)])
    return {"mixture": provider.name, "tasks": parts}
  source = source_signature(provider.source, split)
  if source is None:
    return None
  return {"source": source,  # the task's name is a label: the same definition, the same rows
          "preprocessors": [_describe_fn(p) for p in provider.preprocessors],
          "features": {k: [_vocab_signature(f.vocabulary), f.add_eos, f.dtype.name]
                       for k, f in sorted(provider.output_features.items())}}


def of(provider, split: str) -> str | None:
  desc = describe(provider, split)
  if desc is None:
    return None
  return hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def files_of(provider, split: str) -> list[str]:
  """The text files a text-file task (or the tasks of a mixture) reads for `split`."""
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  return [f for t in tasks if isinstance(t.source, text_source.TextFilesSource)
          and split in t.source.splits for f in t.source.files(split)]
