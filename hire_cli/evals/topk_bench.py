"""Top-k microbenchmark: latency and recall of every top-k operator in `topk` (method.md section 4).

For each N and k': exact `lax.top_k`, the two-stage approximation (plan from `choose_buckets`),
`lax.approx_max_k`, and, on a mesh whose `model` axis has more than one device, DA-TOP-k and its
baseline gather-then-top-k over scores sharded along N. Ops of one (N, k') case are timed
interleaved (each repeat cycles through all of them) so that drift hits all alike. Recall is
measured on a separate draw of `recall_rows` rows: with batch=1 a single row's recall is too
coarse (steps of 1/k') to compare with the formula.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m hire_cli.evals.topk_bench --model 8
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hire_cli import errors
from hire_cli.lib import sharding
from hire_cli.nn import topk


def _ops(n: int, k: int, target_recall: float, mesh: Mesh | None) -> list[dict]:
  """One entry per operator: name, fn(scores) -> (values, indices), whether it takes sharded
  scores, formula recall, params and devices."""
  plan = topk.choose_buckets(n, k, target_recall)
  ops = [
      dict(op="exact", fn=lambda x: topk.exact_top_k(x, k), sharded=False,
           expected_recall=None, params={}, devices=1),
      dict(op="two_stage",
           fn=lambda x: topk.two_stage_top_k(x, k, plan.num_buckets, plan.per_bucket),
           sharded=False, expected_recall=plan.recall,
           params={"B": plan.num_buckets, "K'": plan.per_bucket, "survivors": plan.survivors},
           devices=1),
      dict(op="approx_max_k", fn=lambda x: topk.approx_max_k(x, k, target_recall),
           sharded=False, expected_recall=None, params={"recall_target": target_recall},
           devices=1),
  ]
  d = _model_devices(mesh)
  if d > 1:
    k_loc = topk.choose_k_loc(n, k, d, target_recall)
    ops += [
        dict(op="da_top_k", fn=lambda x: topk.da_top_k(x, k, k_loc, mesh, "model"), sharded=True,
             expected_recall=topk.expected_recall(n, k, d, k_loc),
             params={"D": d, "k_loc": k_loc, "gathered": d * k_loc}, devices=d),
        dict(op="gather_then_top_k", fn=lambda x: topk.gather_then_top_k(x, k, mesh, "model"),
             sharded=True, expected_recall=None, params={"D": d, "gathered": n}, devices=d),
    ]
  return ops


def _model_devices(mesh: Mesh | None) -> int:
  return mesh.shape.get("model", 1) if mesh is not None else 1


def _time_once(fn, x) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn(x))
  return (time.perf_counter() - t) * 1e3


def topk_microbench(*, ns=(32768, 262144), k_primes=(128, 1024), batch: int = 1,
                    target_recall: float = 0.99, repeats: int = 20, warmup: int = 3,
                    seed: int = 0, mesh: Mesh | None = None, recall_rows: int = 64) -> list[dict]:
  """Median ms (over `repeats`, after `warmup` calls) and measured recall of each top-k op.

  Scores are standard normal float32 of shape (batch, N); DA-TOP-k and gather-then-top-k get
  them sharded over N on the mesh's `model` axis and run only when that axis has > 1 device.
  Recall is the mean over `recall_rows` fresh rows of `topk.recall` against the exact top-k'.
  """
  if repeats < 1 or warmup < 0 or batch < 1 or recall_rows < 1:
    raise errors.UserError(f"need repeats >= 1, warmup >= 0, batch >= 1, recall_rows >= 1; got "
                           f"{repeats}, {warmup}, {batch}, {recall_rows}")
  d = _model_devices(mesh)
  bad = [n for n in ns if n % d]
  if bad:
    raise errors.UserError(f"N={bad} not divisible by the {d} devices on the mesh's model axis; "
                           "pick N that are multiples of it")
  split = NamedSharding(mesh, P(None, "model")) if d > 1 else None
  key = jax.random.key(seed)
  rows = []
  for n in ns:
    key, k_time, k_recall = jax.random.split(key, 3)
    x_BxN = jax.random.normal(k_time, (batch, n), jnp.float32)
    xr_RxN = jax.random.normal(k_recall, (recall_rows, n), jnp.float32)
    placed = {False: (x_BxN, xr_RxN)}
    if split is not None:
      placed[True] = (jax.device_put(x_BxN, split), jax.device_put(xr_RxN, split))
    for k in k_primes:
      if not 1 <= k <= n:
        raise errors.UserError(f"k'={k} must be in [1, N={n}]")
      ops = _ops(n, k, target_recall, mesh)
      true_RxK = np.asarray(topk.exact_top_k(xr_RxN, k)[1])
      for op in ops:
        x, xr = placed[op["sharded"]]
        op["recall"] = float(topk.recall(np.asarray(op["fn"](xr)[1]), true_RxK))
        for _ in range(warmup):
          jax.block_until_ready(op["fn"](x))
      times = {op["op"]: [] for op in ops}
      for _ in range(repeats):
        for op in ops:  # interleaved: drift hits every op alike
          times[op["op"]].append(_time_once(op["fn"], placed[op["sharded"]][0]))
      for op in ops:
        rows.append({"op": op["op"], "n": n, "k_prime": k,
                     "ms": statistics.median(times[op["op"]]), "recall": op["recall"],
                     "expected_recall": op["expected_recall"], "params": op["params"],
                     "devices": op["devices"]})
  return rows


def speedups(rows: list[dict]) -> list[dict]:
  """Per (n, k'): exact/two_stage and gather_then_top_k/da_top_k time ratios (> 1: faster),
  with the recall the faster op bought it at; None where an op did not run."""
  by = {(r["n"], r["k_prime"], r["op"]): r for r in rows}
  out = []
  for n, k in dict.fromkeys((r["n"], r["k_prime"]) for r in rows):
    entry = {"n": n, "k_prime": k}
    for name, fast, slow in (("two_stage_vs_exact", "two_stage", "exact"),
                             ("da_top_k_vs_gather", "da_top_k", "gather_then_top_k")):
      f, s = by.get((n, k, fast)), by.get((n, k, slow))
      entry[name] = s["ms"] / f["ms"] if f and s else None
      entry[f"{fast}_recall"] = f["recall"] if f and s else None
    out.append(entry)
  return out


def _fmt(x, spec: str, unit: str = "") -> str:
  return "-" if x is None else format(x, spec) + unit


def format_table(rows: list[dict]) -> str:
  head = (f"{'op':<18}{'N':>8}{'k_prime':>8}{'dev':>4}{'ms':>10}{'recall':>8}{'expected':>9}"
          "  params")
  lines = [f"Top-k microbenchmark on {jax.devices()[0].device_kind} x{jax.device_count()}",
           head, "-" * len(head)]
  for r in rows:
    params = " ".join(f"{k}={v}" for k, v in r["params"].items())
    lines.append(f"{r['op']:<18}{r['n']:>8}{r['k_prime']:>8}{r['devices']:>4}{r['ms']:>10.3f}"
                 f"{r['recall']:>8.4f}{_fmt(r['expected_recall'], '.4f'):>9}  {params}".rstrip())
  lines += ["", f"{'N':>8}{'k_prime':>8}{'two_stage/exact':>17}{'recall':>8}"
                f"{'da/gather':>11}{'recall':>8}   (speedup = slower ms / faster ms)"]
  for s in speedups(rows):
    lines.append(f"{s['n']:>8}{s['k_prime']:>8}{_fmt(s['two_stage_vs_exact'], '.2f', 'x'):>17}"
                 f"{_fmt(s['two_stage_recall'], '.4f'):>8}"
                 f"{_fmt(s['da_top_k_vs_gather'], '.2f', 'x'):>11}"
                 f"{_fmt(s['da_top_k_recall'], '.4f'):>8}")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--ns", type=int, nargs="+", default=[32768, 262144], help="score counts N")
  p.add_argument("--k-primes", type=int, nargs="+", default=[128, 1024], help="k' to retrieve")
  p.add_argument("--batch", type=int, default=1, help="rows of scores per timed call")
  p.add_argument("--target-recall", type=float, default=0.99, help="recall the plans aim for")
  p.add_argument("--repeats", type=int, default=20, help="timed calls per op (median reported)")
  p.add_argument("--warmup", type=int, default=3, help="untimed calls per op after compiling")
  p.add_argument("--model", type=int, default=None,
                 help="devices on the mesh's model axis (default: all visible devices)")
  a = p.parse_args(argv)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, model=a.model or jax.device_count()))
  rows = topk_microbench(ns=a.ns, k_primes=a.k_primes, batch=a.batch,
                         target_recall=a.target_recall, repeats=a.repeats, warmup=a.warmup,
                         mesh=mesh)
  print(format_table(rows), flush=True)


if __name__ == "__main__":
  main()
