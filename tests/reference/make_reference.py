"""Remakes tests/reference/tiny_{llama,gemma3}.npz: llama.cpp's logits and greedy continuations
on the tiny GGUF files of tests/gguf_fixtures.py. Needs the reference venv (`make reference`):

  .venv-ref/bin/python tests/reference/make_reference.py [--out_dir=tests/reference]

Also prints the sanity checks of README.md (window honoured, F16 against F32 KV cache).
"""

import argparse
import hashlib
import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests import gguf_fixtures  # noqa: E402

import llama_cpp  # noqa: E402

# The llama.cpp that llama-cpp-python 0.3.36's sdist vendors (vendor/llama.cpp, git HEAD).
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
REFERENCE = f"llama-cpp-python {llama_cpp.__version__} (llama.cpp {LLAMA_CPP_COMMIT})"
N_SEQ, SEQ_LEN, N_PROMPT, N_GREEDY, N_CTX = 2, 32, 8, 16, 64
F32 = 0  # ggml_type GGML_TYPE_F32


def sha256(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def load(path, kv_f32: bool = True) -> llama_cpp.Llama:
  """The KV cache in F32 (llama.cpp defaults to F16) so the stored logits hold only the model's
  own rounding; make_reference prints how far the default cache moves them."""
  kv = dict(type_k=F32, type_v=F32) if kv_f32 else {}
  return llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_CTX, logits_all=True,
                         n_threads=2, verbose=False, seed=0, **kv)


def logits(llm: llama_cpp.Llama, tokens_NxL: np.ndarray) -> np.ndarray:
  """Logits at every position of every row, each row evaluated from an empty cache."""
  out = []
  for row in tokens_NxL:
    llm.reset()
    llm.eval([int(t) for t in row])
    out.append(np.array(llm.scores[:len(row)], dtype=np.float32))
  return np.stack(out)


def greedy(llm: llama_cpp.Llama, prompt: list[int], n: int) -> list[int]:
  """llama.cpp's own sampler at temperature 0, top_k 1, no repeat penalty."""
  out = []
  for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                          reset=True):
    out.append(int(tok))
    if len(out) == n:
      break
  return out


def tokens(cfg: dict, seed: int) -> np.ndarray:
  """Random ids that skip the special tokens; BOS first where the family adds one."""
  n_special = 4 if cfg["arch"] == "gemma3" else 3
  rng = np.random.default_rng(seed)
  tokens_NxL = rng.integers(n_special, cfg["vocab_size"], (N_SEQ, SEQ_LEN)).astype(np.int32)
  if cfg["add_bos"]:
    tokens_NxL[:, 0] = cfg["bos_id"]
  return tokens_NxL


def make(name: str, write, cfg: dict, out_dir: pathlib.Path, tmp: pathlib.Path) -> dict:
  path = write(tmp / f"{name}.gguf")
  tokens_NxL = tokens(cfg, seed=1234)
  llm = load(path)
  logits_NxLxV = logits(llm, tokens_NxL)
  prompt = [int(t) for t in tokens_NxL[0, :N_PROMPT]]
  greedy_ids = greedy(llm, prompt, N_GREEDY)
  # The sampler's pick must be the argmax of the logits of the same sequence.
  seq_logits = logits(llm, np.array([prompt + greedy_ids]))[0]
  argmax = seq_logits[N_PROMPT - 1:-1].argmax(-1).tolist()
  assert argmax == greedy_ids, (argmax, greedy_ids)
  assert logits_NxLxV.shape == (N_SEQ, SEQ_LEN, cfg["vocab_size"])
  assert np.isfinite(logits_NxLxV).all()
  f16 = logits(load(path, kv_f32=False), tokens_NxL)
  print(f"{name}: V={cfg['vocab_size']} logit std {logits_NxLxV.std():.3f}; F16 KV cache moves "
        f"logits by max {np.abs(f16 - logits_NxLxV).max():.2e}; greedy {greedy_ids}")
  data = dict(tokens_NxL=tokens_NxL, logits_NxLxV=logits_NxLxV,
              greedy_prompt=np.array(prompt, np.int32), greedy_ids=np.array(greedy_ids, np.int32),
              gguf_sha256=np.array(sha256(path)), reference=np.array(REFERENCE),
              kv_cache=np.array("f32"))
  np.savez_compressed(out_dir / f"{name}.npz", **data)
  return data


def check_window(tmp: pathlib.Path, ref: dict) -> None:
  """Same weights, window 8 against a window longer than the sequence: the first `window`
  positions must agree exactly, later ones must not (else llama.cpp ignored the window)."""
  w = gguf_fixtures.TINY_GEMMA3["sliding_window"]
  wide = gguf_fixtures.write_tiny_gemma3(tmp / "wide.gguf", sliding_window=4 * SEQ_LEN)
  wide_NxLxV = logits(load(wide), ref["tokens_NxL"])
  diff_L = np.abs(wide_NxLxV - ref["logits_NxLxV"]).max(axis=(0, 2))
  print(f"gemma3 window {w} vs {4 * SEQ_LEN}: max |diff| at positions < {w}: "
        f"{diff_L[:w].max():.2e}; at positions >= {w}: min over positions "
        f"{diff_L[w:].min():.2e}, max {diff_L[w:].max():.2e}")
  assert diff_L[:w].max() < 1e-5, diff_L
  assert diff_L[w:].min() > 1e-3, diff_L


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out_dir", default=str(ROOT / "tests" / "reference"))
  args = ap.parse_args()
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  print(REFERENCE)
  print(llama_cpp.llama_print_system_info().decode())
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    make("tiny_llama", gguf_fixtures.write_tiny_llama, gguf_fixtures.TINY_LLAMA, out_dir, tmp)
    ref = make("tiny_gemma3", gguf_fixtures.write_tiny_gemma3, gguf_fixtures.TINY_GEMMA3,
               out_dir, tmp)
    check_window(tmp, ref)


if __name__ == "__main__":
  main()
