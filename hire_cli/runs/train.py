"""`hire train`: pretraining with periodic evaluation, Orbax checkpoints and exact resume."""

import contextlib
import dataclasses
import math
import pathlib
import time
from typing import Any

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
  train_plan,
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
  train_plan.check_steps(train_steps, post_hoc_from)
  plan = train_plan.check(model_dir=model_dir, model=model, data_cfg=data_cfg, mesh_cfg=mesh_cfg,
                          batch_size=batch_size, post_hoc_from=post_hoc_from,
                          evaluates=eval_every > 0, grad_accum_steps=grad_accum_steps)
  mesh = plan["mesh"]
  reporting.say(sharding.describe(mesh))  # the first line of the log: where the run runs
  setup = state.create(model, opt, train_steps, seed, mesh, abstract_only=True,
                       freeze_model=bool(post_hoc_from))
  # TRAIN_STEPS=0 (post-hoc, untrained) runs no step: nothing to compile or to fit
  step_fn, cost = train_plan.compile_checked(
      setup, grad_accum_steps, batch_size, data_cfg.seq_len, mesh, device_memory_gb,
      reporting.say) if train_steps or dry_run else (None, None)
  workdir = pathlib.Path(model_dir)
  if dry_run:  # `hire train --dry_run`: what the run would do, nothing written
    return {**_describe(workdir, model, data_cfg, plan, train_steps, batch_size, post_hoc_from),
            **{f"bytes_per_device/{k}": getattr(cost, k)
               for k in ("params", "opt", "activations", "temp", "total")}}
  writable.check(workdir, "MODEL_DIR")
  speed = {"flops_per_token": model.train_flops_per_token(data_cfg.seq_len),
           "peak": train_cost.peak_flops(jax.local_devices()[0], peak_tflops)}
  with lock.RunLock(workdir) if reporting.is_chief() else contextlib.nullcontext():
    run = _Run(workdir=workdir, history=workdir / "history.jsonl", model=model,
               data_cfg=data_cfg, opt=opt, mesh=mesh, train_steps=train_steps,
               batch_size=batch_size, seed=seed, checkpoint_every=checkpoint_every,
               log_every=log_every, eval_every=eval_every, eval_batches=eval_batches,
               post_hoc=bool(post_hoc_from), speed=speed)
    return _train(run, setup=setup, step_fn=step_fn, rows_NxL=plan["rows"],
                  keep_checkpoints=keep_checkpoints, post_hoc_from=post_hoc_from,
                  start_over=start_over, operative_config=operative_config)


def _describe(workdir: pathlib.Path, model: ModelConfig, data_cfg, plan: dict, train_steps: int,
              batch_size: int, post_hoc_from: str) -> dict:
  out = train_plan.summary(workdir, model, data_cfg, plan, train_steps, batch_size, post_hoc_from)
  start = out["start_step"]
  reporting.say(reporting.table(list(out.items()), title="hire train --dry_run: the settings "
                                "are valid; this run would"))
  reporting.say(f"{'resume from step ' + str(start) if start else 'start from scratch'}, train to "
                f"step {train_steps}, and write {workdir}/ (checkpoints/, config.gin, tb/, "
                "history.jsonl). Nothing was written.")
  return out


@dataclasses.dataclass
class _Run:
  """What the steps of the training loop share: `train`'s settings and what the run writes to."""
  workdir: pathlib.Path
  history: pathlib.Path  # the same scalars as TensorBoard, one JSON object a line
  model: ModelConfig
  data_cfg: data.DataConfig
  opt: optimizer.OptimizerConfig
  mesh: Any
  train_steps: int
  batch_size: int
  seed: int
  checkpoint_every: int
  log_every: int
  eval_every: int
  eval_batches: int
  post_hoc: bool
  speed: dict  # flops_per_token, peak (FLOP/s per device; 0 = unknown)
  mgr: Any = None  # the Orbax CheckpointManager
  writer: Any = None  # TensorBoard
  progress: Any = None
  eval_fn: Any = None
  val_rows_NxL: Any = None
  mark: tuple | None = None  # (step, time) of the last log line: tokens/s and MFU since


def _train(run: _Run, *, setup, step_fn, rows_NxL, keep_checkpoints: int, post_hoc_from: str,
           start_over: bool, operative_config: str) -> dict:
  stream = data.BatchStream(rows_NxL, run.batch_size, run.seed, jax.process_index(),
                            jax.process_count())
  run.val_rows_NxL = data.load_rows(run.data_cfg, "validation") if run.eval_every else None
  run.mgr = checkpoint.manager(run.workdir, max_to_keep=keep_checkpoints)
  setup, start = _resume_or_start(run, setup, rows_NxL=rows_NxL, post_hoc_from=post_hoc_from,
                                  start_over=start_over, operative_config=operative_config)
  if start == run.train_steps == 0:  # post-hoc, untrained: Q from W, LR from the SVD of W
    _save(run, setup.state, 0)
    run.mgr.close()
    reporting.say("TRAIN_STEPS=0: saved the approximators as initialised (untrained) at step 0")
    return {"step": 0}
  if start >= run.train_steps:
    reporting.say(f"Already at step {start} >= TRAIN_STEPS={run.train_steps}; nothing to train.")
    return {"step": start}
  run.eval_fn = val_metrics.make_eval_fn(setup.graphdef) if run.eval_every else None
  run.writer = reporting.writer(run.workdir / "tb" / "train")
  run.progress = reporting.Progress(start, run.train_steps)
  reporting.append_jsonl(run.history, {"step": start, "data": {  # what the numbers are from
      "train": data.record(run.data_cfg, "train"),
      **({"validation": data.record(run.data_cfg, "validation")} if run.eval_every else {})}})
  st, last = _loop(run, setup.state, start=start, stream=stream, step_fn=step_fn)
  return _finish(run, st, last)


def _resume_or_start(run: _Run, setup, *, rows_NxL, post_hoc_from: str, start_over: bool,
                     operative_config: str):
  """(setup, first step): the newest good checkpoint (damaged ones set aside), else a new state
  (from an imported folder's parameters, or a dense run's for post-hoc HiRE)."""
  workdir, model, mesh = run.workdir, run.model, run.mesh
  # A `hire import` folder holds parameters only: fine-tuning starts from them at step 0.
  imported = bool((checkpoint.latest_meta(workdir) or {}).get("imported")) and not run.post_hoc
  found, restored, _, damaged = (None, None, None, []) if imported else \
      checkpoint.restore_latest_good(
          run.mgr, lambda meta: setup.state,
          lambda meta: checkpoint.check_compatible(meta, model, setup.state["params"],
                                                   str(workdir)))
  if found is None and damaged and not start_over:
    raise errors.UserError(
        f"every checkpoint in {workdir / 'checkpoints'} is damaged ({damaged[0][1]}); nothing "
        "was changed. To train from step 0 instead, pass --gin.START_OVER=True (the damaged "
        "checkpoints are then moved to damaged_checkpoints/)")
  checkpoint.set_aside(run.mgr, damaged)  # out of the way of the saves that redo their steps
  if reporting.is_chief() and operative_config:  # written once nothing can refuse the run
    (workdir / "config.gin").write_text(operative_config)
  if found is not None:
    setup.state = restored
    start = int(setup.state["step"])
    reporting.say(f"Resuming from checkpoint at step {start} in {workdir / 'checkpoints'}")
    return setup, start
  setup = state.create(model, run.opt, run.train_steps, run.seed, mesh, freeze_model=run.post_hoc)
  if imported:
    _, _, params = checkpoint.restore_params(workdir, model, mesh)
    setup.state["params"] = jax.device_put(params, setup.state_shardings["params"])
  if run.post_hoc:
    setup.state["params"], dense_step = train_plan.post_hoc_start(model, setup, post_hoc_from,
                                                                  mesh, rows_NxL)
    what = ("saving the approximators as initialised (TRAIN_STEPS=0)" if not run.train_steps
            else "training the approximators only")
    reporting.say(f"Post-hoc HiRE: model frozen at {post_hoc_from} step {dense_step}; {what}")
  how = ("Fine-tuning from step 0" if imported else
         "Post-hoc HiRE" if run.post_hoc else "Starting from scratch")
  reporting.say(f"{how} in {workdir} ({model.num_params() / 1e6:.2f}M params, "
                f"{len(rows_NxL)} train rows of {run.data_cfg.seq_len} tokens)")
  return setup, 0


def _loop(run: _Run, st, *, start: int, stream, step_fn):
  """Trains from `start` to TRAIN_STEPS or a stop signal; (state, the last metrics). A step's
  metrics are pulled to the host after the next step is dispatched (no sync per step)."""
  pending, last = None, {}  # (step, metrics) of the step before
  with stop_flag.StopFlag() as stop:
    for step in range(start, run.train_steps):
      targets_BxL = stream.batch(step)
      inputs = sharding.to_global(data.lm_inputs(targets_BxL, run.model.first_input), run.mesh)
      st, metrics = step_fn(st, inputs, sharding.to_global(targets_BxL, run.mesh))
      done = step + 1
      if pending is not None:
        last = _checked(run, *pending)
        if pending[0] % run.log_every == 0 or pending[0] == start + 1:
          _log(run, pending[0], last)
      pending = (done, metrics)
      saves = done % run.checkpoint_every == 0 or done == run.train_steps or stop.check(done)
      if saves:
        last = _checked(run, *pending)  # never checkpoint a non-finite state
      if run.eval_every and done % run.eval_every == 0:
        last["eval_loss"] = _evaluate(run, st["params"], done)
      if saves:
        _save(run, st, done)
      if stop.requested:
        _stop(run, stop.signal, done)
        break
    if pending is not None:
      last = _checked(run, *pending)
  return st, last


def _checked(run: _Run, step_done: int, metrics) -> dict:
  """The step's metrics on the host; a non-finite loss or parameter stops the run."""
  m = {k: float(v) for k, v in jax.device_get(metrics).items()}
  finite_params = bool(m.pop("params_finite"))
  if not (math.isfinite(m["loss"]) and finite_params):
    what = f"loss became {m['loss']}" if not math.isfinite(m["loss"]) else \
        "the parameters became non-finite"
    raise FloatingPointError(
        f"{what} at step {step_done}; no checkpoint was written for it. Lower LEARNING_RATE "
        f"or check the data; the run can resume from step {run.mgr.latest_step()}")
  return m


def _log(run: _Run, step: int, last: dict) -> None:
  """The progress line, TensorBoard and history.jsonl for `step`."""
  lr = float(optimizer.schedule(run.opt, run.train_steps)(step - 1))
  now, speed_line, rate = time.perf_counter(), "", {}
  peak = run.speed["peak"]
  if run.mark is not None:
    rate = train_cost.throughput((step - run.mark[0]) * run.batch_size * run.data_cfg.seq_len,
                                 now - run.mark[1], run.mesh.size, run.speed["flops_per_token"],
                                 peak)
    mfu = f"{rate['mfu']:.1%}" if peak else "n/a"
    speed_line = f" tok/s/device {rate['tokens_per_s_per_device']:,.0f} MFU {mfu}"
  run.mark = (step, now)
  known = {k: v for k, v in rate.items() if k != "mfu" or peak}
  run.writer.write_scalars(step, {**last, "learning_rate": lr, **known})
  reporting.append_jsonl(run.history, {"step": step, **last, "learning_rate": lr,
                                       **{k: rate[k] if k in known else "n/a" for k in rate}})
  extra = "".join(f" {k} {v:.3f}" for k, v in last.items() if k.startswith("recall/")
                  and k.count("/") == 1)
  reporting.say(run.progress.line(step, f"loss {last['loss']:.4f}{extra} lr {lr:.2e}{speed_line}"))


def _evaluate(run: _Run, params, done: int) -> float:
  """Validation metrics at step `done`, logged; returns the validation loss."""
  found = val_metrics.mean_metrics(run.eval_fn, params, run.val_rows_NxL, run.batch_size,
                                   run.eval_batches, run.mesh, first=run.model.first_input)
  val = found["loss"]
  run.writer.write_scalars(done, {f"eval/{k}": v for k, v in found.items()})
  reporting.append_jsonl(run.history, {"step": done, **{f"eval/{k}": v for k, v in found.items()}})
  extra = "".join(f", {k} {v:.3f}" for k, v in found.items()
                  if k.startswith(("recall/softmax@", "served_loss", "top1_agreement",
                                   "recall/ffn@")))
  reporting.say(f"  eval at step {done}: validation loss {val:.4f} "
                f"(perplexity {math.exp(min(val, 50)):.1f}){extra}")
  return val


def _save(run: _Run, st, done: int) -> None:
  meta = checkpoint.meta_for(run.model, run.data_cfg, done, run.seed, st["params"])
  try:
    checkpoint.save(run.mgr, done, st, {**meta, "post_hoc": run.post_hoc})
  except OSError as e:
    raise errors.UserError(
        f"could not save the checkpoint of step {done} in {run.workdir} ({e.strerror or e}); "
        f"free space there and rerun: it resumes from step {run.mgr.latest_step()}, which is "
        "intact") from None


def _stop(run: _Run, signal: str, done: int) -> None:
  """After the checkpoint of a stop signal: SIGTERM ends the loop, Ctrl-C raises Interrupted."""
  reporting.say(f"{signal} received: saved checkpoint at step {done}, exiting.")
  if signal == "SIGINT":
    run.writer.flush()
    run.mgr.close()
    raise errors.Interrupted(f"interrupted: saved the checkpoint of step {done}; rerun the "
                             "same command to resume")


def _finish(run: _Run, st, last: dict) -> dict:
  run.writer.flush()
  run.mgr.close()
  final_step = int(jax.device_get(st["step"]))
  word = "Finished" if final_step >= run.train_steps else "Stopped early"
  reporting.say(f"{word} at step {final_step} of {run.train_steps}: train loss "
                f"{last.get('loss', float('nan')):.6f}"
                + ("" if final_step >= run.train_steps else "; rerun the same command to resume"))
  return {"step": final_step, **last}
