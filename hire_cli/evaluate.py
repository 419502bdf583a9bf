"""`hire eval`: restore the latest checkpoint and report validation loss and perplexity, and for
HiRE variants the recall of every approximator and what HiRE inference serves."""

import math
import pathlib

import jax
import jax.numpy as jnp

from hire_cli import (checkpoint, data, errors, eval_report, latency, loss, optimizer, plots,
                      recall_curve, reporting, sharding, softmax, state)
from hire_cli import downstream as hire_downstream
from hire_cli.config import ModelConfig


def make_eval_fn(graphdef, ks=(1, 8, 32)):
  """Jitted per-batch metrics: exact validation loss; with HiRE layers also the per-layer recall
  of the approximators, and what HiRE inference serves (FFN on predicted groups, softmax on the
  candidates): served loss, recall/softmax@k and top-1 agreement with the exact model."""

  @jax.jit
  def eval_fn(params, inputs_BxL, targets_BxL):
    model = state.bind(graphdef, params)
    h_BxLxD, _ = model(inputs_BxL)
    exact_BxLxV = model.logits(h_BxLxD)
    out = {"loss": loss.cross_entropy(exact_BxLxV, targets_BxL)[0]}
    _, aux = loss.collect_aux(model)
    out.update({k: v for k, v in aux.items() if k.startswith("recall/ffn")})
    cfg = model.cfg
    if cfg.hire_softmax is None and cfg.hire_ffn is None:
      return out
    exact_top1_BxL = jnp.argmax(exact_BxLxV, -1)
    hs_BxLxD, _ = model(inputs_BxL, hire=True)  # FFN layers on their predicted groups
    served_BxLxV = model.logits(hs_BxLxD)
    loss.collect_aux(model)  # discard what the served pass sowed
    if cfg.hire_ffn is not None:
      out["top1_agreement/ffn"] = jnp.mean(jnp.argmax(served_BxLxV, -1) == exact_top1_BxL)
    if cfg.hire_softmax is not None:
      cand_BxLxKp = model.head.candidates(hs_BxLxD)
      out.update(softmax.served_metrics(served_BxLxV, cand_BxLxKp, targets_BxL, ks,
                                        exact_top1_BxL))
    else:
      out["served_loss"] = loss.cross_entropy(served_BxLxV, targets_BxL)[0]
      out["top1_agreement"] = out["top1_agreement/ffn"]
    return out

  return eval_fn


def mean_metrics(eval_fn, params, rows_NxL, batch_size, max_batches, mesh) -> dict:
  """Metrics averaged over fixed validation batches (the same every call)."""
  per_process = batch_size // jax.process_count()
  results = []
  for batch in data.eval_batches(rows_NxL, batch_size, max_batches):
    local = batch[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    results.append(eval_fn(params, sharding.to_global(data.lm_inputs(local), mesh),
                           sharding.to_global(local, mesh)))
  results = jax.device_get(results)
  return {k: float(sum(r[k] for r in results) / len(results)) for k in results[0]}


def restore_params(model_dir: str, model: ModelConfig, mesh):
  """(step, graphdef, params) of the latest checkpoint in `model_dir`."""
  workdir = pathlib.Path(model_dir)
  if not (workdir / "checkpoints").is_dir():
    raise errors.UserError(f"no checkpoints in {workdir}; train first with `hire train "
                           f"--gin.MODEL_DIR={workdir}` or point MODEL_DIR at a trained run")
  mgr = checkpoint.manager(workdir)

  def target(meta):  # a post-hoc run's optimizer state has another structure
    return state.create(model, optimizer.OptimizerConfig(), 1, 0, mesh, abstract_only=True,
                        freeze_model=_is_post_hoc(meta)).state

  found = checkpoint.restore_latest_good(
      mgr, target,
      lambda meta: checkpoint.check_compatible(meta, model, target(meta)["params"], str(workdir)))
  mgr.close()
  if found is None:
    raise errors.UserError(f"no complete checkpoint in {workdir / 'checkpoints'}")
  step, restored, _ = found
  return step, state.abstract_model(model)[0], restored["params"]


def _is_post_hoc(meta: dict) -> bool:
  return bool(meta.get("post_hoc", False))


def evaluate(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
             mesh_cfg: sharding.MeshConfig, batch_size: int, eval_batches: int = 16,
             unigram_baseline: bool = True, downstream: bool = True, downstream_dir: str = "",
             downstream_shots: int = 0, downstream_limit: int = 0, latency_steps: int = 16,
             recall_k_primes=(32, 64, 128, 256, 512, 1024), recall_batches: int = 2) -> dict:
  """One report for the latest checkpoint: validation loss/perplexity (exact and served by
  HiRE), downstream accuracy (exact and HiRE), top-k recall per HiRE layer and top-1 agreement,
  and decode ms/token at batch 1. Writes MODEL_DIR/eval/{metrics.json,report.md,*.png} and
  TensorBoard scalars at the checkpoint's step."""
  mesh = sharding.make_mesh(mesh_cfg)
  step, graphdef, params = restore_params(model_dir, model, mesh)
  val_rows = data.load_rows(data_cfg, "validation")
  reporting.say(f"Evaluating {model_dir} at step {step}: validation loss and recall ...")
  found = mean_metrics(make_eval_fn(graphdef), params, val_rows, batch_size, eval_batches, mesh)
  n_batches = len(data.eval_batches(val_rows, batch_size, eval_batches))
  metrics = {"step": int(step), "loss": found.pop("loss"),
             "eval_tokens": n_batches * batch_size * data_cfg.seq_len}
  metrics["perplexity"] = math.exp(min(metrics["loss"], 50))
  if "served_loss" in found:
    found["served_perplexity"] = math.exp(min(found["served_loss"], 50))
  metrics.update(found)
  if unigram_baseline:
    evaluated = val_rows[:n_batches * batch_size]
    metrics["unigram_loss"] = data.unigram_loss(data.load_rows(data_cfg, "train"), evaluated,
                                                model.vocab_size)
  curve = None
  if model.hire_softmax is not None and recall_k_primes:
    curve = recall_curve.softmax_recall_curve(graphdef, params, val_rows, batch_size,
                                              recall_batches, recall_k_primes, mesh)
  if downstream and jax.process_count() == 1:
    metrics.update(hire_downstream.evaluate_downstream(
        graphdef, params, model, data_dir=downstream_dir, shots=downstream_shots,
        limit=downstream_limit, batch_size=batch_size, vocab_path=data_cfg.vocab_path))
  if latency_steps and jax.process_count() == 1:
    reporting.say(f"Timing {latency_steps} decode steps at batch 1 ...")
    metrics.update(latency.decode_latency(graphdef, params, model, latency_steps))
  out_dir = pathlib.Path(model_dir) / "eval"
  if reporting.is_chief():
    reporting.write_json(out_dir / "metrics.json", metrics)
    if curve:
      reporting.write_json(out_dir / "softmax_recall_curve.json", curve)
    w = reporting.writer(pathlib.Path(model_dir) / "tb" / "eval")
    w.write_scalars(int(step), {k: v for k, v in metrics.items() if k != "step"})
    w.flush()
    pngs = plots.eval_plots(metrics, curve, out_dir)
    eval_report.write(out_dir / "report.md", model_dir, metrics, curve, pngs)
  reporting.say(reporting.table(list(metrics.items()),
                                title=f"Evaluation of {model_dir} (step {step})"))
  reporting.say(f"Wrote {out_dir / 'metrics.json'} and {out_dir / 'report.md'}")
  return metrics
