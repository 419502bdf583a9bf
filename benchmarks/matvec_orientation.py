"""How fast one batch-1 matrix-vector product streams its weights on this device, by shape and by
which dimension it contracts: the body of a decode step is such products, and XLA:CPU does not
run them all near the bandwidth (docs/real_models.md, "Where the time goes").

  .venv/bin/python benchmarks/matvec_orientation.py [--shapes=640x1024,2048x640] [--repeats=30]

For each R x C float32 matrix W (random), two jitted products, each the median of REPEATS:
`x @ W` (x of R, the contraction over W's rows: how hire stores attention's w_q, w_kv and w_out
and the FFN's w_out) and `x @ W.T` (x of C, the contraction over W's columns: the FFN's w_in and
w_gate, and the output layer). The defaults are Gemma 3 270M's matrices, its FFN's w_in and
w_gate side by side (640 x 4096), and its output layer (262144 x 640).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

GEMMA = "640x1024,640x512,1024x640,640x2048,2048x640,640x1536,640x4096,262144x640"


def median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", default=GEMMA, help="RxC,RxC,...")
  p.add_argument("--repeats", type=int, default=30)
  a = p.parse_args()
  rows_x_w = jax.jit(lambda x, w: x @ w)
  cols_x_w = jax.jit(lambda x, w: x @ w.T)
  print(f"{'W (R x C)':>12} {'MB':>7} {'x @ W us':>10} {'GB/s':>6} {'x @ W.T us':>11} {'GB/s':>6}")
  for shape in a.shapes.split(","):
    r, c = (int(n) for n in shape.split("x"))
    w_RxC = jax.random.normal(jax.random.key(0), (r, c), jnp.float32)
    ms_rows = median_ms(rows_x_w, jnp.ones((1, r), jnp.float32), w_RxC, repeats=a.repeats)
    ms_cols = median_ms(cols_x_w, jnp.ones((1, c), jnp.float32), w_RxC, repeats=a.repeats)
    mb = r * c * 4 / 1e6
    print(f"{shape:>12} {mb:7.1f} {1e3 * ms_rows:10.1f} {mb / ms_rows:6.1f} "
          f"{1e3 * ms_cols:11.1f} {mb / ms_cols:6.1f}", flush=True)


if __name__ == "__main__":
  main()
