"""What `hire train` checks before it writes anything: the model against its data, the mesh and
the batch, the checkpoints already in MODEL_DIR, and the dense run post-hoc HiRE starts from."""

import dataclasses
import pathlib

import jax

from hire_cli import errors
from hire_cli.lib import checkpoint, data, sharding, state, train_cost, train_step
from hire_cli.nn.config import ModelConfig


def check(*, model_dir: str, model: ModelConfig, data_cfg: data.DataConfig,
          mesh_cfg: sharding.MeshConfig, batch_size: int, post_hoc_from: str = "",
          evaluates: bool = False, grad_accum_steps: int = 1) -> dict:
  """What `hire train` checks before it writes anything (also `--dry_run`): the model
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
    post_hoc_source(post_hoc_from, model)
  meta = checkpoint.latest_meta(model_dir)
  if meta is not None:  # a resume: the same model (shapes and dtypes)
    abstract = state.abstract_model(model)[1]
    checkpoint.check_compatible(meta, model, abstract, str(model_dir))
  return {"mesh": mesh, "rows": rows_NxL}


def summary(workdir: pathlib.Path, model: ModelConfig, data_cfg: data.DataConfig, plan: dict,
            train_steps: int, batch_size: int, post_hoc_from: str) -> dict:
  """What a run with this plan (from `check`) would do: `hire train --dry_run`'s table."""
  meta = checkpoint.latest_meta(workdir)
  start = int(meta["step"]) if meta else 0
  return {"model_dir": str(workdir), "params": model.num_params(), "start_step": start,
          "train_steps": train_steps, "batch_size": batch_size, "seq_len": data_cfg.seq_len,
          "task": data_cfg.task, "train_rows": len(plan["rows"]),
          "data_fingerprint": data.record(data_cfg, "train")["fingerprint"][:16],
          "mesh": dict(plan["mesh"].shape), "hire_softmax": model.hire_softmax is not None,
          "hire_ffn": model.hire_ffn is not None, "post_hoc_from": post_hoc_from}


def post_hoc_source(post_hoc_from: str, model: ModelConfig) -> ModelConfig:
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


def check_steps(train_steps: int, post_hoc_from: str) -> None:
  """TRAIN_STEPS=0 is post-hoc HiRE with no training: the approximators as initialised from
  the dense run (Q from W, LR from the truncated SVD of W), saved at step 0."""
  if train_steps == 0 and not post_hoc_from:
    raise errors.UserError("TRAIN_STEPS=0 saves a post-hoc HiRE model's approximators as "
                           "initialised and needs --gin.POST_HOC_FROM=DENSE_RUN; otherwise set "
                           "TRAIN_STEPS >= 1")


def compile_checked(setup, grad_accum_steps: int, batch_size: int, seq_len: int, mesh,
                    device_memory_gb: float, say):
  """(step_fn, cost): the train step compiled before anything is written, its bytes per
  device told (`say`), and a run that cannot fit `device_memory_gb` refused."""
  step_fn, cost = train_cost.compile_step(train_step.make(setup, grad_accum_steps), setup.state,
                                          batch_size, seq_len, mesh)
  limit = train_cost.device_memory(jax.local_devices()[0], device_memory_gb)
  say(train_cost.describe(cost, limit))
  train_cost.check_fits(cost, limit, mesh)
  return step_fn, cost


def post_hoc_start(model: ModelConfig, setup, post_hoc_from: str, mesh, rows_NxL):
  """(params, the dense run's step): `setup`'s HiRE parameters started from the dense run
  (`calibrated_post_hoc`)."""
  dense_cfg = post_hoc_source(post_hoc_from, model)
  dense_step, dense_graphdef, dense_params = checkpoint.restore_params(post_hoc_from, dense_cfg,
                                                                       mesh)
  params = calibrated_post_hoc(model, setup.graphdef, setup.state["params"],
                               setup.state_shardings["params"], dense_graphdef, dense_params,
                               rows_NxL)
  return params, dense_step


def calibrated_post_hoc(model: ModelConfig, graphdef, params, shardings, dense_graphdef,
                        dense_params, rows_NxL):
  """HiRE parameters (`state.post_hoc_params`) from a dense model's, HiRE-Softmax's LR fitted on
  the hidden states of the first `calibration_rows` rows of `rows_NxL` when that is set."""
  rows = model.hire_softmax.calibration_rows if model.hire_softmax is not None else 0
  cov_DxD = state.hidden_moment(dense_graphdef, dense_params,
                                data.lm_inputs(rows_NxL[:rows], model.first_input),
                                batch=8) if rows else None
  return state.post_hoc_params(graphdef, params, dense_params, shardings, cov_DxD)

