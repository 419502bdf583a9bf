"""The vocabulary without the input pipeline: `hire generate` and the benchmarks run where
TensorFlow and seqio are not installed (accelerator hosts). A SentencePiece `.model` encodes and
decodes as seqio's SentencePieceVocabulary does (ids past the pieces read as unknown, text ends
at EOS); a HF tokenizers `.json` (written by `hire import` for byte-level BPE models) the same way,
with the special tokens named by the `tokenizer_config.json` next to it."""

import functools
import json
import pathlib

import sentencepiece

from hire_cli import errors, paths


def _cut(ids, size: int, unk, eos) -> list[int]:
  clean = [unk if int(i) >= size and unk is not None else int(i) for i in ids]
  if eos is not None and eos >= 0 and eos in clean:
    clean = clean[:clean.index(eos) + 1]
  return clean


class Vocabulary:
  def __init__(self, path: str):
    self.path = path
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
    self.unk_id, self.vocab_size = self.sp.unk_id(), self.sp.GetPieceSize()

  def encode(self, text: str) -> list[int]:
    return self.sp.EncodeAsIds(text)

  def decode(self, ids) -> str:
    return self.sp.DecodeIds(_cut(ids, self.vocab_size, self.unk_id, self.eos_id))


class JsonVocabulary:
  """A HF `tokenizers` tokenizer.json; bos/eos/unk ids are -1 where tokenizer_config.json
  names none (or is missing). Control tokens are never read from text and decode to nothing."""

  def __init__(self, path: str):
    import tokenizers
    self.path = path
    try:
      self.tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
      raise errors.UserError(f"vocabulary {path} is not a HF tokenizers tokenizer.json ("
                             f"{' '.join(str(e).split())[:120]}); pass a tokenizer.json or a "
                             "SentencePiece .model") from None
    config_path = pathlib.Path(path).with_name("tokenizer_config.json")
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    self.tokenizer.encode_special_tokens = bool(config.get("split_special_tokens", True))
    self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
    self.bos_id, self.eos_id, self.unk_id, self.file_pad_id = (
        self._id(config.get(f"{k}_token")) for k in ("bos", "eos", "unk", "pad"))

  def _id(self, token) -> int:
    if isinstance(token, dict):  # HF writes AddedToken objects as {"content": ...}
      token = token.get("content")
    found = self.tokenizer.token_to_id(token) if token else None
    return -1 if found is None else found

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    unk = self.unk_id if self.unk_id >= 0 else None
    return self.tokenizer.decode(_cut(ids, self.vocab_size, unk, self.eos_id),
                                 skip_special_tokens=True)


# Keyed by path, and every imported model brings its own: a few recent ones are kept (a
# 256k-token one can take tens of MB).
@functools.lru_cache(maxsize=8)
def load(path: str = "") -> Vocabulary | JsonVocabulary:
  path = path or str(paths.default_vocab_path())
  if not pathlib.Path(path).is_file():
    raise errors.UserError(
        f"vocabulary {path} not found (or a folder); run `python data/build_vocab.py` or set "
        "VOCAB_PATH to a SentencePiece .model file or a tokenizers .json file")
  return JsonVocabulary(path) if path.endswith(".json") else Vocabulary(path)
