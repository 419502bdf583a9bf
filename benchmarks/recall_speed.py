"""Recall against speed on one trained HiRE model: a table a user picks an operating point from.

For each approximator kind (LR as trained; Q int4 derived from W; LR+Q: the trained A quantized
to int4) and each candidate setting (HiRE-Softmax k', HiRE-FFN k'_g = factor x k_g), all from
the same checkpoint and through the served path (`nn/served.py`, the serving tensors of
`served.prepare`): softmax recall@32, FFN group recall, top-1 agreement with the exact model and
served loss on validation tokens (`hire eval`'s metric function), then decode ms/step at batch 1
for dense and that HiRE setting on the same weights, interleaved, and the speedup.

  .venv/bin/python benchmarks/recall_speed.py --model_dir=runs/small_hire \\
      --gin_file=configs/experiments/small_hire.gin
"""

import dataclasses
import json
import pathlib
import statistics

import gin
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from hire_cli.cli import gin_utils
from hire_cli.evals import latency, metrics
from hire_cli.lib import checkpoint, data, sharding, state
from hire_cli.nn import cost, decode, served
from hire_cli.runs import bench

flags.DEFINE_string("model_dir", "runs/small_hire", "a trained run with both HiRE layers")
flags.DEFINE_multi_string("gin_file", ["configs/experiments/small_hire.gin"], "its experiment")
flags.DEFINE_list("kinds", ["lr", "q4", "lr_q"], "approximator kinds (bench's VARIANT@KIND)")
flags.DEFINE_list("settings", ["128:1.5", "256:2", "512:3"],
                  "k':k'_g-factor pairs (HiRE-Softmax candidates : HiRE-FFN factor)")
flags.DEFINE_integer("eval_batches", 4, "validation batches of BATCH_SIZE x SEQ_LEN tokens")
flags.DEFINE_integer("decode_steps", 16, "timed decode steps per repeat")
flags.DEFINE_integer("repeats", 3, "interleaved repeats (dense and the setting)")
flags.DEFINE_string("out", "docs/recall_speed_small", "output path without suffix (.json, .md)")
FLAGS = flags.FLAGS


def main(_):
  gin_utils.parse(FLAGS.gin_file, [f"MODEL_DIR = '{FLAGS.model_dir}'"])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  data_cfg = data.DataConfig(seq_len=gin.query_parameter("%SEQ_LEN"))
  batch = gin.query_parameter("%BATCH_SIZE")
  mesh = sharding.make_mesh(sharding.MeshConfig())
  step, _, full = checkpoint.restore_params(FLAGS.model_dir, model, mesh)
  rows = data.load_rows(data_cfg, "validation")
  prompt = jnp.asarray(np.random.default_rng(0).integers(3, model.vocab_size, (1, 64)), jnp.int32)
  dense_cfg = dataclasses.replace(model, hire_softmax=None, hire_ffn=None)
  results = []
  for kind in FLAGS.kinds:
    for setting in FLAGS.settings:
      kp, factor = setting.split(":")
      cfg = bench.variant_configs(model, [f"hire@{kind}"])[f"hire@{kind}"]
      cfg = dataclasses.replace(
          cfg, hire_softmax=dataclasses.replace(cfg.hire_softmax, k_prime=int(kp)),
          hire_ffn=dataclasses.replace(cfg.hire_ffn, k_prime_factor=float(factor)))
      graphdef, abstract, _ = state.abstract_model(cfg)
      params = bench._subset(full, abstract)
      m = metrics.mean_metrics(metrics.make_eval_fn(graphdef), params, rows, batch,
                               FLAGS.eval_batches, mesh)
      runners = {}
      for name, c in (("dense", dense_cfg), ("hire", cfg)):
        g, a, _ = state.abstract_model(c)
        g, p = served.prepare(g, bench._subset(full, a))
        runners[name] = (c, p, *decode.prefill_and_step(g, served=name == "hire"))
      timed = latency.time_interleaved(runners, prompt, 3, FLAGS.decode_steps, FLAGS.repeats)
      dense_ms, hire_ms = (statistics.median(timed[n][0]) for n in ("dense", "hire"))
      row = {"model_dir": FLAGS.model_dir, "gin_file": FLAGS.gin_file, "kind": kind,
             "k_prime": int(kp), "k_prime_factor": float(factor), "checkpoint_step": int(step),
             "eval_batches": FLAGS.eval_batches, "recall_softmax@32": m.get("recall/softmax@32"),
             "recall_ffn": m.get("recall/ffn@k"), "top1_agreement": m["top1_agreement"],
             "served_loss": m["served_loss"], "exact_loss": m["loss"],
             "dense_ms": dense_ms, "hire_ms": hire_ms, "speedup": dense_ms / hire_ms,
             "bytes_fraction": cost.weight_bytes_per_step(cfg, 1) /
             cost.weight_bytes_per_step(dense_cfg, 1)}
      results.append(row)
      print(_line(row), flush=True)
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(results, indent=2))
  out.with_suffix(".md").write_text(markdown(results, FLAGS.model_dir, step))
  print(f"Wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


HEAD = ("| approximator | k' | k'_g factor | softmax recall@32 | FFN group recall | top-1 "
        "agreement | served loss | bytes vs dense | dense ms | HiRE ms | speedup |")


def _line(r: dict) -> str:
  return (f"| {r['kind']} | {r['k_prime']} | {r['k_prime_factor']:g} | "
          f"{r['recall_softmax@32']:.4f} | {r['recall_ffn']:.4f} | {r['top1_agreement']:.4f} | "
          f"{r['served_loss']:.3f} | {100 * r['bytes_fraction']:.0f}% | {r['dense_ms']:.2f} | "
          f"{r['hire_ms']:.2f} | {r['speedup']:.2f}x |")


def markdown(results: list, model_dir: str, step: int) -> str:
  exact = results[0]["exact_loss"] if results else float("nan")
  return "\n".join([f"Recall against speed, {model_dir} at step {step} (exact loss {exact:.3f}); "
                    "decode at batch 1.", "", HEAD, "|" + " --- |" * 11,
                    *(_line(r) for r in results)]) + "\n"


if __name__ == "__main__":
  app.run(main)
