"""hire's import of a real model held to llama.cpp on the same weights.

  python benchmarks/real_parity.py --model_dir=runs/gemma3 --reference=ref/gemma3_f32.npz \
      [--out=docs/parity_gemma3.json]

The reference comes from `benchmarks/llamacpp_reference.py` (run with `.venv-ref`, see `make
reference`) on the float32 twin of the GGUF the run folder was imported from
(`benchmarks/f32_twin.py`): every tensor dequantized, so both sides compute with the same float
weights. Compared on llama.cpp's own tokens (8 prompts, BOS where the model adds one):
- top-1: hire's argmax against llama.cpp's at every position;
- logits: |hire - llama.cpp| on llama.cpp's top-64 ids of every position, and on the logsumexp;
- perplexity over every next token of the prompts;
- the 64-token greedy continuation of the first prompt (hire decodes with its KV cache).
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli.lib import checkpoint, gguf_import, sharding, state
from hire_cli.nn import decode
from hire_cli.nn.config import ModelConfig


def load(model_dir: str):
  meta = checkpoint.latest_meta(model_dir)
  if meta is None:
    sys.exit(f"no checkpoint in {model_dir}; run `hire import` first")
  cfg = ModelConfig.from_dict(meta["model"])
  _, graphdef, params = checkpoint.restore_params(model_dir, cfg, sharding.make_mesh(
      sharding.MeshConfig()))
  return cfg, graphdef, params


def compare(model_dir: str, reference: str) -> dict:
  cfg, graphdef, params = load(model_dir)
  ref = np.load(reference)
  tokens_NxL, lengths_N = ref["tokens_NxL"], ref["lengths_N"]
  model = state.bind(graphdef, params)
  t0 = time.time()

  @jax.jit
  def logits_fn(tokens_1xL):
    h, _ = model(tokens_1xL)
    return model.logits(h)

  same, d_top, d_lse, nll, gaps = [], [], [], [], []
  for n, length in enumerate(lengths_N):
    row_L = tokens_NxL[n, :length]
    logits_LxV = np.asarray(logits_fn(jnp.asarray(row_L[None])))[0].astype(np.float64)
    top_LxK, ref_top_LxK = ref["top_ids_NxLxK"][n, :length], ref["top_logits_NxLxK"][n, :length]
    same.append(logits_LxV.argmax(-1) == top_LxK[:, 0])
    # where first place differs: how close llama.cpp's own first two were (a near-tie?)
    gaps += (ref_top_LxK[~same[-1], 0] - ref_top_LxK[~same[-1], 1]).tolist()
    d_top.append(np.abs(np.take_along_axis(logits_LxV, top_LxK, -1) - ref_top_LxK))
    m = logits_LxV.max(-1, keepdims=True)
    lse_L = (m[:, 0] + np.log(np.exp(logits_LxV - m).sum(-1)))
    d_lse.append(np.abs(lse_L - ref["logsumexp_NxL"][n, :length]))
    nll.append(lse_L[:-1] - logits_LxV[np.arange(length - 1), row_L[1:]])
  same, d_top, d_lse, nll = (np.concatenate([x.reshape(-1) for x in a])
                             for a in (same, d_top, d_lse, nll))
  ref_nll = -np.concatenate([ref["next_logprob_NxL"][n, :length - 1]
                             for n, length in enumerate(lengths_N)])
  prompt_1xP = tokens_NxL[:1, :lengths_N[0]]
  greedy = np.asarray(decode.generate(graphdef, params, cfg, prompt_1xP,
                                      len(ref["greedy_ids"])))[0]
  ppl, ref_ppl = float(np.exp(nll.mean())), float(np.exp(ref_nll.mean()))
  return {
      "model_dir": model_dir, "reference": reference,
      "reference_build": json.loads(str(ref["build_json"])),
      "prompts": int(len(lengths_N)), "positions": int(same.size),
      "top1_identical": float(same.mean()), "top1_differ": int((~same).sum()),
      "top1_differ_reference_gap": gaps,  # llama.cpp's logit 1 - logit 2 there
      "top64_logit_max_abs_diff": float(d_top.max()),
      "top64_logit_mean_abs_diff": float(d_top.mean()),
      "logsumexp_max_abs_diff": float(d_lse.max()),
      "perplexity": ppl, "reference_perplexity": ref_ppl,
      "perplexity_rel_diff": ppl / ref_ppl - 1,
      "greedy_identical": bool((greedy == ref["greedy_ids"]).all()),
      "greedy_first_difference": (int(np.argmin(greedy == ref["greedy_ids"]))
                                  if not (greedy == ref["greedy_ids"]).all() else None),
      "seconds": round(time.time() - t0, 1),
      "source": json.loads((pathlib.Path(model_dir) / gguf_import.PROVENANCE).read_text()),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", required=True)
  p.add_argument("--reference", required=True)
  p.add_argument("--out", default="")
  a = p.parse_args()
  r = compare(a.model_dir, a.reference)
  for k, v in r.items():
    if k not in ("source", "reference_build"):
      print(f"{k:28} {v}")
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
  main()
