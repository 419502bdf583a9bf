"""The tokenizer inside a GGUF file, written out as a file this project's vocabularies read.

`tokenizer.ggml.model` 'llama' (SentencePiece-style: Gemma, Llama 2) becomes a SentencePiece
`tokenizer.model`; 'gpt2' (byte-level BPE: SmolLM2, Llama 3, Qwen2) becomes a HF `tokenizers`
`tokenizer.json` plus the HF `tokenizer_config.json` that names its special tokens. Both
tokenize text as llama.cpp does with special tokens not parsed (`tokenize(special=False)`),
which benchmarks/tokenizer_parity.py checks on the real files.
"""

import json
import pathlib

from hire_cli import errors

SPM_FILE, BPE_FILE, BPE_CONFIG = "tokenizer.model", "tokenizer.json", "tokenizer_config.json"
# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), applied one after
# the other, each splitting the pieces the last one left (matches and the text between them).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# name -> (regexes, ignore_merges: a word that is a whole token is taken as it is)
PRE_TOKENIZERS = {
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], False),
    "gpt-2": ([_GPT2], False),
    "smollm": ([r"\p{N}", _GPT2], False),
    "llama-bpe": ([_LLAMA3], True),
    "qwen2": ([_QWEN2], False),
}
_PRE_ALIASES = {"gpt2": "gpt-2", "llama3": "llama-bpe", "llama-v3": "llama-bpe", "": "default"}
# GGUF token types (gguf.TokenType) -> SentencePiece piece types, by name.
_SPM_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
_CONTROL, _USER_DEFINED = 3, 4


def field(reader, key: str, default=None):
  """The value of metadata `key` (a list for arrays), or `default` when the file lacks it."""
  f = reader.fields.get(key)
  return default if f is None else f.contents()


def special_ids(reader) -> dict:
  """bos/eos/unk/pad ids as the file names them (None where it names none)."""
  keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
          "pad": "padding_token_id"}
  return {k: field(reader, f"tokenizer.ggml.{v}") for k, v in keys.items()}


def write_vocabulary(reader, out_dir) -> pathlib.Path:
  """Writes the tokenizer of `reader` (a gguf.GGUFReader) into out_dir; returns its path."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  kind = field(reader, "tokenizer.ggml.model")
  if kind == "llama":
    path = out / SPM_FILE
    path.write_bytes(sentencepiece_model(reader).SerializeToString())
    _check_spm(path, special_ids(reader))
    return path
  if kind == "gpt2":
    path = out / BPE_FILE
    byte_level_bpe(reader).save(str(path))
    (out / BPE_CONFIG).write_text(json.dumps(_bpe_config(reader), indent=1) + "\n")
    return path
  raise errors.UserError(f"the GGUF file's tokenizer.ggml.model is {kind!r}; only 'llama' "
                         "(SentencePiece-style) and 'gpt2' (byte-level BPE) tokenizers can be "
                         "imported")


def sentencepiece_model(reader):
  """A SentencePiece BPE ModelProto that tokenizes as llama.cpp's SPM tokenizer does."""
  from sentencepiece import sentencepiece_model_pb2 as sp_pb2
  pieces, scores = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.scores")
  types = field(reader, "tokenizer.ggml.token_type")
  if pieces is None or scores is None or types is None:
    raise errors.UserError("the GGUF file's 'llama' tokenizer lacks tokens, scores or token_type;"
                           " re-convert it with llama.cpp's convert_hf_to_gguf.py")
  ids = special_ids(reader)
  kinds = sp_pb2.ModelProto.SentencePiece.Type
  model = sp_pb2.ModelProto()
  for i, (piece, score, kind) in enumerate(zip(pieces, scores, types)):
    p = model.pieces.add()
    # llama.cpp's converter writes user-defined pieces with spaces where SentencePiece, which
    # matches them after escaping whitespace, needs the escape character.
    p.piece = piece.replace(" ", "\u2581") if kind == _USER_DEFINED else piece
    p.score = float(score)
    name = _SPM_TYPES.get(int(kind), "NORMAL")
    if (i == ids["unk"]) != (name == "UNKNOWN"):  # SentencePiece wants exactly one: the file's
      name = "UNKNOWN" if i == ids["unk"] else "CONTROL"
    p.type = kinds.Value(name)
  spec = model.trainer_spec
  spec.model_type = sp_pb2.TrainerSpec.BPE
  spec.vocab_size = len(pieces)
  spec.byte_fallback = any(int(k) == 6 for k in types)
  for k in ("bos", "eos", "unk", "pad"):
    i = ids[k]
    setattr(spec, f"{k}_id", -1 if i is None else int(i))
    if i is not None:
      setattr(spec, f"{k}_piece", pieces[int(i)])
  norm = model.normalizer_spec
  norm.name = "identity"  # llama.cpp normalizes nothing but the spaces it escapes
  norm.add_dummy_prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
  norm.remove_extra_whitespaces = False
  norm.escape_whitespaces = True
  return model


def _check_spm(path: pathlib.Path, ids: dict) -> None:
  import sentencepiece
  sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
  got = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id()}
  want = {k: -1 if v is None else int(v) for k, v in ids.items()}
  if got != want:
    raise errors.UserError(f"the GGUF file's special tokens {want} are not control tokens in its "
                           f"vocabulary (SentencePiece reads {got}); fix tokenizer.ggml.token_type")


def pre_tokenizer_name(reader) -> str:
  name = field(reader, "tokenizer.ggml.pre", "")
  name = _PRE_ALIASES.get(name, name)
  if name not in PRE_TOKENIZERS:
    raise errors.UserError(f"the GGUF file's pre-tokenizer tokenizer.ggml.pre={name!r} is not "
                           f"supported; supported: {', '.join(sorted(PRE_TOKENIZERS))}")
  return name


def byte_level_bpe(reader):
  """A HF tokenizers byte-level BPE that tokenizes as llama.cpp's BPE tokenizer does."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers
  regexes, ignore_merges = PRE_TOKENIZERS[pre_tokenizer_name(reader)]
  pieces, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
  merges = field(reader, "tokenizer.ggml.merges")
  if pieces is None or merges is None:
    raise errors.UserError("the GGUF file's 'gpt2' tokenizer lacks tokens or merges; re-convert "
                           "it with llama.cpp's convert_hf_to_gguf.py")
  types = types or [1] * len(pieces)
  bpe = models.BPE({p: i for i, p in enumerate(pieces)}, [tuple(m.split(" ", 1)) for m in merges],
                   ignore_merges=ignore_merges)
  tok = tokenizers.Tokenizer(bpe)
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Split(tokenizers.Regex(r), behavior="isolated") for r in regexes]
      + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  # Control tokens decode to nothing and are never read from text (llama.cpp's special=False);
  # user-defined tokens are matched in the text before the pre-tokenizer, as llama.cpp does.
  tok.add_tokens([tokenizers.AddedToken(p, special=False, normalized=False)
                  for p, k in zip(pieces, types) if int(k) == _USER_DEFINED])
  tok.add_special_tokens([tokenizers.AddedToken(p, special=True, normalized=False)
                          for p, k in zip(pieces, types) if int(k) == _CONTROL])
  tok.encode_special_tokens = True
  return tok


def _bpe_config(reader) -> dict:
  """HF's tokenizer_config.json: the special tokens by name (the vocabulary reads their ids)."""
  pieces, ids = field(reader, "tokenizer.ggml.tokens"), special_ids(reader)
  config = {"tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
            "split_special_tokens": True}
  for k, i in ids.items():
    config[f"{k}_token"] = None if i is None else pieces[int(i)]
  return config
