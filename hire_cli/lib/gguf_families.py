"""What each supported GGUF architecture is in hire's model: the `ModelConfig` its metadata
gives, and where each of its tensors goes in the parameter tree (a family is a config and a
mapping, not a fork of the model).

Layouts (llama.cpp's converter, `convert_hf_to_gguf.py`): a 2-D GGUF tensor of shape [cols, rows]
reads as a numpy `rows x cols` matrix in HF's `out x in` order. For `llama` the converter
permuted the rows of Q and K within each head (rotary pairs interleaved); `unpermute` restores
HF's halves, which `layers.rope` rotates. `gemma3` is not permuted, and its norm weights were
stored with Gemma's `+ 1` added: hire's norm adds the offset itself, so 1 is taken off here.
"""

import math

import numpy as np

from hire_cli import errors
from hire_cli.nn.config import ModelConfig

# The KV cache and the position range a model is built for; the files allow more (Gemma 3
# 32,768, SmolLM2 8,192): `ModelConfig.max_len` in the run folder's model.gin raises it.
DEFAULT_MAX_LEN = 2048
# llama.cpp's gemma3 (src/llama-model.cpp): one global layer in six, windowed layers rotate with
# base 10,000; the file carries neither.
GEMMA3_GLOBAL_EVERY = 6
GEMMA3_LOCAL_ROPE_BASE = 10000.0


def _need(meta: dict, key: str):
  if key not in meta:
    raise errors.UserError(f"the GGUF file has no metadata {key!r}; it is damaged or was not "
                           "written by llama.cpp's converter")
  return meta[key]


def _common(meta: dict, arch: str, tensors: dict, **kw) -> dict:
  p = f"{arch}."
  d, h = int(_need(meta, p + "embedding_length")), int(_need(meta, p + "attention.head_count"))
  kv = int(meta.get(p + "attention.head_count_kv", h))
  d_head = int(meta.get(p + "attention.key_length", d // h))
  if int(meta.get(p + "attention.value_length", d_head)) != d_head:
    raise errors.UserError(f"unsupported {arch} model: key and value heads of different widths")
  if int(meta.get(p + "rope.dimension_count", d_head)) != d_head:
    raise errors.UserError(f"unsupported {arch} model: rotary positions on part of each head "
                           "(rope.dimension_count != head width)")
  scaling = meta.get(p + "rope.scaling.type", "none")
  if scaling not in ("none", "") or float(meta.get(p + "rope.scaling.factor", 1.0)) != 1.0 \
      or "rope_freqs.weight" in tensors:
    raise errors.UserError(f"unsupported {arch} model: rotary position scaling ({scaling}); "
                           "hire's rope has no scaling yet")
  tokens = _need(meta, "tokenizer.ggml.tokens")
  add_bos = bool(meta.get("tokenizer.ggml.add_bos_token",
                          meta.get("tokenizer.ggml.model") == "llama"))
  bos = int(meta.get("tokenizer.ggml.bos_token_id", -1)) if add_bos else -1
  return dict(vocab_size=len(tokens), d_model=d, n_layers=int(_need(meta, p + "block_count")),
              n_heads=h, n_kv_heads=0 if kv == h else kv, d_head=d_head,
              d_ff=int(_need(meta, p + "feed_forward_length")),
              max_len=min(int(meta.get(p + "context_length", DEFAULT_MAX_LEN)), DEFAULT_MAX_LEN),
              tie_embeddings="output.weight" not in tensors, tied_head_scale=1.0,
              rope_base=float(meta.get(p + "rope.freq_base", 10000.0)),
              norm_eps=float(f"{float(_need(meta, p + 'attention.layer_norm_rms_epsilon')):.7g}"),
              bos_id=bos,
              **kw)


def llama_config(meta: dict, tensors: dict) -> dict:
  """SmolLM2, Llama 2/3 without rope scaling, Mistral-style models: SwiGLU, pre-norms."""
  return _common(meta, "llama", tensors, activation="swiglu")


def gemma3_config(meta: dict, tensors: dict) -> dict:
  """Gemma 3 (text): GeGLU, QK-norm, pre and post norms of (1 + w), sqrt(d) embedding scale,
  sliding-window layers with their own rope base, tied head without a scale."""
  d = int(_need(meta, "gemma3.embedding_length"))
  for key in ("gemma3.attn_logit_softcapping", "gemma3.final_logit_softcapping"):
    if meta.get(key):
      raise errors.UserError(f"unsupported gemma3 model: {key.split('.')[1]} is set")
  return _common(meta, "gemma3", tensors, activation="geglu", qk_norm=True, post_norms=True,
                 norm_offset=1.0, embed_scale=math.sqrt(d),
                 sliding_window=int(_need(meta, "gemma3.attention.sliding_window")),
                 global_every=GEMMA3_GLOBAL_EVERY, rope_local_base=GEMMA3_LOCAL_ROPE_BASE)


def unpermute(w_NxD: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's Q/K row permutation: within each head, rows (pairs interleaved) back to
  HF's two halves."""
  n, d = w_NxD.shape
  return w_NxD.reshape(heads, n // heads // 2, 2, d).swapaxes(1, 2).reshape(n, d)


# GGUF per-layer name -> (hire's name, how the numpy matrix becomes hire's layout)
_LAYER = {
    "attn_norm": "attn_norm/scale", "ffn_norm": "ffn_norm/scale",
    "ffn_up": "ffn/w_in", "ffn_gate": "ffn/w_gate", "ffn_down": "ffn/w_out",
    "attn_output": "attn/w_out",
}
_GEMMA3_LAYER = {"attn_q_norm": "attn/q_norm/scale", "attn_k_norm": "attn/k_norm/scale",
                 "post_attention_norm": "post_attn_norm/scale",
                 "post_ffw_norm": "post_ffn_norm/scale"}
CONFIGS = {"llama": llama_config, "gemma3": gemma3_config}


def expected_tensors(arch: str, cfg: ModelConfig) -> set:
  """The GGUF tensor names a file of `cfg`'s shape has, no more, no fewer."""
  per = [*_LAYER, "attn_q", "attn_k", "attn_v"] + (list(_GEMMA3_LAYER) if arch == "gemma3" else [])
  names = {f"blk.{i}.{n}.weight" for i in range(cfg.n_layers) for n in per}
  return names | {"token_embd.weight", "output_norm.weight"} | (
      set() if cfg.tie_embeddings else {"output.weight"})


def gguf_shape(name: str, cfg: ModelConfig) -> tuple:
  """The numpy shape (rows x cols, as read) tensor `name` must have in a file of `cfg`'s shape."""
  d, f, k = cfg.d_model, cfg.d_ff, cfg.d_head
  kind = name.split(".")[-2]
  return {"token_embd": (cfg.vocab_size, d), "output": (cfg.vocab_size, d),
          "attn_q": (cfg.n_heads * k, d), "attn_k": (cfg.kv_heads * k, d),
          "attn_v": (cfg.kv_heads * k, d), "attn_output": (d, cfg.n_heads * k),
          "ffn_up": (f, d), "ffn_gate": (f, d), "ffn_down": (d, f),
          "attn_q_norm": (k,), "attn_k_norm": (k,)}.get(kind, (d,))


def map_tensors(arch: str, cfg: ModelConfig, get) -> dict:
  """{"blocks/0/attn/w_q": array, ...} in hire's layouts; `get(name)` gives a GGUF tensor as a
  float32 numpy array (rows x cols as above)."""
  d, h, k, g = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.kv_heads
  offset = cfg.norm_offset
  out = {"embed": get("token_embd.weight"), "final_norm/scale": get("output_norm.weight") - offset}
  if not cfg.tie_embeddings:
    out["head/w"] = get("output.weight")
  names = {**_LAYER, **(_GEMMA3_LAYER if arch == "gemma3" else {})}
  for i in range(cfg.n_layers):
    blk, pre = f"blk.{i}.", f"blocks/{i}/"
    for src, dst in names.items():
      w = get(f"{blk}{src}.weight")
      if dst.endswith("scale"):
        out[pre + dst] = w - offset
      elif src == "ffn_down":
        out[pre + dst] = w.T  # D x F -> F x D (unit-major)
      elif src == "attn_output":
        out[pre + dst] = w.T.reshape(h, k, d)  # D x (H K) -> H x K x D
      else:
        out[pre + dst] = w  # F x D already
    q, kk, v = (get(f"{blk}attn_{n}.weight") for n in "qkv")  # (heads K) x D
    if arch == "llama":
      q, kk = unpermute(q, h), unpermute(kk, g)
    q_DxHxK = q.T.reshape(d, h, k)
    k_DxGxK, v_DxGxK = kk.T.reshape(d, g, k), v.T.reshape(d, g, k)
    if g == h:
      out[pre + "attn/w_qkv"] = np.stack([q_DxHxK, k_DxGxK, v_DxGxK], axis=1)
    else:
      out[pre + "attn/w_q"] = q_DxHxK
      out[pre + "attn/w_kv"] = np.stack([k_DxGxK, v_DxGxK], axis=1)
  return out
