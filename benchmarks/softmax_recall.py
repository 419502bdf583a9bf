"""Recall of HiRE-Softmax approximators initialised post-hoc from a trained dense checkpoint.

For each approximator (kind, rank, bits) and each k', the approximator is built from the dense
output layer (truncated SVD for lr / lr_q, quantization for q) with no training, and
`hire eval`'s metric function measures recall/softmax@{1,8,32}, top-1 agreement and served loss
on validation tokens. Also prints the bytes the head reads per token relative to dense.

  .venv/bin/python benchmarks/softmax_recall.py --model_dir=runs/small_dense \
      --gin_file=configs/experiments/small_dense.gin
"""

import dataclasses
import json
import pathlib

import gin
from absl import app, flags

from hire_cli.cli import gin_utils
from hire_cli.evals import metrics
from hire_cli.lib import checkpoint, data, sharding, state
from hire_cli.nn import approx, cost
from hire_cli.nn.config import HiReSoftmaxConfig

flags.DEFINE_string("model_dir", "runs/small_dense", "a trained dense run")
flags.DEFINE_multi_string("gin_file", ["configs/experiments/small_dense.gin"], "its experiment")
flags.DEFINE_list("approximators", ["lr:16", "lr:32", "lr:64", "lr_q:64", "q:0"],
                  "kind:rank entries (rank ignored for q)")
flags.DEFINE_list("k_primes", ["64", "128", "256", "512"], "candidate counts k'")
flags.DEFINE_integer("eval_batches", 4, "validation batches of BATCH_SIZE x SEQ_LEN tokens")
flags.DEFINE_string("out", "", "JSON output (default MODEL_DIR/eval/softmax_recall.json)")
FLAGS = flags.FLAGS


def main(_):
  gin_utils.parse(FLAGS.gin_file, [f"MODEL_DIR = '{FLAGS.model_dir}'"])
  model_cfg = gin.query_parameter("%MODEL").scoped_configurable_fn()
  data_cfg = data.DataConfig(seq_len=gin.query_parameter("%SEQ_LEN"))
  batch = gin.query_parameter("%BATCH_SIZE")
  mesh = sharding.make_mesh(sharding.MeshConfig())
  step, _, dense_params = checkpoint.restore_params(FLAGS.model_dir, model_cfg, mesh)
  rows = data.load_rows(data_cfg, "validation")
  v, d = model_cfg.vocab_size, model_cfg.d_model
  results = []
  print(f"dense checkpoint {FLAGS.model_dir} step {step}; V={v} D={d}")
  print(f"{'approx':>10} {'kp':>5} {'bytes%':>7} {'r@1':>6} {'r@8':>6} {'r@32':>6} "
        f"{'top1':>6} {'served':>7}")
  for entry in FLAGS.approximators:
    kind, rank = entry.split(":")
    acfg = approx.ApproxConfig(kind=kind, rank=int(rank) or 64, bits=4)
    for kp in map(int, FLAGS.k_primes):
      cfg = dataclasses.replace(model_cfg, hire_softmax=HiReSoftmaxConfig(
          approx=acfg, k=min(32, kp), k_prime=kp))
      graphdef, params = state.init_params(cfg, 0, mesh)
      params = state.post_hoc_params(graphdef, params, dense_params,
                                     jax_shardings(params))
      m = metrics.mean_metrics(metrics.make_eval_fn(graphdef), params, rows, batch,
                                FLAGS.eval_batches, mesh)
      frac = cost.bytes_per_token(kind, v, d, acfg.rank, acfg.bits, kp) / \
          cost.dense_bytes_per_token(v, d)
      row = {"kind": kind, "rank": acfg.rank if kind != "q" else None, "bits": acfg.bits,
             "k_prime": kp, "bytes_fraction": frac, "step": int(step), **m}
      results.append(row)
      print(f"{entry:>10} {kp:>5} {100 * frac:>6.1f}% {m['recall/softmax@1']:>6.3f} "
            f"{m['recall/softmax@8']:>6.3f} {m.get('recall/softmax@32', float('nan')):>6.3f} "
            f"{m['top1_agreement']:>6.3f} {m['served_loss']:>7.3f}", flush=True)
  out = pathlib.Path(FLAGS.out or pathlib.Path(FLAGS.model_dir) / "eval" / "softmax_recall.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2))
  print(f"Wrote {out}")


def jax_shardings(params):
  import jax
  return jax.tree.map(lambda x: x.sharding, params)


if __name__ == "__main__":
  app.run(main)
