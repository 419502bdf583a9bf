"""`hire train`: pretraining with periodic evaluation, Orbax checkpoints and exact resume."""

import contextlib
import dataclasses
import math
import pathlib
import time

import jax

from hire_cli import errors, validate
from hire_cli.evals import metrics as val_metrics
from hire_cli.lib import (
  checkpoint,
  data,
  lock,
  optimizer,
  sharding,
  state,
  train_cost,
  train_step,
  writable,
)
from hire_cli.lib import stop as stop_flag
from hire_cli.nn.config import ModelConfig
from hire_cli.report import reporting

make_train_step = train_step.make  # where tests and callers have found it


def train(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
          opt: optimizer.OptimizerConfig, mesh_cfg: sharding.MeshConfig, train_steps: int,
          batch_size: int, seed: int = 0, checkpoint_every: int = 100, keep_checkpoints: int = 3,
          log_every: int = 10, eval_every: int = 0, eval_batches: int = 8,
          post_hoc_from: str = "", start_over: bool = False, grad_accum_steps: int = 1,
          device_memory_gb: float = 0.0, peak_tflops: float = 0.0, dry_run: bool = False,
          operative_config: str = "") -> dict:
  """Trains until `train_steps`, resuming from the latest checkpoint in `model_dir`.

  `post_hoc_from` (a dense run's MODEL_DIR) is HiRE's post-hoc mode: the model starts from that
  checkpoint, stays frozen, and only the approximators (SVD-initialised) are trained.
  `start_over` trains from step 0 when every checkpoint in `model_dir` is damaged (they are set
  aside); without it such a run is refused. `grad_accum_steps` averages the gradients of that
  many micro-batches per update. The train step is compiled before anything is written and its
  bytes per device are logged; a run that cannot fit `device_memory_gb` (0 = what the device
  reports; unknown on CPU) is refused. `peak_tflops` (0 = the table in lib/train_cost.py) is the
  device peak that MFU is measured against.

  Every setting is checked before anything is written; the run holds MODEL_DIR/.lock throughout
  (one writer per run folder). Returns the final metrics (last train loss, validation loss if
  evaluated)."""
  validate.arguments(train, locals())
  plan = check_run(model_dir=model_dir, model=model, data_cfg=data_cfg, mesh_cfg=mesh_cfg,
                   batch_size=batch_size, post_hoc_from=post_hoc_from, evaluates=eval_every > 0,
                   grad_accum_steps=grad_accum_steps)
  mesh = plan["mesh"]
  setup = state.create(model, opt, train_steps, seed, mesh, abstract_only=True,
                       freeze_model=bool(post_hoc_from))
  step_fn, cost = train_cost.compile_step(train_step.make(setup, grad_accum_steps), setup.state,
                                          batch_size, data_cfg.seq_len, mesh)
  limit = train_cost.device_memory(jax.local_devices()[0], device_memory_gb)
  reporting.say(train_cost.describe(cost, limit))
  train_cost.check_fits(cost, limit, mesh)
  workdir = pathlib.Path(model_dir)
  if dry_run:  # `hire train --dry_run`: what the run would do, nothing written
    return {**_describe(workdir, model, data_cfg, plan, train_steps, batch_size, post_hoc_from),
            **{f"bytes_per_device/{k}": getattr(cost, k)
               for k in ("params", "opt", "activations", "temp", "total")}}
  writable.check(workdir, "MODEL_DIR")
  speed = {"flops_per_token": model.train_flops_per_token(data_cfg.seq_len),
           "peak": train_cost.peak_flops(jax.local_devices()[0], peak_tflops)}
  with lock.RunLock(workdir) if reporting.is_chief() else contextlib.nullcontext():
    return _train(workdir, model, data_cfg, opt, setup, step_fn, plan["rows"], train_steps,
                  batch_size, seed, checkpoint_every, keep_checkpoints, log_every, eval_every,
                  eval_batches, post_hoc_from, start_over, operative_config, speed)


def check_run(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
              mesh_cfg: sharding.MeshConfig, batch_size: int, post_hoc_from: str = "",
              evaluates: bool = False, grad_accum_steps: int = 1) -> dict:
  """What `train` checks before it writes anything (also `hire train --dry_run`): the model
  against the data (and the validation data if `evaluates`), the mesh and the checkpoints
  already in MODEL_DIR. {"mesh", "rows"}."""
  if not model_dir:
    raise errors.UserError("MODEL_DIR is empty; pass --gin.MODEL_DIR=runs/NAME")
  if data_cfg.seq_len > model.max_len:
    raise errors.UserError(f"SEQ_LEN={data_cfg.seq_len} exceeds the model's "
                           f"max_len={model.max_len}")
  mesh = sharding.make_mesh(mesh_cfg)
  shards = sharding.batch_shards(mesh)
  if grad_accum_steps < 1 or batch_size % (shards * grad_accum_steps):
    raise errors.UserError(
        f"BATCH_SIZE={batch_size} must divide into GRAD_ACCUM_STEPS={grad_accum_steps} "
        f"micro-batches split over the mesh's data x fsdp axes ({shards} devices); use a "
        f"multiple of {shards * max(grad_accum_steps, 1)}")
  data.check(data_cfg, "train")  # the train data, then the validation data: cheap checks first
  if evaluates:
    data.check(data_cfg, "validation")
  rows_NxL = data.load_rows(data_cfg, "train")
  vocab_size = int(rows_NxL.max()) + 1
  if vocab_size > model.vocab_size:
    raise errors.UserError(
        f"the data has token ids up to {vocab_size - 1} but the model's vocab_size is "
        f"{model.vocab_size}; set ModelConfig.vocab_size to the vocabulary's size")
  if post_hoc_from and not model.has_hire:
    raise errors.UserError("POST_HOC_FROM is set but the model has no HiRE layer; include a "
                           "configs/variants/hire*.gin file")
  if post_hoc_from:
    _post_hoc_source(post_hoc_from, model)
  meta = checkpoint.latest_meta(model_dir)
  if meta is not None:  # a resume: the same model (shapes and dtypes)
    abstract = state.abstract_model(model)[1]
    checkpoint.check_compatible(meta, model, abstract, str(model_dir))
  return {"mesh": mesh, "rows": rows_NxL}


def _describe(workdir: pathlib.Path, model: ModelConfig, data_cfg, plan: dict, train_steps: int,
              batch_size: int, post_hoc_from: str) -> dict:
  meta = checkpoint.latest_meta(workdir)
  start = int(meta["step"]) if meta else 0
  mesh = plan["mesh"]
  out = {"model_dir": str(workdir), "params": model.num_params(), "start_step": start,
         "train_steps": train_steps, "batch_size": batch_size, "seq_len": data_cfg.seq_len,
         "task": data_cfg.task, "train_rows": len(plan["rows"]),
         "data_fingerprint": data.record(data_cfg, "train")["fingerprint"][:16],
         "mesh": dict(mesh.shape), "hire_softmax": model.hire_softmax is not None,
         "hire_ffn": model.hire_ffn is not None, "post_hoc_from": post_hoc_from}
  reporting.say(reporting.table(list(out.items()), title="hire train --dry_run: the settings "
                                "are valid; this run would"))
  reporting.say(f"{'resume from step ' + str(start) if start else 'start from scratch'}, train to "
                f"step {train_steps}, and write {workdir}/ (checkpoints/, config.gin, tb/, "
                "history.jsonl). Nothing was written.")
  return out


def _train(workdir: pathlib.Path, model: ModelConfig, data_cfg, opt, setup, step_fn, rows_NxL,
           train_steps: int, batch_size: int, seed: int, checkpoint_every: int,
           keep_checkpoints: int, log_every: int, eval_every: int, eval_batches: int,
           post_hoc_from: str, start_over: bool, operative_config: str, speed: dict) -> dict:
  mesh = setup.mesh
  stream = data.BatchStream(rows_NxL, batch_size, seed, jax.process_index(), jax.process_count())
  val_rows = data.load_rows(data_cfg, "validation") if eval_every else None
  post_hoc = bool(post_hoc_from)
  mgr = checkpoint.manager(workdir, max_to_keep=keep_checkpoints)
  # A `hire import` folder holds parameters only: fine-tuning starts from them at step 0.
  imported = bool((checkpoint.latest_meta(workdir) or {}).get("imported")) and not post_hoc
  found, restored, _, damaged = (None, None, None, []) if imported else \
      checkpoint.restore_latest_good(
          mgr, lambda meta: setup.state,
          lambda meta: checkpoint.check_compatible(meta, model, setup.state["params"],
                                                   str(workdir)))
  if found is None and damaged and not start_over:
    raise errors.UserError(
        f"every checkpoint in {workdir / 'checkpoints'} is damaged ({damaged[0][1]}); nothing "
        "was changed. To train from step 0 instead, pass --gin.START_OVER=True (the damaged "
        "checkpoints are then moved to damaged_checkpoints/)")
  checkpoint.set_aside(mgr, damaged)  # out of the way of the saves that redo their steps
  if reporting.is_chief() and operative_config:  # written once nothing can refuse the run
    (workdir / "config.gin").write_text(operative_config)
  if found is not None:
    setup.state = restored
    start = int(setup.state["step"])
    reporting.say(f"Resuming from checkpoint at step {start} in {workdir / 'checkpoints'}")
  else:
    setup = state.create(model, opt, train_steps, seed, mesh, freeze_model=post_hoc)
    start = 0
    if imported:
      _, _, params = checkpoint.restore_params(workdir, model, mesh)
      setup.state["params"] = jax.device_put(params, setup.state_shardings["params"])
    if post_hoc:
      dense_cfg = _post_hoc_source(post_hoc_from, model)
      dense_step, _, dense_params = checkpoint.restore_params(post_hoc_from, dense_cfg, mesh)
      setup.state["params"] = state.post_hoc_params(
          setup.graphdef, setup.state["params"], dense_params, setup.state_shardings["params"])
      reporting.say(f"Post-hoc HiRE: model frozen at {post_hoc_from} step {dense_step}; "
                    "training the approximators only")
    how = "Fine-tuning from step 0" if imported else "Starting from scratch"
    reporting.say(f"{how} in {workdir} ({model.num_params() / 1e6:.2f}M params, "
                  f"{len(rows_NxL)} train rows of {data_cfg.seq_len} tokens)")
  if start >= train_steps:
    reporting.say(f"Already at step {start} >= TRAIN_STEPS={train_steps}; nothing to train.")
    return {"step": start}

  eval_fn = val_metrics.make_eval_fn(setup.graphdef) if eval_every else None
  writer = reporting.writer(workdir / "tb" / "train")
  history = workdir / "history.jsonl"  # the same scalars as TensorBoard, one JSON object a line
  progress = reporting.Progress(start, train_steps)
  reporting.append_jsonl(history, {"step": start, "data": {  # what the numbers below are from
      "train": data.record(data_cfg, "train"),
      **({"validation": data.record(data_cfg, "validation")} if eval_every else {})}})
  st = setup.state
  first = model.first_input  # BOS for a BOS model
  pending = None  # metrics of the previous step, pulled after the next one is dispatched
  last = {}
  mark = None  # (step, time) of the last log line: tokens/s and MFU over the steps since

  def flush(step_done, metrics):
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    finite_params = bool(m.pop("params_finite"))
    if not (math.isfinite(m["loss"]) and finite_params):
      what = f"loss became {m['loss']}" if not math.isfinite(m["loss"]) else \
          "the parameters became non-finite"
      raise FloatingPointError(
          f"{what} at step {step_done}; no checkpoint was written for it. Lower LEARNING_RATE "
          f"or check the data; the run can resume from step {mgr.latest_step()}")
    return m

  with stop_flag.StopFlag() as stop:
    for step in range(start, train_steps):
      targets_BxL = stream.batch(step)
      inputs = sharding.to_global(data.lm_inputs(targets_BxL, first), mesh)
      targets = sharding.to_global(targets_BxL, mesh)
      st, metrics = step_fn(st, inputs, targets)
      done = step + 1
      if pending is not None:
        last = flush(*pending)
        if pending[0] % log_every == 0 or pending[0] == start + 1:
          lr = float(optimizer.schedule(opt, train_steps)(pending[0] - 1))
          now, speed_line, rate = time.perf_counter(), "", {}
          if mark is not None:
            rate = train_cost.throughput((pending[0] - mark[0]) * batch_size * data_cfg.seq_len,
                                         now - mark[1], mesh.size, speed["flops_per_token"],
                                         speed["peak"])
            mfu = f"{rate['mfu']:.1%}" if speed["peak"] else "n/a"
            speed_line = f" tok/s/device {rate['tokens_per_s_per_device']:,.0f} MFU {mfu}"
          mark = (pending[0], now)
          known = {k: v for k, v in rate.items() if k != "mfu" or speed["peak"]}
          writer.write_scalars(pending[0], {**last, "learning_rate": lr, **known})
          reporting.append_jsonl(history, {"step": pending[0], **last, "learning_rate": lr,
                                           **{k: rate[k] if k in known else "n/a" for k in rate}})
          extra = "".join(f" {k} {v:.3f}" for k, v in last.items() if k.startswith("recall/")
                          and k.count("/") == 1)
          reporting.say(progress.line(
              pending[0], f"loss {last['loss']:.4f}{extra} lr {lr:.2e}{speed_line}"))
      pending = (done, metrics)
      should_save = done % checkpoint_every == 0 or done == train_steps or stop.check(done)
      if should_save:
        last = flush(*pending)  # never checkpoint a non-finite state
      if eval_every and done % eval_every == 0:
        found = val_metrics.mean_metrics(eval_fn, st["params"], val_rows, batch_size,
                                         eval_batches, mesh, first=first)
        val = found["loss"]
        writer.write_scalars(done, {f"eval/{k}": v for k, v in found.items()})
        reporting.append_jsonl(history, {"step": done, **{f"eval/{k}": v for k, v in found.items()}})
        extra = "".join(f", {k} {v:.3f}" for k, v in found.items()
                        if k.startswith(("recall/softmax@", "served_loss", "top1_agreement")) or
                        (k.startswith("recall/ffn@")))
        reporting.say(f"  eval at step {done}: validation loss {val:.4f} "
                      f"(perplexity {math.exp(min(val, 50)):.1f}){extra}")
        last["eval_loss"] = val
      if should_save:
        meta = checkpoint.meta_for(model, data_cfg, done, seed, st["params"])
        try:
          checkpoint.save(mgr, done, st, {**meta, "post_hoc": post_hoc})
        except OSError as e:
          raise errors.UserError(
              f"could not save the checkpoint of step {done} in {workdir} ({e.strerror or e}); "
              f"free space there and rerun: it resumes from step {mgr.latest_step()}, which is "
              "intact") from None
      if stop.requested:
        reporting.say(f"{stop.signal} received: saved checkpoint at step {done}, exiting.")
        if stop.signal == "SIGINT":
          writer.flush()
          mgr.close()
          raise errors.Interrupted(f"interrupted: saved the checkpoint of step {done}; rerun the "
                                   "same command to resume")
        break
    if pending is not None:
      last = flush(*pending)
  writer.flush()
  mgr.close()
  final_step = int(jax.device_get(st["step"]))
  word = "Finished" if final_step >= train_steps else "Stopped early"
  reporting.say(f"{word} at step {final_step} of {train_steps}: train loss "
                f"{last.get('loss', float('nan')):.6f}"
                + ("" if final_step >= train_steps else "; rerun the same command to resume"))
  return {"step": final_step, **last}


def _post_hoc_source(post_hoc_from: str, model: ModelConfig) -> ModelConfig:
  """The config of the run HiRE is added to: `model` without its HiRE-Softmax, and with the
  FFN that run was trained with. A top-k FFN cannot be added to a dense FFN after the fact
  without changing the model, so that is refused instead of done silently."""
  meta = checkpoint.latest_meta(post_hoc_from)
  trained_topk_ffn = bool(meta and meta.get("model", {}).get("hire_ffn"))
  if model.hire_ffn is not None and not trained_topk_ffn:
    raise errors.UserError(
        f"POST_HOC_FROM={post_hoc_from} has a dense FFN, and HiRE-FFN needs a model pretrained "
        "with the top-k FFN (making it top-k now would change the model); add HiRE-Softmax "
        "alone (configs/variants/hire_softmax.gin) or train a hire_ffn variant from scratch")
  return dataclasses.replace(model, hire_softmax=None,
                             hire_ffn=model.hire_ffn if trained_topk_ffn else None)
