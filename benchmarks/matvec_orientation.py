"""How fast one batch-1 matrix-vector product streams its weights on this device, by shape and by
which dimension it contracts: the body of a decode step is such products, and XLA:CPU does not
run them all near the bandwidth (docs/real_models.md, "Where the time goes").

  .venv/bin/python benchmarks/matvec_orientation.py [--shapes=640x1024,2048x640] [--repeats=30]

For each R x C float32 matrix W (random), two jitted products, each the median of REPEATS:
`x @ W` (x of R, the contraction over W's rows: how hire stores attention's w_q, w_kv and w_out
and the FFN's w_out) and `x @ W.T` (x of C, the contraction over W's columns: the FFN's w_in and
w_gate, and the output layer). The defaults are Gemma 3 270M's matrices, its FFN's w_in and
w_gate side by side (640 x 4096), and its output layer (262144 x 640).

Then `--chain_layers` layers of the body's six products alone (no norms, attention or cache), as
hire stores them and with attention's q and kv in one matrix and the FFN's w_in and w_gate in
one: what fusing them would save, against what the whole body takes.
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


def body_chain(layers: int, fused: bool, d=640, f=2048, hk=1024, gk=256):
  """(jitted chain, its weights, x): per layer q, kv, out, w_in, w_gate, w_out at Gemma's sizes
  (separate, as hire stores them; or q|kv and w_in|w_gate side by side)."""
  keys = iter(jax.random.split(jax.random.key(1), 6 * layers))
  draw = lambda *shape: jax.random.normal(next(keys), shape, jnp.float32)  # noqa: E731
  ws = [dict(q=draw(d, hk), kv=draw(d, 2 * gk), o=draw(hk, d), i=draw(f, d), g=draw(f, d),
             d=draw(f, d)) for _ in range(layers)]
  if fused:
    ws = [dict(qkv=jnp.concatenate([w["q"], w["kv"]], 1), o=w["o"], d=w["d"],
               ig=jnp.concatenate([w["i"].T, w["g"].T], 1)) for w in ws]

  def run(ws, x_1xD):
    for w in ws:
      if fused:
        qkv_1xC = x_1xD @ w["qkv"]
        q_1xHK, kv_1xC = qkv_1xC[:, :hk], qkv_1xC[:, hk:]
        ig_1x2F = x_1xD @ w["ig"]
        in_1xF, gate_1xF = ig_1x2F[:, :f], ig_1x2F[:, f:]
      else:
        q_1xHK, kv_1xC = x_1xD @ w["q"], x_1xD @ w["kv"]
      x_1xD = x_1xD + 1e-3 * (q_1xHK @ w["o"]) + 0 * kv_1xC[:, :1]
      if not fused:
        in_1xF, gate_1xF = x_1xD @ w["i"].T, x_1xD @ w["g"].T
      x_1xD = x_1xD + 1e-3 * ((jax.nn.gelu(in_1xF) * gate_1xF) @ w["d"])
    return x_1xD
  return jax.jit(run), ws, jnp.ones((1, d), jnp.float32)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", default=GEMMA, help="RxC,RxC,...")
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--chain_layers", type=int, default=18, help="0: no chain")
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
  for fused in (False, True, False, True) if a.chain_layers else ():
    fn, ws, x_1xD = body_chain(a.chain_layers, fused)
    mb = sum(w.size for layer in ws for w in layer.values()) * 4 / 1e6
    ms = median_ms(fn, ws, x_1xD, repeats=a.repeats)
    print(f"{a.chain_layers} layers of products, {'fused' if fused else 'as stored'}: "
          f"{ms:.2f} ms, {mb:.0f} MB, {mb / ms:.1f} GB/s", flush=True)


if __name__ == "__main__":
  main()
