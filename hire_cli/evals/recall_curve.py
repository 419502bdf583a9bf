"""Recall of the HiRE-Softmax approximator as a function of k' (for the eval plot)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hire_cli.lib import data, sharding
from hire_cli.nn import served
from hire_cli.report import reporting


@functools.lru_cache(maxsize=8)
def _rank_fn(graphdef, k_max: int, kp_max: int):
  @jax.jit
  def ranks(params, inputs_BxL):
    """rank_BxLxk: where each of the exact top-k_max tokens sits in the approximator's order
    (kp_max when it is not among its top kp_max)."""
    model = served.bind(graphdef, params)
    # what serving feeds the head (HiRE-FFN included), and the ranking its candidates come from
    h_BxLxD, _ = served.hidden(model, inputs_BxL)
    exact_BxLxV = model.logits(h_BxLxD).astype(jnp.float32)
    true_BxLxk = jax.lax.top_k(exact_BxLxV, k_max)[1]
    approx_BxLxKp = jax.lax.top_k(served.approx_scores(model, h_BxLxD).astype(jnp.float32),
                                  kp_max)[1]
    match_BxLxkxKp = true_BxLxk[..., :, None] == approx_BxLxKp[..., None, :]
    first_BxLxk = jnp.argmax(match_BxLxkxKp, -1)
    return jnp.where(jnp.any(match_BxLxkxKp, -1), first_BxLxk, kp_max)
  return ranks


def softmax_recall_curve(graphdef, params, rows_NxL, batch_size: int, batches: int,
                         k_primes, mesh, ks=(1, 8, 32), *, progress: str = "") -> dict:
  """{"k_prime": [...], "recall@k": [recall at each k'] for k in ks} on validation tokens: the
  fraction of the exact top-k found among the approximator's top-k' (exact candidate top-k).
  `progress` names the phase in progress lines with ETA (none when empty)."""
  cfg = nnx.merge(graphdef, params).cfg
  vocab, first = cfg.vocab_size, cfg.first_input
  k_primes = sorted({min(int(kp), vocab) for kp in k_primes})
  ks = [k for k in ks if k <= vocab]
  ranks = _rank_fn(graphdef, max(ks), max(k_primes))
  found = []
  todo = data.eval_batches(rows_NxL, batch_size, batches)
  for batch in reporting.track(todo, progress) if progress else todo:
    inputs_BxL = sharding.to_global(data.lm_inputs(batch, first), mesh)
    found.append(np.asarray(ranks(params, inputs_BxL)))
  rank_Nxk = np.concatenate([r.reshape(-1, r.shape[-1]) for r in found])
  curve = {"k_prime": k_primes}
  for k in ks:
    curve[f"recall@{k}"] = [float(np.mean(rank_Nxk[:, :k] < kp)) for kp in k_primes]
  return curve
