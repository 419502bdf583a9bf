"""Top-k operators: exactness where promised, measured recall against the formula, DA-TOP-k."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hire_cli import errors
from hire_cli.nn import topk


def _normal(rows, n, seed=0):
  return jax.random.normal(jax.random.key(seed), (rows, n), jnp.float32)


def _as_sets(idx_BxK):
  return [set(row) for row in np.asarray(idx_BxK).tolist()]


def test_exact_matches_lax_top_k():
  x = _normal(8, 1000)
  values, indices = topk.exact_top_k(x, 17)
  want_values, want_indices = jax.lax.top_k(x, 17)
  np.testing.assert_array_equal(values, want_values)
  np.testing.assert_array_equal(indices, want_indices)


@pytest.mark.parametrize("n,num_buckets", [(4096, 64), (1000, 64), (1000, 7), (300, 300)])
def test_two_stage_is_exact_when_each_bucket_keeps_k(n, num_buckets):
  x = _normal(16, n, seed=n)
  values, indices = topk.two_stage_top_k(x, 32, num_buckets, 32)
  want_values, want_indices = jax.lax.top_k(x, 32)
  assert _as_sets(indices) == _as_sets(want_indices)
  np.testing.assert_array_equal(values, want_values)
  # Indices point back into the original scores.
  np.testing.assert_array_equal(jnp.take_along_axis(x, indices, -1), values)


def test_two_stage_handles_leading_dims():
  x_2x3xN = _normal(6, 777).reshape(2, 3, 777)
  _, indices = topk.two_stage_top_k(x_2x3xN, 8, 16, 2)
  _, flat = topk.two_stage_top_k(x_2x3xN.reshape(6, 777), 8, 16, 2)
  np.testing.assert_array_equal(indices.reshape(6, 8), flat)


def test_two_stage_buckets_are_strided():
  # The whole top-64 is one contiguous block. Strided buckets hold one each, so keeping 1 per
  # bucket is exact; contiguous buckets would put it all in one bucket (recall 1/64).
  x = jnp.arange(4096, dtype=jnp.float32)[None]
  _, indices = topk.two_stage_top_k(x, 64, 64, 1)
  assert _as_sets(indices) == [set(range(4096 - 64, 4096))]


@pytest.mark.parametrize("n,k,num_buckets,per_bucket",
                         [(4096, 64, 64, 2), (4096, 64, 16, 4), (4096, 64, 8, 8),
                          (4096, 64, 64, 1), (4000, 64, 64, 2)])
def test_two_stage_recall_matches_formula(n, k, num_buckets, per_bucket):
  x = _normal(512, n, seed=num_buckets * 100 + per_bucket)
  _, true_idx = jax.lax.top_k(x, k)
  _, pred_idx = topk.two_stage_top_k(x, k, num_buckets, per_bucket)
  measured = float(topk.recall(pred_idx, true_idx))
  expected = topk.expected_recall(n, k, num_buckets, per_bucket)
  # The mean over 512 rows has a standard error of ~0.002.
  assert abs(measured - expected) < 0.01, (measured, expected)
  assert expected < 0.96 and measured < 0.96, "these settings are meant to be lossy"


def _brute_force_recall(n, k, num_buckets, per_bucket):
  """Average over every placement of the top-k among n strided positions."""
  total = 0.0
  placements = list(itertools.combinations(range(n), k))
  for top in placements:
    counts = np.bincount(np.asarray(top) % num_buckets, minlength=num_buckets)
    total += np.minimum(counts, per_bucket).sum() / k
  return total / len(placements)


@pytest.mark.parametrize("n,k,num_buckets,per_bucket", [
    (12, 4, 3, 1), (12, 4, 3, 2), (11, 4, 3, 1), (13, 5, 4, 2), (10, 6, 2, 2)])
def test_expected_recall_matches_brute_force(n, k, num_buckets, per_bucket):
  assert topk.expected_recall(n, k, num_buckets, per_bucket) == pytest.approx(
      _brute_force_recall(n, k, num_buckets, per_bucket), abs=1e-12)


def test_expected_recall_edge_cases():
  assert topk.expected_recall(4096, 64, 16, 64) == 1.0  # per_bucket >= k
  assert topk.expected_recall(4096, 64, 1024, 4) == 1.0  # per_bucket >= bucket size
  assert topk.expected_recall(4096, 64, 4096, 1) == 1.0  # one score per bucket
  assert topk.expected_recall(4096, 1, 8, 1) == 1.0
  assert topk.expected_recall(100, 10, 1, 4) == pytest.approx(0.4)  # one bucket keeps 4 of 10
  for bad in [(10, 11, 2, 1), (10, 2, 0, 1), (10, 2, 11, 1), (10, 2, 2, 0)]:
    with pytest.raises(ValueError):
      topk.expected_recall(*bad)


def test_expected_recall_large_vocab_and_monotone():
  n, k = 262_144, 1024
  by_per_bucket = [topk.expected_recall(n, k, 128, kb) for kb in range(8, 20)]
  assert all(0.0 < r < 1.0 for r in by_per_bucket)
  assert all(a < b for a, b in zip(by_per_bucket, by_per_bucket[1:]))
  by_buckets = [topk.expected_recall(n, k, 2**j, 4) for j in range(8, 14)]
  assert all(a < b for a, b in zip(by_buckets, by_buckets[1:]))
  assert topk.expected_recall(n, k, 128, 13) == pytest.approx(0.992, abs=0.002)


@pytest.mark.parametrize("n,k,target", [(4096, 64, 0.99), (32768, 256, 0.95), (1000, 10, 0.9)])
def test_choose_buckets_meets_target_with_fewest_survivors(n, k, target):
  plan = topk.choose_buckets(n, k, target)
  assert plan.recall >= target
  assert plan.recall == topk.expected_recall(n, k, plan.num_buckets, plan.per_bucket)
  assert k <= plan.survivors < n and plan.num_buckets >= 2 and plan.per_bucket <= 16
  for j in range(1, n.bit_length()):
    for kb in range(1, min(k, 16) + 1):
      if 2**j * kb >= k and 2**j * kb < plan.survivors:
        assert topk.expected_recall(n, k, 2**j, kb) < target, (2**j, kb)


def test_top_k_dispatch():
  x = _normal(256, 4096)
  _, true_idx = jax.lax.top_k(x, 64)
  _, exact_idx = topk.top_k(x, 64)
  np.testing.assert_array_equal(exact_idx, true_idx)
  _, approx_idx = topk.top_k(x, 64, method="two_stage", recall_target=0.95)
  assert approx_idx.shape == (256, 64)
  assert 0.94 <= float(topk.recall(approx_idx, true_idx)) < 1.0
  _, tpu_idx = topk.top_k(x, 64, method="approx_max_k", recall_target=0.95)
  assert tpu_idx.shape == (256, 64)
  with pytest.raises(errors.UserError, match="unknown"):
    topk.top_k(x, 64, method="sorted")


def test_choose_k_loc():
  n, k, d = 4096, 64, 8
  k_loc = topk.choose_k_loc(n, k, d, 0.99)
  assert topk.expected_recall(n, k, d, k_loc) >= 0.99
  assert topk.expected_recall(n, k, d, k_loc - 1) < 0.99
  assert k_loc < k
  assert topk.choose_k_loc(n, k, d, 1.0) <= k


def test_recall():
  pred = jnp.array([[4, 1, 9, 2], [7, 7, 3, 0]])
  true = jnp.array([[2, 5], [7, 8]])
  assert float(topk.recall(pred, true)) == pytest.approx(0.5)
  assert float(topk.recall(pred[:1], jnp.array([[9, 4]]))) == 1.0
  assert float(topk.recall(pred[None], true[None])) == pytest.approx(0.5)


_DA_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from hire_cli.nn import topk

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()).reshape(1, 8), ("data", "model"))
n, k = 4096, 64
x = jax.random.normal(jax.random.key(1), (512, n), jnp.float32)
x = jax.device_put(x, NamedSharding(mesh, P(None, "model")))
true_v, true_i = jax.lax.top_k(x, k)
out = {}
v, i = topk.da_top_k(x, k, k, mesh, "model")
out["exact_idx"] = bool((i == true_i).all()) and bool((v == true_v).all())
v, i = topk.gather_then_top_k(x, k, mesh, "model")
out["gather_idx"] = bool((i == true_i).all()) and bool((v == true_v).all())
xb = jax.device_put(x, NamedSharding(mesh, P("data", "model")))
out["batch_axis"] = bool((topk.da_top_k(xb, k, k, mesh, "model", "data")[1] == true_i).all())
out["recall"] = {}
for k_loc in (9, 10, 12):
  _, i = topk.da_top_k(x, k, k_loc, mesh, "model")
  out["recall"][k_loc] = [float(topk.recall(i, true_i)), topk.expected_recall(n, k, 8, k_loc)]
hlo = topk.da_top_k.lower(x, k, 10, mesh, "model").compile().as_text()
out["gathers"] = [l.split("=")[1].split("all-gather")[0].strip()
                  for l in hlo.splitlines() if "all-gather(" in l]
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_da_top_k_on_eight_cpu_devices(cpu_devices):
  out = cpu_devices.run(_DA_SCRIPT)
  assert out["exact_idx"], "k_loc >= k must give the exact global top-k"
  assert out["gather_idx"], "gather_then_top_k must give the exact global top-k"
  assert out["batch_axis"]
  for k_loc, (measured, expected) in out["recall"].items():
    assert abs(measured - expected) < 0.01, (k_loc, measured, expected)
    assert measured < 0.99 and expected < 0.99, (k_loc, measured, expected)
  # Only the 8 x 10 candidates per row cross devices, never the 4096 scores.
  assert out["gathers"] and all(",80]" in g for g in out["gathers"]), out["gathers"]
