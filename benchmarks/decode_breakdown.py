"""Where a decode step's time goes, dense against HiRE-Softmax, on an imported model: the whole
step and each of its parts compiled alone, with the bytes each reads and its GB/s.

  .venv/bin/python benchmarks/decode_breakdown.py --model_dir=runs/gemma3 [--rank=64]
      [--k_prime=512] [--context=128] [--out=docs/real_models/breakdown_gemma3_270m.json]

Parts (batch 1): the embedding lookup of one token; the body (every block, KV cache of
CONTEXT); the dense head (logits over V and their top-1); HiRE-Softmax's approximate scores
over V (LR: A (B h)), the top-k' of those scores, the gather of the k' rows of W with their
exact logits, and its whole served top-1. Each is timed as its own jitted program (median of
REPEATS after a warm-up), so the parts need not add up to the step: what is left is the cost of
one program instead of several. Also reads, from the compiled HiRE step's HLO
(`evals/program.py`), how many bytes of `W` it reads: the k' rows, not all of W, and no f32 copy
of it.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.evals import bandwidth, latency, program
from hire_cli.lib import checkpoint, sharding
from hire_cli.nn import approx, cost, decode, served, topk
from hire_cli.nn.config import HiReSoftmaxConfig, ModelConfig
from hire_cli.nn.model import init_cache

import real_hire_softmax  # noqa: E402  (benchmarks/, for the post-hoc HiRE params)


def timed(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append((time.perf_counter() - t) * 1e3)
  return statistics.median(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", required=True)
  p.add_argument("--rank", type=int, default=64)
  p.add_argument("--k_prime", type=int, default=512)
  p.add_argument("--context", type=int, default=128)
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--out", default="")
  a = p.parse_args()
  meta = checkpoint.latest_meta(a.model_dir)
  model = ModelConfig.from_dict(meta["model"])
  mesh = sharding.make_mesh(sharding.MeshConfig())
  _, dense_graphdef, dense_params = checkpoint.restore_params(a.model_dir, model, mesh)
  cfg = dataclasses.replace(model, hire_softmax=HiReSoftmaxConfig(
      k=1, k_prime=a.k_prime, approx=approx.ApproxConfig(kind="lr", rank=a.rank)))
  graphdef, params = real_hire_softmax.post_hoc(cfg, dense_params, mesh)
  m = nnx.merge(graphdef, params)
  cache = init_cache(cfg, 1, a.context + 1)
  token_B = jnp.asarray([17], jnp.int32)
  index = jnp.int32(a.context)
  h_1x1xD = jax.random.normal(jax.random.key(0), (1, 1, cfg.d_model), jnp.float32)
  f = lambda fn: jax.jit(lambda p, *x: fn(nnx.merge(graphdef, p), *x))  # noqa: E731
  parts = {
      "embedding lookup": (f(lambda m, t: jnp.take(m.embed[...], t, axis=0)), (token_B,), 0),
      "body (all blocks)": (f(lambda m, t, c, i: served.hidden(m, t[:, None], c, i, hire=False)),
                            (token_B, cache, index), None),  # its bytes: below
      "dense head (logits + top-1)": (f(lambda m, h: served.select(m, h, 1, hire=False)[1]),
                                      (h_1x1xD,), cfg.vocab_size * cfg.d_model * 4),
      "HiRE: approximate scores over V": (f(lambda m, h: served.approx_scores(m, h)), (h_1x1xD,),
                                          (cfg.vocab_size + cfg.d_model) * a.rank * 4),
      "HiRE: top-k' of the scores": (jax.jit(lambda s: topk.top_k(s, a.k_prime, "exact")[1]),
                                     (served.approx_scores(m, h_1x1xD),), cfg.vocab_size * 4),
      "HiRE: gather k' rows + exact logits": (
          f(lambda m, h, c: jnp.einsum("bld,blkd->blk", h, jnp.take(m.head.w[...], c, axis=0))),
          (h_1x1xD, m.head.candidates(h_1x1xD)), a.k_prime * cfg.d_model * 4),
      "HiRE head (served top-1)": (f(lambda m, h: served.select(m, h, 1)[1]), (h_1x1xD,), None),
  }
  bw = bandwidth.memory_bandwidth_gbs()["gbs"]
  rows = []
  for name, (fn, args, nbytes) in parts.items():
    ms = timed(fn, params, *args, repeats=a.repeats) if name != "HiRE: top-k' of the scores" \
        else timed(fn, *args, repeats=a.repeats)
    rows.append({"part": name, "ms": ms, "bytes": nbytes,
                 "gbs": nbytes / ms / 1e6 if nbytes else None})
  for served_path, g, pr, c in ((False, dense_graphdef, dense_params, model),
                                (True, graphdef, params, cfg)):
    prefill, step = decode.prefill_and_step(g, served=served_path)
    run = (c, pr, prefill, step)
    prompt = jnp.arange(3, 3 + a.context, dtype=jnp.int32)[None]
    ms = statistics.median(latency.time_decode(run, prompt, 3, a.repeats)[1])
    nbytes = cost.weight_bytes_per_step(c, 1)
    rows.append({"part": f"whole step, {'HiRE-Softmax' if served_path else 'dense'}", "ms": ms,
                 "bytes": nbytes, "gbs": nbytes / ms / 1e6})
  body = next(r for r in rows if r["part"].startswith("body"))
  body["bytes"] = cost.weight_bytes_per_step(model, 1) - cfg.vocab_size * cfg.d_model * 4  # - W
  body["gbs"] = body["bytes"] / body["ms"] / 1e6
  hlo = decode.compiled_step(graphdef, params, cfg, 1, True).as_text()
  w_read = {k: v for k, v in program.param_reads(hlo).items() if k in ("embed", "head/w")}
  converts = [line for line in hlo.splitlines() if " convert(" in line
              and f"[{cfg.vocab_size},{cfg.d_model}]" in line]
  body_fn, body_args, _ = parts["body (all blocks)"]
  body_ops = program.kernel_counts(body_fn.lower(params, *body_args).compile().as_text())
  out = {"model_dir": a.model_dir, "rank": a.rank, "k_prime": a.k_prime, "context": a.context,
         "bandwidth_gbs": bw, "rows": rows, "hire_step_reads_of_W": w_read,
         "full_W_converts_in_hire_step": len(converts), "body_program_ops": body_ops}
  print(f"{'part':40} {'ms':>8} {'MB':>8} {'GB/s':>6} {'%bw':>5}")
  for r in rows:
    mb = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else "-"
    gbs = f"{r['gbs']:.1f}" if r["gbs"] else "-"
    pct = f"{100 * r['gbs'] / bw:.0f}" if r["gbs"] else "-"
    print(f"{r['part']:40} {r['ms']:8.2f} {mb:>8} {gbs:>6} {pct:>5}")
  print(f"bandwidth {bw:.1f} GB/s; the HiRE step reads of W: {json.dumps(w_read)}; "
        f"full-W converts: {len(converts)}")
  print(f"the body's compiled program runs {json.dumps(body_ops)} (its entry computation's "
        "kernels: each fusion, dot and copy is one)")
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
