"""Orbax checkpoints of the train state, with a JSON sidecar describing the model and data.

Layout: MODEL_DIR/checkpoints/<step>/{state,meta}. Saves are atomic (Orbax writes to a temporary
folder and renames), so a crash mid-save leaves the previous checkpoints intact.
"""

import dataclasses
import pathlib

import jax
import orbax.checkpoint as ocp

from hire_cli import errors
from hire_cli.config import ModelConfig


def manager(model_dir: str | pathlib.Path, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(model_dir).absolute() / "checkpoints",
                               options=options, item_names=("state", "meta"))


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)), force=True)
  mgr.wait_until_finished()


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
  return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores the state at `step` into the structure, shapes and shardings of `abstract_state`."""
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return out["state"]


def meta_for(model_cfg: ModelConfig, data_cfg, step: int, seed: int):
  return {"step": step, "seed": seed, "model": dataclasses.asdict(model_cfg),
          "data": dataclasses.asdict(data_cfg)}


def check_compatible(meta: dict, model_cfg: ModelConfig, where: str) -> None:
  """A checkpoint must come from a model of the same shape."""
  saved = meta.get("model", {})
  diff = {k: (saved.get(k), v) for k, v in dataclasses.asdict(model_cfg).items()
          if k not in ("dtype",) and saved.get(k) != v}
  if diff:
    pretty = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
    raise errors.UserError(
        f"checkpoint in {where} is from a different model ({pretty}); use a new MODEL_DIR or the "
        "config it was trained with")
