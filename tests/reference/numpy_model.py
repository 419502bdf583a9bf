"""The two tiny families' forward pass in float64 numpy, straight from the GGUF tensors, as
llama.cpp computes it (src/models/llama.cpp, src/models/gemma3.cpp at the commit in README.md).

Written from llama.cpp's source, not from hire: test_gguf_fixtures.py holds it to the stored
llama.cpp logits, so it is a readable statement of what the files mean (layouts, the +1, rope
modes, the window) that the JAX import can be checked against line by line.
"""

import gguf
import numpy as np


def read_tensors(path) -> dict[str, np.ndarray]:
  """Every tensor dequantized to float64, numpy shape (out, in) as GGUF stores it."""
  out = {}
  for t in gguf.GGUFReader(str(path)).tensors:
    out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
  return out


def _rms(x_LxD: np.ndarray, w_D: np.ndarray, eps: float) -> np.ndarray:
  return x_LxD / np.sqrt(np.mean(x_LxD ** 2, axis=-1, keepdims=True) + eps) * w_D


def _rope(x_LxHxK: np.ndarray, base: float, neox: bool) -> np.ndarray:
  """llama.cpp's two rope modes: NORM rotates adjacent pairs (2i, 2i+1), the layout the llama
  converter's Q/K permutation produces; NEOX (gemma3) rotates (i, i + K/2)."""
  L, _, K = x_LxHxK.shape
  inv_freq_F = base ** (-np.arange(0, K, 2) / K)
  ang_LxF = np.arange(L)[:, None] * inv_freq_F[None, :]
  cos, sin = np.cos(ang_LxF)[:, None, :], np.sin(ang_LxF)[:, None, :]
  if neox:
    a, b = x_LxHxK[..., :K // 2], x_LxHxK[..., K // 2:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
  a, b = x_LxHxK[..., 0::2], x_LxHxK[..., 1::2]
  out = np.empty_like(x_LxHxK)
  out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
  return out


def _attend(q_LxHxK, k_LxGxK, v_LxGxK, window: int | None) -> np.ndarray:
  """Causal GQA: query head h reads KV head h // (H / G). A windowed query at p sees keys at
  p' with p - p' < window (llama.cpp's LLAMA_SWA_TYPE_STANDARD)."""
  L, H, K = q_LxHxK.shape
  rep = H // k_LxGxK.shape[1]
  k_LxHxK, v_LxHxK = np.repeat(k_LxGxK, rep, axis=1), np.repeat(v_LxGxK, rep, axis=1)
  s_HxLxL = np.einsum("qhk,phk->hqp", q_LxHxK, k_LxHxK)
  dist_LxL = np.arange(L)[:, None] - np.arange(L)[None, :]
  ok_LxL = (dist_LxL >= 0) & ((dist_LxL < window) if window else True)
  s_HxLxL = np.where(ok_LxL, s_HxLxL, -np.inf)
  p_HxLxL = np.exp(s_HxLxL - s_HxLxL.max(-1, keepdims=True))
  p_HxLxL /= p_HxLxL.sum(-1, keepdims=True)
  return np.einsum("hqp,phk->qhk", p_HxLxL, v_LxHxK).reshape(L, H * K)


def _gelu_tanh(x, fp16_table: bool = False):
  """ggml's CPU GELU (tanh form) reads a float16 table: y = f16(gelu(f16(x))) for |x| < 10."""
  if not fp16_table:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  y = _gelu_tanh(x.astype(np.float16).astype(np.float64)).astype(np.float16).astype(np.float64)
  return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))


def _q8_0(x):
  """ggml quantizes the activations to Q8_0 before a matmul with Q8_0 weights."""
  q = gguf.quants.quantize(x.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
  return gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)


def forward(w: dict[str, np.ndarray], cfg: dict, tokens_L: np.ndarray,
            like_llamacpp: bool = False) -> np.ndarray:
  """Logits (L, V) of one sequence from position 0; cfg is TINY_LLAMA or TINY_GEMMA3.
  like_llamacpp: also round as llama.cpp's CPU backend does where it leaves float32 (the GELU
  table, Q8_0 activations into the tied Q8_0 head); with it the logits match llama.cpp's to
  ~1e-5, without it to ~0.1 (what an exact float32 import should expect)."""
  gemma = cfg["arch"] == "gemma3"
  H, G, K, eps = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"], cfg["norm_eps"]
  L = len(tokens_L)
  x_LxD = w["token_embd.weight"][tokens_L]
  if gemma:
    x_LxD = x_LxD * np.sqrt(cfg["d_model"])
  for i in range(cfg["n_layer"]):
    p = f"blk.{i}."
    is_global = not gemma or i in cfg["global_layers"]
    base = cfg["rope_base"] if is_global else cfg["rope_base_local"]
    h_LxD = _rms(x_LxD, w[p + "attn_norm.weight"], eps)
    q_LxHxK = (h_LxD @ w[p + "attn_q.weight"].T).reshape(L, H, K)
    k_LxGxK = (h_LxD @ w[p + "attn_k.weight"].T).reshape(L, G, K)
    v_LxGxK = (h_LxD @ w[p + "attn_v.weight"].T).reshape(L, G, K)
    if gemma:
      q_LxHxK = _rms(q_LxHxK, w[p + "attn_q_norm.weight"], eps)
      k_LxGxK = _rms(k_LxGxK, w[p + "attn_k_norm.weight"], eps)
    q_LxHxK = _rope(q_LxHxK, base, neox=gemma) * K ** -0.5
    k_LxGxK = _rope(k_LxGxK, base, neox=gemma)
    window = None if is_global else cfg["sliding_window"]
    a_LxD = _attend(q_LxHxK, k_LxGxK, v_LxGxK, window) @ w[p + "attn_output.weight"].T
    if gemma:
      a_LxD = _rms(a_LxD, w[p + "post_attention_norm.weight"], eps)
    x_LxD = x_LxD + a_LxD
    h_LxD = _rms(x_LxD, w[p + "ffn_norm.weight"], eps)
    g_LxF, u_LxF = h_LxD @ w[p + "ffn_gate.weight"].T, h_LxD @ w[p + "ffn_up.weight"].T
    act_LxF = _gelu_tanh(g_LxF, like_llamacpp) if gemma else g_LxF / (1 + np.exp(-g_LxF))
    f_LxD = (act_LxF * u_LxF) @ w[p + "ffn_down.weight"].T
    if gemma:
      f_LxD = _rms(f_LxD, w[p + "post_ffw_norm.weight"], eps)
    x_LxD = x_LxD + f_LxD
  x_LxD = _rms(x_LxD, w["output_norm.weight"], eps)
  if like_llamacpp and "output.weight" not in w and cfg["embedding_type"] == "Q8_0":
    x_LxD = _q8_0(x_LxD)
  return x_LxD @ w.get("output.weight", w["token_embd.weight"]).T
