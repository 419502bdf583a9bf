"""The tokenizer of a GGUF file, written as a SentencePiece .model ('llama') or a tokenizers .json
('gpt2'), on tiny files written here. Expected ids are read off the piece tables; the real files
are held to llama.cpp by benchmarks/tokenizer_parity.py."""

import gguf
import numpy as np
import pytest
import sentencepiece

from hire_cli import errors
from hire_cli.lib import gguf_vocab, vocab

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6
# Gemma's layout: pad, eos, bos, unk first; then bytes; user-defined pieces hold real spaces.
SPM_HEAD = [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", CONTROL),
            ("<start_of_turn>", CONTROL), ("\n", USER_DEFINED), ("  ", USER_DEFINED)]
# Merged pieces with their scores (higher merges first): "hello" is h+e, l+l, ll+o, he+llo.
SPM_MERGED = [("he", -1.0), ("ll", -2.0), ("llo", -3.0), ("hello", -4.0), ("▁w", -5.0),
              ("or", -6.0), ("▁wor", -7.0), ("ld", -8.0), ("▁world", -9.0)]
SPM_CHARS = ["▁", "h", "e", "l", "o", "w", "r", "d", "<", ">"]


def _write(path, arch_fields: dict) -> str:
  w = gguf.GGUFWriter(str(path), "llama")
  for key, (value, kind, sub) in arch_fields.items():
    w.add_key_value(key, value, kind, sub)
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def _ids(**kw) -> dict:
  t = gguf.GGUFValueType
  return {f"tokenizer.ggml.{k}": (v, t.BOOL if isinstance(v, bool) else t.UINT32, None)
          for k, v in kw.items()}


def spm_table(byte_type=BYTE):
  pieces = [(p, 0.0, k) for p, k in SPM_HEAD]
  pieces += [(f"<0x{b:02X}>", 0.0, byte_type) for b in range(256)]
  pieces += [(p, s, NORMAL) for p, s in SPM_MERGED]
  pieces += [(p, -100.0 - i, NORMAL) for i, p in enumerate(SPM_CHARS)]
  return pieces


def write_spm(path, *, byte_type=BYTE, add_space_prefix=False) -> str:
  t = gguf.GGUFValueType
  pieces = spm_table(byte_type)
  fields = {"tokenizer.ggml.model": ("llama", t.STRING, None),
            "tokenizer.ggml.tokens": ([p for p, _, _ in pieces], t.ARRAY, t.STRING),
            "tokenizer.ggml.scores": ([s for _, s, _ in pieces], t.ARRAY, t.FLOAT32),
            "tokenizer.ggml.token_type": ([k for _, _, k in pieces], t.ARRAY, t.INT32),
            **_ids(bos_token_id=2, eos_token_id=1, unknown_token_id=3, padding_token_id=0,
                   add_bos_token=True, add_space_prefix=add_space_prefix)}
  return _write(path, fields)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (openai/gpt-2 encoder.py)."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  out, n = {b: chr(b) for b in keep}, 0
  for b in range(256):
    if b not in out:
      out[b], n = chr(256 + n), n + 1
  return out


BYTE_CHARS = _bytes_to_unicode()
BPE_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
              "1 2", "12 3"]


def bpe_table() -> tuple[list[str], list[str]]:
  """SmolLM2's layout: control tokens first, then the 256 bytes, then merges' results; a few
  hundred filler merges (pairs of letters) so the merge table is not trivially short."""
  pieces = BPE_SPECIAL + [BYTE_CHARS[b] for b in range(256)]
  merges = list(BPE_MERGES)
  letters = "abcdfgijkmnpqstuvxyz"  # letters no expected string uses
  merges += [f"{a} {b}" for a in letters for b in letters]
  pieces += ["".join(m.split(" ")) for m in merges]
  return pieces, merges


def write_bpe(path, *, pre="smollm", model="gpt2") -> str:
  t = gguf.GGUFValueType
  pieces, merges = bpe_table()
  types = [CONTROL] * len(BPE_SPECIAL) + [NORMAL] * (len(pieces) - len(BPE_SPECIAL))
  fields = {"tokenizer.ggml.model": (model, t.STRING, None),
            "tokenizer.ggml.pre": (pre, t.STRING, None),
            "tokenizer.ggml.tokens": (pieces, t.ARRAY, t.STRING),
            "tokenizer.ggml.token_type": (types, t.ARRAY, t.INT32),
            "tokenizer.ggml.merges": (merges, t.ARRAY, t.STRING),
            **_ids(bos_token_id=1, eos_token_id=2, unknown_token_id=0, padding_token_id=2,
                   add_bos_token=False)}
  return _write(path, fields)


def _load(gguf_path, out_dir):
  return vocab.load(str(gguf_vocab.write_vocabulary(gguf.GGUFReader(gguf_path), out_dir)))


@pytest.fixture
def spm(tmp_path):
  path = gguf_vocab.write_vocabulary(gguf.GGUFReader(write_spm(tmp_path / "s.gguf")), tmp_path)
  assert path.name == "tokenizer.model"
  return vocab.load(str(path))


def _spm_ids():
  return {p: i for i, (p, _, _) in enumerate(spm_table())}


def test_spm_ids_are_the_piece_tables(spm):
  ids = _spm_ids()
  assert spm.encode("hello") == [ids["hello"]]
  assert spm.encode("hello world") == [ids["hello"], ids["▁world"]]  # no dummy prefix
  assert spm.encode("hello  hello") == [ids["hello"], ids["  "], ids["hello"]]  # user-defined
  assert spm.encode("hello\n\n") == [ids["hello"], ids["\n"], ids["\n"]]
  assert spm.encode("Zé") == [ids["<0x5A>"], ids["<0xC3>"], ids["<0xA9>"]]  # byte fallback
  # a control token's text is text: never its id
  assert ids["<start_of_turn>"] not in spm.encode("<start_of_turn>hello")


def test_spm_special_ids_and_round_trip(spm):
  assert (spm.bos_id, spm.eos_id, spm.unk_id) == (2, 1, 3)
  assert spm.sp.pad_id() == 0 and spm.vocab_size == len(spm_table())
  for text in ["hello world", "  hello\n\tworld  ", "é ü 日本語 🙂", "1234567", ""]:
    assert spm.decode(spm.encode(text)) == text
  ids = _spm_ids()
  assert spm.decode([ids["hello"], 1, ids["▁world"]]) == "hello"  # text ends at EOS


@pytest.mark.parametrize("defect", ["byte_as_normal", "dummy_prefix"])
def test_spm_planted_defects_are_caught(tmp_path, defect):
  """A wrong type mapping or a dummy prefix changes the ids the checks above expect."""
  path = write_spm(tmp_path / "s.gguf", byte_type=NORMAL if defect == "byte_as_normal" else BYTE,
                   add_space_prefix=defect == "dummy_prefix")
  out = vocab.Vocabulary(str(gguf_vocab.write_vocabulary(gguf.GGUFReader(path), tmp_path)))
  ids = _spm_ids()
  assert (out.encode("hello world") != [ids["hello"], ids["▁world"]]
          or out.encode("Zé") != [ids["<0x5A>"], ids["<0xC3>"], ids["<0xA9>"]])


def test_user_defined_spaces_become_the_escape_character(tmp_path):
  proto = gguf_vocab.sentencepiece_model(gguf.GGUFReader(write_spm(tmp_path / "s.gguf")))
  kinds = {p.piece: p.type for p in proto.pieces}
  assert kinds["▁▁"] == proto.pieces[0].USER_DEFINED and "  " not in kinds
  assert proto.normalizer_spec.add_dummy_prefix is False
  assert not proto.normalizer_spec.remove_extra_whitespaces
  sp = sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())
  assert sp.unk_id() == 3 and sp.IsUnknown(3)  # the file's unk, though typed control there


@pytest.fixture
def bpe(tmp_path):
  path = gguf_vocab.write_vocabulary(gguf.GGUFReader(write_bpe(tmp_path / "b.gguf")), tmp_path)
  assert path.name == "tokenizer.json" and (tmp_path / "tokenizer_config.json").is_file()
  return vocab.load(str(path))


def _bpe_ids():
  return {p: i for i, p in enumerate(bpe_table()[0])}


def test_bpe_ids_are_the_piece_tables(bpe):
  ids = _bpe_ids()
  assert bpe.encode("hello world") == [ids["hello"], ids["Ġworld"]]
  assert bpe.encode("é") == [ids[BYTE_CHARS[0xC3]], ids[BYTE_CHARS[0xA9]]]
  assert bpe.encode("123") == [ids["1"], ids["2"], ids["3"]]  # smollm splits every digit
  assert bpe.encode("<|im_end|>") != [2]  # control tokens are not read from text
  assert set(bpe.encode("<|endoftext|> <|im_start|>")).isdisjoint({0, 1, 2})


def test_bpe_pre_tokenizer_follows_the_file(tmp_path):
  ids = _bpe_ids()
  gpt2 = _load(write_bpe(tmp_path / "g.gguf", pre="gpt-2"), tmp_path / "g")
  assert gpt2.encode("123") == [ids["123"]]  # no digit split: the merges apply
  assert gpt2.encode("hello world") == [ids["hello"], ids["Ġworld"]]


def test_bpe_special_ids_and_round_trip(bpe):
  assert (bpe.bos_id, bpe.eos_id, bpe.unk_id, bpe.file_pad_id) == (1, 2, 0, 2)
  for text in ["hello world", "  hello\n\tworld  ", "é ü 日本語 🙂", "1234567", "a <|im_end|>"]:
    assert bpe.decode(bpe.encode(text)) == text
  ids = _bpe_ids()
  assert bpe.decode([ids["hello"], 2, ids["Ġworld"]]) == "hello"  # ends at EOS, shown as ""
  assert bpe.decode([ids["hello"], 10**6]) == "hello"  # past the vocabulary: unk (control)


def test_unknown_pre_tokenizer_and_model_are_one_line_errors(tmp_path):
  with pytest.raises(errors.UserError, match=r"tokenizer.ggml.pre='tekken'.*supported: default"):
    gguf_vocab.write_vocabulary(gguf.GGUFReader(write_bpe(tmp_path / "p.gguf", pre="tekken")),
                                tmp_path)
  with pytest.raises(errors.UserError, match=r"tokenizer.ggml.model is 'bert'") as e:
    gguf_vocab.write_vocabulary(gguf.GGUFReader(write_bpe(tmp_path / "m.gguf", model="bert")),
                                tmp_path)
  assert "\n" not in str(e.value)
