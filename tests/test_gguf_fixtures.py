"""The tiny GGUF fixtures and the llama.cpp references made from them (tests/reference/).

If test_reference_describes_fixture fails, the fixture changed without its references: remake
them (tests/reference/README.md), never edit the stored hash by hand.
"""

import hashlib
import pathlib

import gguf
import numpy as np
import pytest

from tests import gguf_fixtures as fx
from tests.reference import numpy_model

REF = pathlib.Path(__file__).parent / "reference"
FAMILIES = {"tiny_llama": (fx.write_tiny_llama, fx.TINY_LLAMA),
            "tiny_gemma3": (fx.write_tiny_gemma3, fx.TINY_GEMMA3)}


def _sha(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
  write, cfg = FAMILIES[request.param]
  path = write(tmp_path_factory.mktemp(request.param) / f"{request.param}.gguf")
  return request.param, path, cfg


def test_writes_identically_twice(family, tmp_path):
  name, path, _ = family
  again = FAMILIES[name][0](tmp_path / "again.gguf")
  assert _sha(again) == _sha(path)
  other = FAMILIES[name][0](tmp_path / "other.gguf", seed=1)
  assert _sha(other) != _sha(path)


def test_reference_describes_fixture(family):
  name, path, _ = family
  ref = np.load(REF / f"{name}.npz")
  assert str(ref["gguf_sha256"]) == _sha(path), (
      f"{name}.gguf is no longer the file tests/reference/{name}.npz was made from: remake the "
      "references with tests/reference/make_reference.py (see tests/reference/README.md)")
  assert str(ref["reference"]).startswith("llama-cpp-python 0.3.36 (llama.cpp ")


def test_metadata_reads_back(family):
  name, path, cfg = family
  r = gguf.GGUFReader(str(path))
  arch = cfg["arch"]

  def val(key):
    return r.fields[key].contents()

  assert val("general.architecture") == arch
  assert val(f"{arch}.block_count") == cfg["n_layer"]
  assert val(f"{arch}.embedding_length") == cfg["d_model"]
  assert val(f"{arch}.feed_forward_length") == cfg["d_ff"]
  assert val(f"{arch}.attention.head_count") == cfg["n_head"]
  assert val(f"{arch}.attention.head_count_kv") == cfg["n_kv_head"]
  assert val(f"{arch}.rope.freq_base") == pytest.approx(cfg["rope_base"])
  assert val(f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(cfg["norm_eps"])
  assert val("tokenizer.ggml.bos_token_id") == cfg["bos_id"]
  assert val("tokenizer.ggml.eos_token_id") == cfg["eos_id"]
  assert val("tokenizer.ggml.add_bos_token") == cfg["add_bos"]
  assert len(val("tokenizer.ggml.tokens")) == cfg["vocab_size"]
  if arch == "gemma3":
    assert val("gemma3.attention.sliding_window") == cfg["sliding_window"]
    assert val("gemma3.attention.key_length") == cfg["head_dim"]
    assert len(val("tokenizer.ggml.scores")) == cfg["vocab_size"]
  else:
    assert val("llama.rope.dimension_count") == cfg["head_dim"]
    assert len(val("tokenizer.ggml.merges")) > 0
  tensors = {t.name: t for t in r.tensors}
  assert "output.weight" not in tensors  # tied embeddings
  emb = tensors["token_embd.weight"]
  assert emb.tensor_type == gguf.GGMLQuantizationType.Q8_0
  assert [int(n) for n in emb.shape] == [cfg["d_model"], cfg["vocab_size"]]
  assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for n, t in tensors.items()
             if n != "token_embd.weight")
  want = fx.gguf_weights(cfg)
  assert sorted(want) == sorted(tensors)
  got = gguf.quants.dequantize(emb.data, emb.tensor_type)
  np.testing.assert_array_equal(got, want["token_embd.weight"])


def test_layouts_are_the_converters():
  """Stored Q/K of llama are HF's permuted; gemma3's norms are HF's + 1; nothing else moves."""
  for cfg in (fx.TINY_LLAMA, fx.TINY_GEMMA3):
    hf, stored = fx.hf_weights(cfg), fx.gguf_weights(cfg)
    for name in hf:
      if name == "token_embd.weight":
        continue
      if cfg["arch"] == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = cfg["n_head"] if "attn_q" in name else cfg["n_kv_head"]
        np.testing.assert_array_equal(stored[name], fx.llama_permute(hf[name], heads))
        assert not np.array_equal(stored[name], hf[name])
      elif cfg["arch"] == "gemma3" and name.endswith("norm.weight"):
        np.testing.assert_array_equal(stored[name], hf[name] + np.float32(1))
      else:
        np.testing.assert_array_equal(stored[name], hf[name])


# Measured (2026-12-04): with llama.cpp's roundings max |diff| 6e-7 (llama), 2e-2 (gemma3, where
# float16 GELU inputs that round the other way are amplified by the large post-norms), mean
# <= 4e-4; without them max 7e-2, mean 1e-2, at logit std 1.6 (llama) and 2.5 (gemma3).
@pytest.mark.parametrize("like_llamacpp,max_tol,mean_tol", [(True, 5e-2, 1e-3), (False, 0.2, 3e-2)])
def test_numpy_model_matches_llamacpp(family, like_llamacpp, max_tol, mean_tol):
  """The numpy statement of the architecture reproduces llama.cpp's stored logits, closely with
  llama.cpp's roundings, loosely without (the gap an exact float32 import should expect)."""
  name, path, cfg = family
  ref = np.load(REF / f"{name}.npz")
  w = numpy_model.read_tensors(path)
  for tokens_L, want_LxV in zip(ref["tokens_NxL"], ref["logits_NxLxV"]):
    got_LxV = numpy_model.forward(w, cfg, tokens_L, like_llamacpp=like_llamacpp)
    err_LxV = np.abs(got_LxV - want_LxV)
    assert err_LxV.max() < max_tol and err_LxV.mean() < mean_tol, (err_LxV.max(), err_LxV.mean())
    top2_Lx2 = np.sort(want_LxV, -1)[:, -2:]
    clear_L = top2_Lx2[:, 1] - top2_Lx2[:, 0] > 2 * max_tol  # no near-tie for first place
    assert (got_LxV.argmax(-1) == want_LxV.argmax(-1))[clear_L].all()


def test_greedy_is_argmax_of_stored_model(family):
  """llama.cpp's greedy ids, replayed through the numpy model one position at a time."""
  name, path, cfg = family
  ref = np.load(REF / f"{name}.npz")
  w = numpy_model.read_tensors(path)
  seq = [int(t) for t in ref["greedy_prompt"]] + [int(t) for t in ref["greedy_ids"]]
  logits_LxV = numpy_model.forward(w, cfg, np.array(seq), like_llamacpp=True)
  n = len(ref["greedy_prompt"])
  assert logits_LxV[n - 1:-1].argmax(-1).tolist() == ref["greedy_ids"].tolist()
  assert len(set(ref["greedy_ids"].tolist())) > 3  # a continuation that moves, not one token
