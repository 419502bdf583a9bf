"""Validation metrics of a checkpoint's parameters: exact loss, and for HiRE layers the recall
of every approximator and what HiRE inference serves (used by `hire eval` and by training's
periodic evaluation)."""

import jax
import jax.numpy as jnp

from hire_cli.lib import data, sharding, state
from hire_cli.evals import served_metrics
from hire_cli.nn import loss, served
from hire_cli.report import reporting


def make_eval_fn(graphdef, ks=(1, 8, 32), mesh=None):
  """Jitted per-batch metrics: exact validation loss; with HiRE layers also the per-layer recall
  of the approximators, and what HiRE inference serves (FFN on predicted groups, softmax on the
  candidates): served loss, recall/softmax@k and top-1 agreement with the exact model. With
  `mesh`, layers selecting with `da_top_k` serve sharded (`nn/mesh_serve.py`) and the recall of
  their selection is reported next to the formula's (`served.selection_recall`)."""

  @jax.jit
  def eval_fn(params, inputs_BxL, targets_BxL):
    model = state.bind(graphdef, params)
    exact_BxLxV, sown = model.logits_with_aux(inputs_BxL)
    out = {"loss": loss.cross_entropy(exact_BxLxV, targets_BxL)[0]}
    _, aux = loss.collect_aux(sown)
    out.update({k: v for k, v in aux.items() if k.startswith(("recall/ffn", "recall_shared/ffn"))})
    cfg = model.cfg
    if not cfg.has_hire:
      return out
    exact_top1_BxL = jnp.argmax(exact_BxLxV, -1)
    served_model = served.bind(graphdef, params, mesh)
    out_served = served.forward(served_model, inputs_BxL, measure_selection=mesh is not None)
    out.update(out_served.get("selection", {}))
    served_BxLxV = out_served["logits"]
    if cfg.hire_ffn is not None:
      out["top1_agreement/ffn"] = jnp.mean(jnp.argmax(served_BxLxV, -1) == exact_top1_BxL)
    if cfg.hire_softmax is not None:
      out.update(served_metrics.served_metrics(served_BxLxV, out_served["cand"], targets_BxL, ks,
                                               exact_top1_BxL, out_served["scores"],
                                               out_served["top1"]))
    else:
      out["served_loss"] = loss.cross_entropy(served_BxLxV, targets_BxL)[0]
      out["top1_agreement"] = out["top1_agreement/ffn"]
    return out

  return eval_fn


def mean_metrics(eval_fn, params, rows_NxL, batch_size, max_batches, mesh, *,
                 progress: str = "", first: int = 0) -> dict:
  """Metrics averaged over fixed validation batches (the same every call); `progress` names
  the phase in progress lines with ETA (none when empty, as in training's periodic eval);
  `first` is the id each row's inputs start with (`data.lm_inputs`: a BOS model's bos_id)."""
  per_process = batch_size // jax.process_count()
  results = []
  batches = data.eval_batches(rows_NxL, batch_size, max_batches)
  for batch in reporting.track(batches, progress) if progress else batches:
    local = batch[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    results.append(eval_fn(params, sharding.to_global(data.lm_inputs(local, first), mesh),
                           sharding.to_global(local, mesh)))
    if progress:
      jax.block_until_ready(results[-1])  # done when computed, not when dispatched
  results = jax.device_get(results)
  return {k: float(sum(r[k] for r in results) / len(results)) for k in results[0]}
