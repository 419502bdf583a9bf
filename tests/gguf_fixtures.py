"""Tiny GGUF files of the two families `hire import` reads, written the way llama.cpp's converter
writes the real ones (tensor names, shapes, layouts, metadata keys of Gemma 3 270M and
SmolLM2-135M), with random weights small enough for a unit test.

Both files are deterministic byte for byte for a given seed: tests/reference/*.npz store the
sha256 of the file llama.cpp ran on, and tests/test_gguf_fixtures.py checks it still matches.
Changing anything here means remaking the references (tests/reference/README.md).
"""

import pathlib

import gguf
import numpy as np
from gguf.quants import quantize

# llama: SmolLM2's layout. Q/K rows permuted by the converter, SwiGLU, tied embeddings, no BOS.
TINY_LLAMA = dict(
    arch="llama", n_layer=3, d_model=64, d_ff=128, n_head=4, n_kv_head=2, head_dim=16,
    rope_base=1e4, norm_eps=1e-5, context_length=256, bos_id=1, eos_id=2, add_bos=False,
    vocab_size=3 + 256 + 48, tied_embeddings=True, embedding_type="Q8_0")

# gemma3: Gemma 3 270M's layout. llama.cpp's pattern of 6: layer i is global iff i % 6 == 5, the
# others see the last `sliding_window` positions (p_q - p_k < window) with rope base 1e4 (llama.cpp
# default, no GGUF key); the global layer uses rope.freq_base. QK-norm, pre and post norms (all
# stored with the converter's +1), GeGLU (tanh GELU), embeddings scaled by sqrt(d_model), queries
# by head_dim**-0.5. head_dim * n_head != d_model, as in the real model.
TINY_GEMMA3 = dict(
    arch="gemma3", n_layer=6, d_model=64, d_ff=128, n_head=4, n_kv_head=2, head_dim=32,
    rope_base=1e6, rope_base_local=1e4, sliding_window=8, global_layers=(5,), norm_eps=1e-6,
    context_length=256, bos_id=2, eos_id=1, add_bos=True, vocab_size=4 + 256 + 48,
    tied_embeddings=True, embedding_type="Q8_0", query_scale=32 ** -0.5)

# The first 48 merges of SmolLM2's tokenizer: each merge's parts exist before it is applied.
_MERGES = [
    "Ġ t", "Ġ a", "i n", "h e", "Ġ Ġ", "r e", "o n", "e r", "Ġt he", "a t", "Ġ s", "Ġ o", "e n",
    "Ġ c", "e s", "Ġ w", "n d", "i t", "o r", "i s", "a l", "Ġ p", "in g", "Ġ f", "a n", "e d",
    "Ġ b", "o u", "a r", "Ġ in", "Ġo f", "Ġ m", "Ġa nd", "i on", "i c", "Ġ d", "Ġt o", "ĠĠ ĠĠ",
    "l e", "r o", "a s", "en t", "Ġ h", "Ġt h", "c t", "Ġ e", "Ġ re", "e l"]
_PIECES = [
    "▁t", "▁a", "in", "he", "re", "on", "▁the", "er", "▁s", "at", "▁o", "en", "▁c", "es", "▁w",
    "nd", "it", "or", "is", "al", "▁p", "ing", "▁f", "an", "ed", "▁b", "ou", "ar", "▁in", "▁of",
    "▁m", "▁and", "ion", "ic", "▁d", "▁to", "le", "ro", "as", "ent", "▁h", "▁th", "ct", "▁e",
    "▁re", "el", "om", "il"]
_NORMAL, _CONTROL, _BYTE = 1, 3, 6


def _byte_chars() -> list[str]:
  """GPT-2's byte-to-unicode table, in code-point order (the order of SmolLM2's byte tokens)."""
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1)]
  cs, n = list(bs), 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return sorted(chr(c) for c in cs)


def llama_permute(w_OxD: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute: HF's rotate-half rows -> llama.cpp's pairs."""
  return (w_OxD.reshape(n_head, 2, w_OxD.shape[0] // n_head // 2, *w_OxD.shape[1:])
          .swapaxes(1, 2).reshape(w_OxD.shape))


def _normal(rng, shape, scale):
  return (rng.standard_normal(shape) * scale).astype(np.float32)


def hf_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """The random weights in Hugging Face layout, keyed by GGUF name: Q/K rows not yet permuted,
  Gemma norm weights without the +1, embedding in float32 (before Q8_0). (out, in) matrices."""
  rng = np.random.default_rng(seed)
  d, f, hd = cfg["d_model"], cfg["d_ff"], cfg["head_dim"]
  q_dim, kv_dim = cfg["n_head"] * hd, cfg["n_kv_head"] * hd
  gemma = cfg["arch"] == "gemma3"
  # Gemma's HF norm weight is a delta from 1; llama's is the multiplier itself.
  norm = (lambda n: _normal(rng, n, 0.2)) if gemma else (lambda n: 1 + _normal(rng, n, 0.2))
  # Scales chosen so that greedy decoding does not lock onto one token at once: with tied
  # embeddings a token's own row dominates unless the layers' outputs are large enough.
  emb, out_gain = (0.3, 1.0) if gemma else (0.2, 3.0)
  w = {"token_embd.weight": _normal(rng, (cfg["vocab_size"], d), emb)}
  for i in range(cfg["n_layer"]):
    p = f"blk.{i}."
    w[p + "attn_norm.weight"] = norm(d)
    w[p + "attn_q.weight"] = _normal(rng, (q_dim, d), d ** -0.5)
    w[p + "attn_k.weight"] = _normal(rng, (kv_dim, d), d ** -0.5)
    w[p + "attn_v.weight"] = _normal(rng, (kv_dim, d), d ** -0.5)
    w[p + "attn_output.weight"] = _normal(rng, (d, q_dim), out_gain * q_dim ** -0.5)
    if gemma:
      w[p + "attn_q_norm.weight"] = norm(hd)
      w[p + "attn_k_norm.weight"] = norm(hd)
      w[p + "post_attention_norm.weight"] = 7 + norm(d)  # large, as in the real model
      w[p + "post_ffw_norm.weight"] = 7 + norm(d)
    w[p + "ffn_norm.weight"] = norm(d)
    w[p + "ffn_gate.weight"] = _normal(rng, (f, d), d ** -0.5)
    w[p + "ffn_up.weight"] = _normal(rng, (f, d), d ** -0.5)
    w[p + "ffn_down.weight"] = _normal(rng, (d, f), out_gain * f ** -0.5)
  w["output_norm.weight"] = norm(d)
  return w


def gguf_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """What the file stores, as float32 (the embedding already round-tripped through Q8_0)."""
  w = hf_weights(cfg, seed)
  for name in list(w):
    if cfg["arch"] == "llama" and name.endswith("attn_q.weight"):
      w[name] = llama_permute(w[name], cfg["n_head"])
    elif cfg["arch"] == "llama" and name.endswith("attn_k.weight"):
      w[name] = llama_permute(w[name], cfg["n_kv_head"])
    elif cfg["arch"] == "gemma3" and name.endswith("norm.weight"):
      w[name] = w[name] + np.float32(1.0)  # convert_hf_to_gguf.py's Gemma3Model.norm_shift
  q8 = quantize(w["token_embd.weight"], gguf.GGMLQuantizationType.Q8_0)
  w["token_embd.weight"] = gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0)
  return w


def _add_tensors(writer: gguf.GGUFWriter, cfg: dict, seed: int, order: list[str]) -> None:
  w = hf_weights(cfg, seed)
  stored = gguf_weights(cfg, seed)
  names = [n for n in w if not n.startswith("blk.")]
  names = sorted(names, key=lambda n: order.index(n.split(".")[0]))
  blk = sorted({n.split(".", 2)[2] for n in w if n.startswith("blk.")},
               key=lambda n: order.index(n.split(".")[0]))
  names += [f"blk.{i}.{n}" for i in range(cfg["n_layer"]) for n in blk]
  if cfg["arch"] == "llama":  # SmolLM2 lists output_norm last
    names = [n for n in names if n != "output_norm.weight"] + ["output_norm.weight"]
  for name in names:
    if name == "token_embd.weight":
      q8 = quantize(w[name], gguf.GGMLQuantizationType.Q8_0)
      writer.add_tensor(name, q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
      writer.add_tensor(name, np.ascontiguousarray(stored[name]))


def _general(writer: gguf.GGUFWriter, name: str, basename: str, lic: str) -> None:
  writer.add_type("model")
  writer.add_name(name)
  writer.add_basename(basename)
  writer.add_size_label("tiny")
  writer.add_license(lic)


def _finish(writer: gguf.GGUFWriter) -> None:
  writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
  # Most tensors are F32 (the embedding is Q8_0); llama.cpp reads the type of each tensor, the
  # file type is only a label.
  writer.add_file_type(gguf.LlamaFileType.ALL_F32)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def write_tiny_llama(path, seed: int = 0) -> pathlib.Path:
  """A 3-layer SmolLM2-shaped `llama` GGUF with a GPT-2 byte-level BPE vocabulary."""
  cfg, path = TINY_LLAMA, pathlib.Path(path)
  wr = gguf.GGUFWriter(str(path), "llama")
  _general(wr, "Tiny Llama", "tiny-llama", "apache-2.0")
  wr.add_block_count(cfg["n_layer"])
  wr.add_context_length(cfg["context_length"])
  wr.add_embedding_length(cfg["d_model"])
  wr.add_feed_forward_length(cfg["d_ff"])
  wr.add_head_count(cfg["n_head"])
  wr.add_head_count_kv(cfg["n_kv_head"])
  wr.add_rope_freq_base(cfg["rope_base"])
  wr.add_layer_norm_rms_eps(cfg["norm_eps"])
  wr.add_vocab_size(cfg["vocab_size"])
  wr.add_rope_dimension_count(cfg["head_dim"])
  wr.add_add_space_prefix(False)
  wr.add_add_bos_token(cfg["add_bos"])
  wr.add_tokenizer_model("gpt2")
  wr.add_tokenizer_pre("smollm")
  tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_chars(),
            *[m.replace(" ", "") for m in _MERGES]]
  assert len(tokens) == cfg["vocab_size"] and len(set(tokens)) == len(tokens)
  wr.add_token_list(tokens)
  wr.add_token_types([_CONTROL] * 3 + [_NORMAL] * (len(tokens) - 3))
  wr.add_token_merges(_MERGES)
  wr.add_bos_token_id(cfg["bos_id"])
  wr.add_eos_token_id(cfg["eos_id"])
  wr.add_unk_token_id(0)
  wr.add_pad_token_id(2)
  _add_tensors(wr, cfg, seed, ["token_embd", "attn_norm", "ffn_down", "ffn_gate", "ffn_up",
                               "ffn_norm", "attn_k", "attn_output", "attn_q", "attn_v",
                               "output_norm"])
  _finish(wr)
  return path


def write_tiny_gemma3(path, seed: int = 0, sliding_window: int | None = None) -> pathlib.Path:
  """A 6-layer Gemma-3-shaped `gemma3` GGUF with a SentencePiece-style vocabulary.
  `sliding_window` overrides TINY_GEMMA3's (for checks that the window is honoured)."""
  cfg, path = TINY_GEMMA3, pathlib.Path(path)
  wr = gguf.GGUFWriter(str(path), "gemma3")
  _general(wr, "Tiny Gemma 3", "tiny-gemma-3", "gemma")
  wr.add_context_length(cfg["context_length"])
  wr.add_embedding_length(cfg["d_model"])
  wr.add_block_count(cfg["n_layer"])
  wr.add_feed_forward_length(cfg["d_ff"])
  wr.add_head_count(cfg["n_head"])
  wr.add_layer_norm_rms_eps(cfg["norm_eps"])
  wr.add_key_length(cfg["head_dim"])
  wr.add_value_length(cfg["head_dim"])
  wr.add_rope_freq_base(cfg["rope_base"])
  wr.add_sliding_window(sliding_window or cfg["sliding_window"])
  wr.add_head_count_kv(cfg["n_kv_head"])
  wr.add_tokenizer_model("llama")
  wr.add_tokenizer_pre("default")
  specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
  tokens = [*specials, *[f"<0x{b:02X}>" for b in range(256)], *_PIECES]
  assert len(tokens) == cfg["vocab_size"]
  wr.add_token_list(tokens)
  wr.add_token_scores([-1000.0] * 4 + [0.0] * 256 + [-float(i) for i in range(len(_PIECES))])
  wr.add_token_types([_CONTROL] * 4 + [_BYTE] * 256 + [_NORMAL] * len(_PIECES))
  wr.add_bos_token_id(cfg["bos_id"])
  wr.add_eos_token_id(cfg["eos_id"])
  wr.add_unk_token_id(3)
  wr.add_pad_token_id(0)
  wr.add_add_bos_token(cfg["add_bos"])
  wr.add_add_sep_token(False)
  wr.add_add_eos_token(False)
  wr.add_add_space_prefix(False)
  _add_tensors(wr, cfg, seed, ["output_norm", "token_embd", "attn_k", "attn_k_norm", "attn_norm",
                               "attn_output", "attn_q", "attn_q_norm", "attn_v", "ffn_down",
                               "ffn_gate", "ffn_norm", "ffn_up", "post_attention_norm",
                               "post_ffw_norm"])
  _finish(wr)
  return path
