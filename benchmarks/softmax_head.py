"""HiRE-Softmax head alone at V=256k, D=2048 (the 1b_256k output layer), batch 1, float32: the
dense head (all V logits, top-1) against the served HiRE head (approximator sized by
`config.default_hire_softmax`: rank 128, k' = 256 candidates gathered and rescored) for the LR,
LR+Q and Q int4 kinds, each head jitted alone, median of 30 calls.

  .venv/bin/python benchmarks/softmax_head.py
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hire_cli.nn import config, softmax
from hire_cli.nn.config import ModelConfig


def timeit(f, *a, n=30):
  f(*a)[0].block_until_ready(); ts = []
  for _ in range(n):
    t = time.perf_counter(); f(*a)[0].block_until_ready(); ts.append(time.perf_counter() - t)
  return float(np.median(ts) * 1e3)

base = ModelConfig(vocab_size=256000, d_model=2048, n_layers=1, n_heads=16, d_head=128, d_ff=8192, max_len=256)
h = jax.random.normal(jax.random.key(1), (1, 1, 2048), jnp.float32)
rows = []
for kind in ("lr", "lr_q", "q4"):
  sm = config.default_hire_softmax(base)
  spec = {"lr": dict(kind="lr"), "lr_q": dict(kind="lr_q", bits=4), "q4": dict(kind="q", bits=4)}[kind]
  sm = dataclasses.replace(sm, approx=dataclasses.replace(sm.approx, **spec))
  cfg = dataclasses.replace(base, hire_softmax=sm)
  head = softmax.HiReSoftmaxHead(cfg, rngs=nnx.Rngs(0))
  head.prepare_serving()
  g, st = nnx.split(head)
  dense = jax.jit(lambda st, h: jax.lax.top_k(jnp.einsum("bld,vd->blv", h, nnx.merge(g, st).w[...]), 1))
  hire = jax.jit(lambda st, h: nnx.merge(g, st).served_top_k(h, 1)[:2])
  d, s = timeit(dense, st, h), timeit(hire, st, h)
  rows.append((kind, sm.approx.rank, sm.k_prime, d, s, d / s))
  print(f"{kind:5} rank {sm.approx.rank} k'={sm.k_prime}: dense head {d:.2f} ms, HiRE head {s:.2f} ms, {d/s:.2f}x", flush=True)
