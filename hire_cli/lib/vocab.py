"""The SentencePiece vocabulary without the input pipeline: `hire generate` and the benchmarks
run where TensorFlow and seqio are not installed (accelerator hosts). It encodes and decodes as
seqio's SentencePieceVocabulary does (ids past the pieces read as unknown, text ends at EOS)."""

import functools
import pathlib

import sentencepiece

from hire_cli import errors, paths


class Vocabulary:
  def __init__(self, path: str):
    self.path = path
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)

  def encode(self, text: str) -> list[int]:
    return self.sp.EncodeAsIds(text)

  def decode(self, ids) -> str:
    size, unk, eos = self.sp.GetPieceSize(), self.sp.unk_id(), self.sp.eos_id()
    clean = [unk if int(i) >= size else int(i) for i in ids]
    if eos >= 0 and eos in clean:
      clean = clean[:clean.index(eos) + 1]
    return self.sp.DecodeIds(clean)


@functools.lru_cache(maxsize=None)
def load(path: str = "") -> Vocabulary:
  path = path or str(paths.default_vocab_path())
  if not pathlib.Path(path).is_file():
    raise errors.UserError(
        f"vocabulary {path} not found (or a folder); run `python data/build_vocab.py` or set VOCAB_PATH to a "
        "SentencePiece .model file")
  return Vocabulary(path)
