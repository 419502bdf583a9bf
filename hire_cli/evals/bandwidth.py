"""The device's measured memory bandwidth: what a memory-bound decode step is compared with."""

import time

import jax
import jax.numpy as jnp


def _best_seconds(f, x, repeats: int) -> float:
  f(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - t)
  return min(times)


def memory_bandwidth_gbs(nbytes: int = 512 << 20, repeats: int = 5) -> dict:
  """The device's memory bandwidth, two ways, on a buffer larger than any cache: `copy_gbs`
  (read + write of `nbytes`, an elementwise op) and `read_gbs` (a reduction, read only, like
  reading weights). `gbs` is the larger: the number achieved bandwidth is compared with."""
  x = jnp.ones((nbytes // 4,), jnp.float32)
  copy = 2 * nbytes / _best_seconds(jax.jit(lambda a: a * 1.0001), x, repeats) / 1e9
  x2 = x.reshape(-1, 1024)
  read = nbytes / _best_seconds(jax.jit(lambda a: jnp.sum(a, axis=0)), x2, repeats) / 1e9
  return {"copy_gbs": copy, "read_gbs": read, "gbs": max(copy, read)}
