"""`hire eval`: restore the latest checkpoint and report validation loss and perplexity."""

import math
import pathlib

import jax

from hire_cli import checkpoint, data, errors, loss, optimizer, reporting, sharding, state
from hire_cli.config import ModelConfig


def make_loss_fn(graphdef):
  @jax.jit
  def loss_fn(params, inputs_BxL, targets_BxL):
    model = state.bind(graphdef, params)
    h_BxLxD, _ = model(inputs_BxL)
    return loss.cross_entropy(model.logits(h_BxLxD), targets_BxL)[0]
  return loss_fn


def mean_loss(loss_fn, params, rows_NxL, batch_size, max_batches, mesh) -> float:
  """Mean validation loss over fixed batches (the same every call)."""
  per_process = batch_size // jax.process_count()
  losses = []
  for batch in data.eval_batches(rows_NxL, batch_size, max_batches):
    local = batch[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    losses.append(loss_fn(params, sharding.to_global(data.lm_inputs(local), mesh), sharding.to_global(local, mesh)))
  return float(sum(jax.device_get(losses)) / len(losses))


def restore_params(model_dir: str, model: ModelConfig, mesh):
  """(step, graphdef, params) of the latest checkpoint in `model_dir`."""
  workdir = pathlib.Path(model_dir)
  if not (workdir / "checkpoints").is_dir():
    raise errors.UserError(f"no checkpoints in {workdir}; train first with `hire train "
                           f"--gin.MODEL_DIR={workdir}` or point MODEL_DIR at a trained run")
  mgr = checkpoint.manager(workdir)
  step = mgr.latest_step()
  if step is None:
    raise errors.UserError(f"no complete checkpoint in {workdir / 'checkpoints'}")
  checkpoint.check_compatible(checkpoint.read_meta(mgr, step), model, str(workdir))
  setup = state.create(model, optimizer.OptimizerConfig(), 1, 0, mesh, abstract_only=True)
  restored = checkpoint.restore(mgr, step, setup.state)
  mgr.close()
  return step, setup.graphdef, restored["params"]


def evaluate(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
             mesh_cfg: sharding.MeshConfig, batch_size: int, eval_batches: int = 16,
             unigram_baseline: bool = True) -> dict:
  """Validation loss/perplexity of the latest checkpoint; writes MODEL_DIR/eval/metrics.json."""
  mesh = sharding.make_mesh(mesh_cfg)
  step, graphdef, params = restore_params(model_dir, model, mesh)
  val_rows = data.load_rows(data_cfg, "validation")
  val_loss = mean_loss(make_loss_fn(graphdef), params, val_rows, batch_size, eval_batches, mesh)
  n_batches = len(data.eval_batches(val_rows, batch_size, eval_batches))
  metrics = {"step": int(step), "loss": val_loss, "perplexity": math.exp(min(val_loss, 50)),
             "eval_tokens": n_batches * batch_size * data_cfg.seq_len}
  if unigram_baseline:
    evaluated = val_rows[:n_batches * batch_size]
    metrics["unigram_loss"] = data.unigram_loss(data.load_rows(data_cfg, "train"), evaluated,
                                                model.vocab_size)
  out = pathlib.Path(model_dir) / "eval" / "metrics.json"
  if reporting.is_chief():
    reporting.write_json(out, metrics)
    w = reporting.writer(pathlib.Path(model_dir) / "tb" / "eval")
    w.write_scalars(int(step), {k: v for k, v in metrics.items() if k != "step"})
    w.flush()
  reporting.say(reporting.table(list(metrics.items()), title=f"Evaluation of {model_dir} (step {step})"))
  reporting.say(f"Wrote {out}")
  return metrics
