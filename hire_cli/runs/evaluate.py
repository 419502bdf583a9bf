"""`hire eval`: restore the latest checkpoint and report validation loss and perplexity, and for
HiRE variants the recall of every approximator and what HiRE inference serves."""

import math
import pathlib

import jax

from hire_cli import errors, validate
from hire_cli.evals import latency, recall_curve
from hire_cli.evals import metrics as metrics_lib
from hire_cli.lib import checkpoint, data, data_config, sharding, writable
from hire_cli.nn.config import ModelConfig
from hire_cli.report import eval_report, plots, reporting


def evaluate(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
             mesh_cfg: sharding.MeshConfig, batch_size: int, eval_batches: int = 16,
             unigram_baseline: bool = True, downstream: bool = True, downstream_dir: str = "",
             downstream_shots: int = 0, downstream_limit: int = 0,
             minimal_pairs_limit: int = 0, latency_steps: int = 16,
             recall_k_primes=(32, 64, 128, 256, 512, 1024), recall_batches: int = 2) -> dict:
  """One report for the latest checkpoint: validation loss/perplexity (exact and served by
  HiRE), downstream accuracy (exact and HiRE), top-k recall per HiRE layer and top-1 agreement,
  and decode ms/token at batch 1. Writes MODEL_DIR/eval/<data>/{metrics.json,report.md,*.png}
  and TensorBoard scalars under tb/eval/<data> at the checkpoint's step, where <data> names the
  validation data (the task; for text files also their names): another dataset gets another
  folder, and metrics.json records the data (task, files, fingerprint)."""
  validate.arguments(evaluate, locals())
  if data_cfg.seq_len > model.max_len:
    raise errors.UserError(f"SEQ_LEN={data_cfg.seq_len} exceeds the model's "
                           f"max_len={model.max_len}; evaluate with the SEQ_LEN it was trained on")
  data.check(data_cfg, "validation")  # a bad task or glob is refused before anything is written
  train_data = unigram_baseline and _has_train_split(data_cfg)
  if train_data:
    data.check(data_cfg, "train")
  mesh = sharding.make_mesh(mesh_cfg)
  step, graphdef, params = checkpoint.restore_params(model_dir, model, mesh)
  name = data_config.eval_name(data_cfg)
  out_dir = pathlib.Path(model_dir) / "eval" / name
  writable.check(out_dir, "MODEL_DIR/eval")  # before minutes of work, not after
  val_rows = data.load_rows(data_cfg, "validation")
  reporting.say(f"Evaluating {model_dir} at step {step} on {name}")
  found = metrics_lib.mean_metrics(metrics_lib.make_eval_fn(graphdef, mesh=mesh), params, val_rows,
                                   batch_size, eval_batches, mesh,
                                   progress="validation loss and recall",
                                   first=model.first_input)
  n_batches = len(data.eval_batches(val_rows, batch_size, eval_batches))
  metrics = {"step": int(step), "loss": found.pop("loss"),
             "eval_tokens": n_batches * batch_size * data_cfg.seq_len}
  metrics["perplexity"] = math.exp(min(metrics["loss"], 50))
  if "served_loss" in found:
    found["served_perplexity"] = math.exp(min(found["served_loss"], 50))
  metrics.update(found)
  metrics["data"] = {"validation": data.record(data_cfg, "validation")}
  if train_data:  # an add-one unigram model of TASK's train split, for scale
    evaluated = val_rows[:n_batches * batch_size]
    metrics["unigram_loss"] = data.unigram_loss(data.load_rows(data_cfg, "train"), evaluated,
                                                model.vocab_size)
    metrics["data"]["unigram_train"] = data.record(data_cfg, "train")
  curve = None
  if model.hire_softmax is not None and recall_k_primes:
    curve = recall_curve.softmax_recall_curve(graphdef, params, val_rows, batch_size,
                                              recall_batches, recall_k_primes, mesh,
                                              progress="softmax recall curve")
  items = {}
  if downstream and jax.process_count() == 1:
    from hire_cli.evals import downstream as hire_downstream  # seqio: only when it is needed
    metrics.update(hire_downstream.evaluate_downstream(
        graphdef, params, model, data_dir=downstream_dir, shots=downstream_shots,
        limit=downstream_limit, pairs_limit=minimal_pairs_limit, batch_size=batch_size,
        vocab_path=data_cfg.vocab_path, items=items))
    from hire_cli.lib import downstream_tasks
    metrics["data"]["downstream"] = downstream_tasks.record(downstream_dir)
  if latency_steps and jax.process_count() == 1:
    metrics.update(latency.decode_latency(graphdef, params, model, latency_steps, mesh=mesh,
                                          progress="decode latency (paths timed)"))
  if reporting.is_chief():
    reporting.write_json(out_dir / "metrics.json", metrics)
    if curve:
      reporting.write_json(out_dir / "softmax_recall_curve.json", curve)
    if items:  # per-question outcomes: `hire compare` pairs runs on the same questions
      reporting.write_json(out_dir / "downstream_items.json",
                           {"step": int(step), "data": metrics["data"].get("downstream"),
                            "tasks": items})
    w = reporting.writer(pathlib.Path(model_dir) / "tb" / "eval" / name)
    w.write_scalars(int(step), {k: v for k, v in metrics.items() if k not in ("step", "data")})
    w.flush()
    pngs = plots.eval_plots(metrics, curve, out_dir)
    eval_report.write(out_dir / "report.md", model_dir, metrics, curve, pngs)
  reporting.say(reporting.table(eval_report.display_rows({k: v for k, v in metrics.items()
                                                          if k != "data"}),
                                title=f"Evaluation of {model_dir} (step {step}) on {name}"))
  reporting.say(f"Wrote {out_dir / 'metrics.json'} and {out_dir / 'report.md'}")
  return metrics


def _has_train_split(data_cfg: data.DataConfig) -> bool:
  """Whether TASK has train data for the unigram baseline (text files without TRAIN_FILES
  have none: the baseline is then left out)."""
  return not (data_cfg.task == data_config.TEXT_TASK and not data_cfg.train_files)
