"""`hire train`: pretraining with periodic evaluation, Orbax checkpoints and exact resume."""

import contextlib
import dataclasses
import math
import pathlib
import signal

import jax
import jax.numpy as jnp

from hire_cli import errors, validate
from hire_cli.evals import metrics as val_metrics
from hire_cli.lib import checkpoint, data, lock, optimizer, sharding, state, writable
from hire_cli.nn import loss
from hire_cli.nn.config import ModelConfig
from hire_cli.report import reporting


def make_train_step(setup: state.Setup):
  graphdef, tx = setup.graphdef, setup.tx

  def loss_fn(params, inputs_BxL, targets_BxL):
    return loss.lm_objective(state.bind(graphdef, params), inputs_BxL, targets_BxL)

  def step_fn(st, inputs_BxL, targets_BxL):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        st["params"], inputs_BxL, targets_BxL)
    updates, opt = tx.update(grads, st["opt"], st["params"])
    params = jax.tree.map(lambda p, u: p + u, st["params"], updates)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32)**2)
                                        for g in jax.tree.leaves(grads)))
    # The loss is that of the old parameters; the new ones must be finite too before a save.
    metrics["params_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p))
                                                  for p in jax.tree.leaves(params)]))
    return {"params": params, "opt": opt, "step": st["step"] + 1}, metrics

  return jax.jit(step_fn, out_shardings=(setup.state_shardings, None), donate_argnums=0)


class _StopFlag:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) ask the loop to save and exit cleanly.

  One process: our own SIGTERM handler. Several processes: JAX's preemption service (started by
  jax.distributed, it handles SIGTERM itself) so that every host stops at the same step."""

  def __init__(self):
    self.requested = False
    self.signal = "SIGTERM"
    self._old = {}
    self._multi = jax.process_count() > 1

  def check(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils
      try:
        self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # preemption service off: fall back to the local signal
        pass
    return self.requested

  def __enter__(self):
    if self._multi:
      return self
    def handler(signum, frame):
      self.requested = True
      self.signal = signal.Signals(signum).name
    try:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. under some test runners)
      self._old = {}
    return self

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def train(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
          opt: optimizer.OptimizerConfig, mesh_cfg: sharding.MeshConfig, train_steps: int,
          batch_size: int, seed: int = 0, checkpoint_every: int = 100, keep_checkpoints: int = 3,
          log_every: int = 10, eval_every: int = 0, eval_batches: int = 8,
          post_hoc_from: str = "", start_over: bool = False, dry_run: bool = False,
          operative_config: str = "") -> dict:
  """Trains until `train_steps`, resuming from the latest checkpoint in `model_dir`.

  `post_hoc_from` (a dense run's MODEL_DIR) is HiRE's post-hoc mode: the model starts from that
  checkpoint, stays frozen, and only the approximators (SVD-initialised) are trained.
  `start_over` trains from step 0 when every checkpoint in `model_dir` is damaged (they are set
  aside); without it such a run is refused.

  Every setting is checked before anything is written; the run holds MODEL_DIR/.lock throughout
  (one writer per run folder). Returns the final metrics (last train loss, validation loss if
  evaluated)."""
  validate.arguments(train, locals())
  plan = check_run(model_dir=model_dir, model=model, data_cfg=data_cfg, mesh_cfg=mesh_cfg,
                   batch_size=batch_size, post_hoc_from=post_hoc_from, evaluates=eval_every > 0)
  workdir = pathlib.Path(model_dir)
  if dry_run:  # `hire train --dry_run`: what the run would do, nothing written
    return _describe(workdir, model, data_cfg, plan, train_steps, batch_size, post_hoc_from)
  writable.check(workdir, "MODEL_DIR")
  with lock.RunLock(workdir) if reporting.is_chief() else contextlib.nullcontext():
    return _train(workdir, model, data_cfg, opt, plan["mesh"], plan["rows"], train_steps,
                  batch_size, seed, checkpoint_every, keep_checkpoints, log_every, eval_every,
                  eval_batches, post_hoc_from, start_over, operative_config)


def check_run(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
              mesh_cfg: sharding.MeshConfig, batch_size: int, post_hoc_from: str = "",
              evaluates: bool = False) -> dict:
  """What `train` checks before it writes anything (also `hire train --dry_run`): the model
  against the data (and the validation data if `evaluates`), the mesh and the checkpoints
  already in MODEL_DIR. {"mesh", "rows"}."""
  if not model_dir:
    raise errors.UserError("MODEL_DIR is empty; pass --gin.MODEL_DIR=runs/NAME")
  if data_cfg.seq_len > model.max_len:
    raise errors.UserError(f"SEQ_LEN={data_cfg.seq_len} exceeds the model's "
                           f"max_len={model.max_len}")
  mesh = sharding.make_mesh(mesh_cfg)
  if batch_size % mesh.shape["data"]:
    raise errors.UserError(
        f"BATCH_SIZE={batch_size} is not divisible by the mesh's data axis "
        f"({mesh.shape['data']}); use a multiple of it")
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


def _train(workdir: pathlib.Path, model: ModelConfig, data_cfg, opt, mesh, rows_NxL,
           train_steps: int, batch_size: int, seed: int, checkpoint_every: int,
           keep_checkpoints: int, log_every: int, eval_every: int, eval_batches: int,
           post_hoc_from: str, start_over: bool, operative_config: str) -> dict:
  stream = data.BatchStream(rows_NxL, batch_size, seed, jax.process_index(), jax.process_count())
  val_rows = data.load_rows(data_cfg, "validation") if eval_every else None
  post_hoc = bool(post_hoc_from)
  mgr = checkpoint.manager(workdir, max_to_keep=keep_checkpoints)
  setup = state.create(model, opt, train_steps, seed, mesh, abstract_only=True,
                       freeze_model=post_hoc)
  found, restored, _, damaged = checkpoint.restore_latest_good(
      mgr, lambda meta: setup.state,
      lambda meta: checkpoint.check_compatible(meta, model, setup.state["params"], str(workdir)))
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
    if post_hoc:
      dense_cfg = _post_hoc_source(post_hoc_from, model)
      dense_step, _, dense_params = checkpoint.restore_params(post_hoc_from, dense_cfg, mesh)
      setup.state["params"] = state.post_hoc_params(
          setup.graphdef, setup.state["params"], dense_params, setup.state_shardings["params"])
      reporting.say(f"Post-hoc HiRE: model frozen at {post_hoc_from} step {dense_step}; "
                    "training the approximators only")
    reporting.say(f"Starting from scratch in {workdir} ({model.num_params() / 1e6:.2f}M params, "
                  f"{len(rows_NxL)} train rows of {data_cfg.seq_len} tokens)")
  if start >= train_steps:
    reporting.say(f"Already at step {start} >= TRAIN_STEPS={train_steps}; nothing to train.")
    return {"step": start}

  step_fn = make_train_step(setup)
  eval_fn = val_metrics.make_eval_fn(setup.graphdef) if eval_every else None
  writer = reporting.writer(workdir / "tb" / "train")
  history = workdir / "history.jsonl"  # the same scalars as TensorBoard, one JSON object a line
  progress = reporting.Progress(start, train_steps)
  reporting.append_jsonl(history, {"step": start, "data": {  # what the numbers below are from
      "train": data.record(data_cfg, "train"),
      **({"validation": data.record(data_cfg, "validation")} if eval_every else {})}})
  st = setup.state
  pending = None  # metrics of the previous step, pulled after the next one is dispatched
  last = {}

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

  with _StopFlag() as stop:
    for step in range(start, train_steps):
      targets_BxL = stream.batch(step)
      inputs = sharding.to_global(data.lm_inputs(targets_BxL), mesh)
      targets = sharding.to_global(targets_BxL, mesh)
      st, metrics = step_fn(st, inputs, targets)
      done = step + 1
      if pending is not None:
        last = flush(*pending)
        if pending[0] % log_every == 0 or pending[0] == start + 1:
          lr = float(optimizer.schedule(opt, train_steps)(pending[0] - 1))
          writer.write_scalars(pending[0], {**last, "learning_rate": lr})
          reporting.append_jsonl(history, {"step": pending[0], **last, "learning_rate": lr})
          extra = "".join(f" {k} {v:.3f}" for k, v in last.items() if k.startswith("recall/")
                          and k.count("/") == 1)
          reporting.say(progress.line(pending[0], f"loss {last['loss']:.4f}{extra} lr {lr:.2e}"))
      pending = (done, metrics)
      should_save = done % checkpoint_every == 0 or done == train_steps or stop.check(done)
      if should_save:
        last = flush(*pending)  # never checkpoint a non-finite state
      if eval_every and done % eval_every == 0:
        found = val_metrics.mean_metrics(eval_fn, st["params"], val_rows, batch_size,
                                         eval_batches, mesh)
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
  reporting.say(f"Finished at step {final_step}: train loss {last.get('loss', float('nan')):.6f}")
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
