"""Top-k operators: exact, two-stage approximate, `lax.approx_max_k`, and DA-TOP-k over a mesh.

All operate on the last axis; `k` is how many are kept. Two-stage shape letters: `Nc` buckets of
`Mb` scores each, `Kb` kept per bucket, `Ns = Nc * Kb` survivors for the exact second stage
(docs/method.md section 4). Letters as in docs/ARCHITECTURE.md ("Names").
"""

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from scipy.special import gammaln

from hire_cli import errors

METHODS = ("exact", "two_stage", "approx_max_k", "da_top_k", "gather_then_top_k")
# Methods that select over scores sharded on a mesh's `model` axis (`nn/mesh_serve.py`). Without
# such a mesh (one device, or a model axis of 1) all scores sit in one shard, where DA-TOP-k is
# the exact top-k (one bucket) and so is gathering them: `top_k` then computes exactly that.
MESH_METHODS = ("da_top_k", "gather_then_top_k")

# jax >= 0.7 exports shard_map at the top level; older versions only under experimental.
_shard_map = getattr(jax, "shard_map", None)
if _shard_map is None:
  from jax.experimental.shard_map import shard_map as _shard_map
# jax.shard_map's check_vma types a plain all_gather as still varying over the axis, so the
# replicated outputs below need to="invarying"; older jax lacks the argument and needs none.
_INVARIANT = ({"to": "invarying"} if "to" in inspect.signature(jax.lax.all_gather).parameters
              else {})


@functools.partial(jax.jit, static_argnames=("k",))
def exact_top_k(scores_BxN, k: int):
  """(values_Bxk, indices_Bxk) of the k largest scores, sorted descending."""
  return tuple(jax.lax.top_k(scores_BxN, k))


def _lowest(dtype):
  return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


@functools.partial(jax.jit, static_argnames=("k", "num_buckets", "per_bucket"))
def two_stage_top_k(scores_BxN, k: int, num_buckets: int, per_bucket: int):
  """Approximate top-k: top `per_bucket` of each of `num_buckets` buckets, then exact top-k.

  Position i goes to bucket i % num_buckets (as in `approx_max_k`), so a top-k that sits in one
  contiguous block is spread over the buckets instead of crowding one. Returns (values_Bxk,
  indices_Bxk) with indices into the original last axis.
  """
  *lead, n = scores_BxN.shape
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must be in [1, {n}] (the size of the last axis)")
  if not 1 <= num_buckets <= n:
    raise ValueError(f"num_buckets={num_buckets} must be in [1, {n}]")
  m = -(-n // num_buckets)
  kb = min(per_bucket, m)
  if num_buckets * kb < k:
    raise ValueError(f"num_buckets * per_bucket = {num_buckets * kb} survivors < k={k}; "
                     "raise either")
  pad = m * num_buckets - n
  # -inf padding never outranks a real score, and every bucket holds >= m - 1 real ones, so the
  # survivors always contain >= k real scores.
  scores_BxN = jnp.pad(scores_BxN, [(0, 0)] * len(lead) + [(0, pad)],
                       constant_values=_lowest(scores_BxN.dtype))
  bucket_BxNcxMb = jnp.swapaxes(scores_BxN.reshape(*lead, m, num_buckets), -1, -2)
  vals_BxNcxKb, slot_BxNcxKb = jax.lax.top_k(bucket_BxNcxMb, kb)
  idx_BxNcxKb = slot_BxNcxKb * num_buckets + jnp.arange(num_buckets)[:, None]
  vals_BxNs = vals_BxNcxKb.reshape(*lead, num_buckets * kb)
  idx_BxNs = idx_BxNcxKb.reshape(*lead, num_buckets * kb)
  values_Bxk, pos_Bxk = jax.lax.top_k(vals_BxNs, k)
  return values_Bxk, jnp.take_along_axis(idx_BxNs, pos_Bxk, axis=-1)


def _log_choose(a, b):
  return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)


def _expected_overflow(n: int, k: int, m: int, kb: int) -> float:
  """E[max(X - kb, 0)], X ~ Hypergeometric(n, k, m): true top-k lost by a bucket of m scores."""
  r = np.arange(max(kb + 1, m - (n - k)), min(k, m) + 1, dtype=np.float64)
  if r.size == 0:
    return 0.0
  log_pmf = _log_choose(k, r) + _log_choose(n - k, m - r) - _log_choose(n, m)
  return float(np.sum((r - kb) * np.exp(log_pmf)))


def expected_recall(n: int, k: int, num_buckets: int, per_bucket: int) -> float:
  """Expected recall of `two_stage_top_k` when the true top-k are placed at random (method.md 4).

  Exact also when num_buckets does not divide n: buckets then hold ceil(n / num_buckets) or one
  fewer scores, and the expected loss is summed over the two sizes.
  """
  if not 1 <= k <= n or not 1 <= num_buckets <= n or per_bucket < 1:
    raise ValueError(f"need 1 <= k <= n, 1 <= num_buckets <= n, per_bucket >= 1; got n={n}, "
                     f"k={k}, num_buckets={num_buckets}, per_bucket={per_bucket}")
  m = -(-n // num_buckets)
  if per_bucket >= min(k, m):
    return 1.0
  num_full = n - num_buckets * (m - 1)  # buckets holding m scores; the rest hold m - 1
  lost = num_full * _expected_overflow(n, k, m, per_bucket)
  if num_full < num_buckets:
    lost += (num_buckets - num_full) * _expected_overflow(n, k, m - 1, per_bucket)
  return min(max(1.0 - lost / k, 0.0), 1.0)


@dataclasses.dataclass(frozen=True)
class TwoStagePlan:
  num_buckets: int
  per_bucket: int
  recall: float  # expected, from `expected_recall`

  @property
  def survivors(self) -> int:
    return self.num_buckets * self.per_bucket


@functools.lru_cache(maxsize=256)
def choose_buckets(n: int, k: int, target_recall: float, *,
                   max_per_bucket: int = 16) -> TwoStagePlan:
  """(B, K') with expected recall >= target and the fewest survivors B K'.

  B ranges over powers of two in [2, n]; K' over [1, min(k, max_per_bucket)]. The cap matters:
  without it the fewest survivors is the degenerate B=2, K'~k/2, a first stage as costly as the
  exact top-k (a first stage of K' costs ~K' passes on TPU, and XLA's fast GPU top-k kernel
  covers K' <= 16). Falls back to (1, k), i.e. exact, when nothing qualifies.
  """
  if not 0.0 < target_recall <= 1.0:
    raise errors.UserError(f"target recall {target_recall} must be in (0, 1]")
  best = TwoStagePlan(1, k, 1.0)
  num_buckets = 2
  while num_buckets <= n:
    lo, hi = max(1, -(-k // num_buckets)), min(k, max_per_bucket, -(-n // num_buckets))
    if lo <= hi and expected_recall(n, k, num_buckets, hi) >= target_recall:
      while lo < hi:  # recall grows with K': smallest K' reaching the target
        mid = (lo + hi) // 2
        if expected_recall(n, k, num_buckets, mid) >= target_recall:
          hi = mid
        else:
          lo = mid + 1
      plan = TwoStagePlan(num_buckets, lo, expected_recall(n, k, num_buckets, lo))
      if (plan.survivors, -plan.recall) < (best.survivors, -best.recall) or best.num_buckets == 1:
        best = plan
    num_buckets *= 2
  return best


@functools.partial(jax.jit, static_argnames=("k", "recall_target"))
def approx_max_k(scores_BxN, k: int, recall_target: float = 0.95):
  """`jax.lax.approx_max_k` on the last axis: (values_Bxk, indices_Bxk)."""
  # Only TPU has the fast two-stage kernel; CPU and GPU lower it to an exact sort that ignores
  # recall_target (jax issue #24414), so `two_stage_top_k` is the portable approximation.
  return tuple(jax.lax.approx_max_k(scores_BxN, k, recall_target=recall_target))


def top_k(scores_BxN, k: int, method: str = "exact", recall_target: float = 0.99):
  """(values_Bxk, indices_Bxk) by `method` (one of METHODS; the MESH_METHODS are exact here:
  on one device, or outside a mesh-served layer, there is one shard)."""
  if method == "exact" or method in MESH_METHODS:
    return exact_top_k(scores_BxN, k)
  if method == "two_stage":
    plan = choose_buckets(scores_BxN.shape[-1], k, recall_target)
    return two_stage_top_k(scores_BxN, k, plan.num_buckets, plan.per_bucket)
  if method == "approx_max_k":
    return approx_max_k(scores_BxN, k, recall_target)
  raise errors.UserError(f"top-k method {method!r} is unknown; use one of {METHODS}")


def _specs(ndim: int, axis: str, batch_axis: str | None):
  """Input spec (last dim over `axis`, first over `batch_axis`) and output spec."""
  lead = [batch_axis] + [None] * (ndim - 2) if ndim > 1 else []
  return P(*lead, axis), P(*lead, None)


def _check_divides(n: int, mesh: Mesh, axis: str) -> int:
  d = mesh.shape[axis]
  if n % d:
    raise ValueError(f"last axis {n} is not divisible by the {d} devices on mesh axis {axis!r}")
  return d


@functools.partial(jax.jit, static_argnames=("k", "k_loc", "mesh", "axis", "batch_axis"))
def da_top_k(scores_BxN, k: int, k_loc: int, mesh: Mesh, axis: str = "model",
             batch_axis: str | None = None):
  """DA-TOP-k: local top-`k_loc` per shard of N on `axis`, all-gather those, final top-k.

  Exact when k_loc >= k; otherwise the two-stage algorithm with devices as buckets
  (`expected_recall(n, k, D, k_loc)`). Returns replicated (values_Bxk, global indices_Bxk).
  `batch_axis` shards the first dimension (e.g. "data") so no device repeats another's rows.
  """
  n = scores_BxN.shape[-1]
  d = _check_divides(n, mesh, axis)
  shard = n // d
  k_loc = min(k_loc, shard)
  if d * k_loc < k:
    raise ValueError(f"{d} devices x k_loc={k_loc} = {d * k_loc} candidates < k={k}; raise k_loc")
  in_spec, out_spec = _specs(scores_BxN.ndim, axis, batch_axis)

  def local(shard_BxNd):
    vals_BxKl, idx_BxKl = jax.lax.top_k(shard_BxNd, k_loc)
    idx_BxKl = idx_BxKl + jax.lax.axis_index(axis) * shard
    vals_BxNs = jax.lax.all_gather(vals_BxKl, axis, axis=vals_BxKl.ndim - 1, tiled=True,
                                  **_INVARIANT)
    idx_BxNs = jax.lax.all_gather(idx_BxKl, axis, axis=idx_BxKl.ndim - 1, tiled=True,
                                 **_INVARIANT)
    values_Bxk, pos_Bxk = jax.lax.top_k(vals_BxNs, k)
    return values_Bxk, jnp.take_along_axis(idx_BxNs, pos_Bxk, axis=-1)

  return _shard_map(local, mesh=mesh, in_specs=(in_spec,), out_specs=(out_spec, out_spec))(
      scores_BxN)


@functools.partial(jax.jit, static_argnames=("k", "mesh", "axis", "batch_axis"))
def gather_then_top_k(scores_BxN, k: int, mesh: Mesh, axis: str = "model",
                      batch_axis: str | None = None):
  """The baseline DA-TOP-k beats: all-gather the full scores over `axis`, then exact top-k."""
  _check_divides(scores_BxN.shape[-1], mesh, axis)
  in_spec, out_spec = _specs(scores_BxN.ndim, axis, batch_axis)

  def local(shard_BxNd):
    scores_BxN = jax.lax.all_gather(shard_BxNd, axis, axis=shard_BxNd.ndim - 1, tiled=True,
                                    **_INVARIANT)
    return tuple(jax.lax.top_k(scores_BxN, k))

  return _shard_map(local, mesh=mesh, in_specs=(in_spec,), out_specs=(out_spec, out_spec))(
      scores_BxN)


def all_gather_last(x_XxNl, axis: str):
  """Inside `shard_map`: the shards' last axes concatenated in device order, the result the same
  (invariant) on every device of `axis`."""
  return jax.lax.all_gather(x_XxNl, axis, axis=x_XxNl.ndim - 1, tiled=True, **_INVARIANT)


def choose_k_loc(n: int, k: int, num_devices: int, target_recall: float) -> int:
  """Smallest k_loc whose DA-TOP-k expected recall reaches the target (k_loc = k is exact)."""
  if not 0.0 < target_recall <= 1.0:
    raise errors.UserError(f"target recall {target_recall} must be in (0, 1]")
  lo, hi = max(1, -(-k // num_devices)), k
  while lo < hi:
    mid = (lo + hi) // 2
    if expected_recall(n, k, num_devices, mid) >= target_recall:
      hi = mid
    else:
      lo = mid + 1
  return lo


def recall(pred_idx_BxKp, true_idx_Bxk):
  """Mean fraction of the true top-k indices found among the predicted candidates."""
  k, kp = true_idx_Bxk.shape[-1], pred_idx_BxKp.shape[-1]
  pred_RxKp = jnp.sort(pred_idx_BxKp.reshape(-1, kp), axis=-1)
  true_Rxk = true_idx_Bxk.reshape(-1, k)
  pos_Rxk = jax.vmap(jnp.searchsorted)(pred_RxKp, true_Rxk)
  found_Rxk = jnp.take_along_axis(pred_RxKp, jnp.minimum(pos_Rxk, kp - 1), axis=-1) == true_Rxk
  return jnp.mean(found_Rxk.astype(jnp.float32))
