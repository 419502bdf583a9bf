"""HiRE-Softmax added post-hoc to an imported model (frozen), every approximator kind, measured
on the served path (`nn/served.py`, the functions `hire eval` and `hire generate` call).

  .venv/bin/python benchmarks/real_hire_softmax.py --model_dir=runs/gemma3 \
      --settings=q8:0:256,lr:64:512:64 [--distilled=runs/gemma3_lr] \
      [--out=docs/real_models/hire_softmax_gemma3_270m]

Each setting is KIND:RANK:K'[:ROWS] (RANK is ignored for q8 / q4). Its approximator is what
`hire train --gin.POST_HOC_FROM=DIR --gin.TRAIN_STEPS=0` saves, with no training: Q8 / Q4 are `W`
quantized, LR the truncated SVD of `W`, or with ROWS (`HiReSoftmaxConfig.calibration_rows`) the
rank-r fit of the logits on the hidden states of ROWS training rows (lr_q / lr_q8: that fit with
A stored as int4 / int8). `--distilled` adds run folders whose approximator was distilled
post-hoc (`hire train ... --gin.POST_HOC_FROM=DIR`). Per setting:
- teacher-forced, on validation text tokenized with the model's own tokenizer: recall@k of the
  exact top-k among the k' candidates, top-1 agreement with the exact model, the exact
  perplexity and the served one with its approximate tail (`served_loss_approx_tail`);
- free-running: PROMPTS validation prompts continued by TOKENS greedy tokens, dense and HiRE;
- minimal pairs (and, with --downstream_limit, the multiple-choice tasks), exact and served in
  one pass, with the paired HiRE-minus-exact interval.
Then the smallest setting (by bytes the head reads per token) that reaches --target_recall.
Decode speed: `hire bench-latency --gin.MODEL_DIR=DIR --gin.BENCH_VARIANTS=...` (docs).
"""

import argparse
import dataclasses
import json
import math
import pathlib
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np

from hire_cli.cli import gin_utils
from hire_cli.evals import metrics
from hire_cli.lib import checkpoint, data, sharding, state, train_plan
from hire_cli.nn import approx, cost, decode, served
from hire_cli.nn.config import HiReSoftmaxConfig, ModelConfig

KINDS = {"q8": ("q", 8), "q4": ("q", 4), "lr": ("lr", 4), "lr_q": ("lr_q", 4),
         "lr_q8": ("lr_q", 8)}


def setup(model_dir: str):
  """(model cfg, data cfg) of an imported run folder, as `hire eval --gin.MODEL_DIR` sees it."""
  bindings = [f"MODEL_DIR = '{model_dir}'"]
  gin_utils.parse(["configs/runs/eval.gin", *gin_utils.folder_config(bindings)], bindings)
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  return model, gin.query_parameter("%DATA").scoped_configurable_fn()


def hire_config(model: ModelConfig, kind: str, rank: int, k_prime: int,
                calibration: int = 0) -> ModelConfig:
  base, bits = KINDS[kind]
  ac = approx.ApproxConfig(kind=base, rank=rank or 64, bits=bits)
  return dataclasses.replace(model, hire_softmax=HiReSoftmaxConfig(
      k=1, k_prime=k_prime, approx=ac, calibration_rows=calibration))


def post_hoc(cfg: ModelConfig, dense_params, mesh, dense_graphdef=None, train_rows=None):
  """What `hire train --gin.POST_HOC_FROM=DIR --gin.TRAIN_STEPS=0` saves, in serving form (the
  same library function, `train_plan.calibrated_post_hoc`)."""
  graphdef, abstract, axes = state.abstract_model(cfg)
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)
  params = train_plan.calibrated_post_hoc(cfg, graphdef, zeros,
                                          sharding.param_shardings(abstract, axes, mesh),
                                          dense_graphdef, dense_params, train_rows)
  return served.prepare(graphdef, params)  # the serving tensors, derived once


def teacher_forced(graphdef, params, cfg, rows, batch: int, batches: int, mesh) -> dict:
  found = metrics.mean_metrics(metrics.make_eval_fn(graphdef, ks=(1, 8, 32)), params, rows,
                               batch, batches, mesh, first=cfg.first_input)
  out = {k: found[k] for k in found if k.startswith(("recall/softmax", "top1_agreement"))}
  out["perplexity"] = math.exp(found["loss"])
  out["served_perplexity_approx_tail"] = math.exp(found["served_loss_approx_tail"])
  out["served_perplexity_candidates"] = math.exp(found["served_loss"])
  out["perplexity_rel_diff"] = out["served_perplexity_approx_tail"] / out["perplexity"] - 1
  return out


def prompts(cfg: ModelConfig, rows, n: int, length: int) -> np.ndarray:
  p_NxP = np.asarray(rows[:n, :length], np.int32)
  if cfg.bos_id >= 0:
    p_NxP = np.concatenate([np.full((n, 1), cfg.bos_id, np.int32), p_NxP[:, :-1]], 1)
  return p_NxP


def generate(graphdef, params, cfg, prompts_NxP, tokens: int, served: bool, chunk: int):
  return np.concatenate([np.asarray(decode.generate(graphdef, params, cfg, prompts_NxP[i:i + chunk],
                                                    tokens, served=served))
                         for i in range(0, len(prompts_NxP), chunk)])


def downstream_scores(graphdef, params, cfg, vocab_path: str, pairs: int, limit: int) -> dict:
  from hire_cli.evals import downstream  # seqio: only when it is needed
  # limit 0 would score every multiple-choice question: one each when only the pairs are asked
  found = downstream.evaluate_downstream(graphdef, params, cfg, limit=limit or 1,
                                         pairs_limit=pairs, batch_size=8, vocab_path=vocab_path)
  keep = ("downstream/minimal_pairs/", "downstream/mean/") if not limit else ("downstream/",)
  return {k.removeprefix("downstream/"): v for k, v in found.items() if k.startswith(keep)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", required=True, help="an imported run folder (hire import)")
  p.add_argument("--settings", default="q8:0:256,q4:0:256,lr:40:256,lr:128:1024")
  p.add_argument("--distilled", default="", help="comma-separated post-hoc HiRE run folders")
  p.add_argument("--batches", type=int, default=8, help="validation batches (teacher-forced)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompts", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--tokens", type=int, default=64)
  p.add_argument("--chunk", type=int, default=32, help="prompts decoded together")
  p.add_argument("--pairs", type=int, default=100, help="minimal pairs per kind (0: skip)")
  p.add_argument("--downstream_limit", type=int, default=0, help="questions per MC task (0: none)")
  p.add_argument("--target_recall", type=float, default=0.99, help="recall@1 to reach")
  p.add_argument("--out", default="", help="output path without suffix (.json, .md)")
  a = p.parse_args()
  model, data_cfg = setup(a.model_dir)
  mesh = sharding.make_mesh(sharding.MeshConfig())
  _, dense_graphdef, dense_params = checkpoint.restore_params(a.model_dir, model, mesh)
  rows = data.load_rows(data_cfg, "validation")
  prompts_NxP = prompts(model, rows, a.prompts, a.prompt_len)
  t0 = time.time()
  dense_NxT = generate(dense_graphdef, dense_params, model, prompts_NxP, a.tokens, False, a.chunk)
  print(f"dense: {a.prompts} x {a.tokens} greedy tokens in {time.time() - t0:.0f} s", flush=True)
  runs = [("post-hoc " + s, *s.split(":")) for s in a.settings.split(",") if s]
  runs += [("distilled " + d, d, None, None) for d in a.distilled.split(",") if d]
  train_rows = data.load_rows(data_cfg, "train") if any(len(r) > 4 for r in runs) else None
  results = []
  for name, kind, rank, k_prime, *extra in runs:
    t0 = time.time()
    if rank is None:  # a distilled run folder
      meta = checkpoint.latest_meta(kind)
      cfg = ModelConfig.from_dict(meta["model"])
      _, graphdef, params = checkpoint.restore_params(kind, cfg, mesh)
      graphdef, params = served.prepare(graphdef, params)
    else:
      cal = int(extra[0]) if extra else 0
      cfg = hire_config(model, kind, int(rank), int(k_prime), cal)
      graphdef, params = post_hoc(cfg, dense_params, mesh, dense_graphdef, train_rows)
    hc = cfg.hire_softmax
    row = {"setting": name, "kind": hc.approx.kind, "bits": hc.approx.bits,
           "rank": hc.approx.rank, "k_prime": hc.k_prime,
           "head_bytes_fraction": cost.weight_bytes_per_step(cfg, 1) /
           cost.weight_bytes_per_step(model, 1)}
    row.update(teacher_forced(graphdef, params, cfg, rows, a.batch, a.batches, mesh))
    print(f"{name}: teacher-forced {json.dumps(row)} ({time.time() - t0:.0f} s)", flush=True)
    hire_NxT = generate(graphdef, params, cfg, prompts_NxP, a.tokens, True, a.chunk)
    same_NxT = hire_NxT == dense_NxT
    row["free_running_agreement"] = float(same_NxT.mean())
    row["free_running_identical"] = int(same_NxT.all(1).sum())
    print(f"{name}: free-running {row['free_running_agreement']:.4f}, "
          f"{row['free_running_identical']} of {len(same_NxT)} identical", flush=True)
    if a.pairs or a.downstream_limit:
      row.update(downstream_scores(graphdef, params, cfg, data_cfg.vocab_path, a.pairs,
                                   a.downstream_limit))
    row["seconds"] = time.time() - t0
    results.append(row)
    print(json.dumps(row), flush=True)
  reach = [r for r in results if r.get("recall/softmax@1", 0) >= a.target_recall]
  best = min(reach, key=lambda r: r["head_bytes_fraction"]) if reach else None
  out = {"model_dir": a.model_dir, "prompts": a.prompts, "prompt_len": a.prompt_len,
         "tokens": a.tokens, "batches": a.batches, "batch": a.batch,
         "seq_len": data_cfg.seq_len, "target_recall": a.target_recall,
         "smallest_reaching_target": best and best["setting"], "results": results,
         "device": jax.devices()[0].device_kind}
  print(f"smallest setting with recall@1 >= {a.target_recall}: "
        f"{best['setting'] if best else 'none'}")
  if a.out:
    pathlib.Path(a.out).with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    pathlib.Path(a.out).with_suffix(".md").write_text(markdown(out) + "\n")


def markdown(out: dict) -> str:
  cols = [("setting", "{}"), ("step bytes vs dense", "{:.2f}"), ("recall@1", "{:.4f}"),
          ("recall@8", "{:.4f}"), ("top-1 agr. (forced)", "{:.2%}"),
          ("top-1 agr. (free)", "{:.2%}"), ("ppl exact", "{:.3f}"), ("ppl served (tail)", "{:.3f}"),
          ("ppl diff", "{:+.3%}"), ("minimal pairs exact / HiRE", "{}")]
  keys = [None, "head_bytes_fraction", "recall/softmax@1", "recall/softmax@8",
          "top1_agreement", "free_running_agreement", "perplexity",
          "served_perplexity_approx_tail", "perplexity_rel_diff", None]
  lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + " --- |" * len(cols)]
  for r in out["results"]:
    cells = []
    for (c, fmt), k in zip(cols, keys):
      if c == "setting":
        cells.append(r["setting"])
      elif k is None:
        mp, mph = r.get("minimal_pairs/accuracy"), r.get("minimal_pairs/accuracy_hire")
        cells.append("" if mp is None else f"{mp:.1f} / {mph:.1f}")
      else:
        cells.append(fmt.format(r[k]) if k in r else "")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
