"""Orbax checkpoints of the train state, with a JSON sidecar describing the model and data.

Layout: MODEL_DIR/checkpoints/<step>/{state,meta}. Saves are atomic (Orbax writes to a temporary
folder and renames), so a crash mid-save leaves the previous checkpoints intact. Each save records
a checksum of every array (`meta["checksums"]`), checked when it is restored: a checkpoint whose
bytes changed on disk, or that holds non-finite values, is skipped for the previous good one.
"""

import dataclasses
import json
import pathlib
import re
import shutil
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from hire_cli import errors, quiet
from hire_cli.lib import sharding
from hire_cli.nn.config import ModelConfig


def manager(model_dir: str | pathlib.Path, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(model_dir).absolute() / "checkpoints",
                               options=options, item_names=("state", "meta"))


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  meta = {**meta, "checksums": checksums(state)}
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)), force=True)
  mgr.wait_until_finished()


def _word_sum(x):
  """uint32 sum of the array's 32-bit words, each times an odd weight set by its position: any
  change of one word changes it (odd weights are invertible mod 2^32)."""
  x = jnp.asarray(x)
  if x.dtype.itemsize == 4:
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  elif x.dtype.itemsize == 2:
    u = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  elif x.dtype.itemsize == 8:
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of two words
  else:
    u = x.astype(jnp.uint32)
  pos = jnp.arange(u.size, dtype=jnp.uint32).reshape(u.shape)
  return jnp.sum(u * (pos * jnp.uint32(2654435761) | jnp.uint32(1)), dtype=jnp.uint32)


@jax.jit
def _digest(tree):
  finite = jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.floating)
                        else jnp.bool_(True), tree)
  return jax.tree.map(_word_sum, tree), finite


def _flat(tree) -> dict:
  """{"params/blocks/0/ffn/w_in": leaf, ...}: the names checksums and shapes are keyed by."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): v
          for path, v in leaves}


def checksums(state) -> dict:
  """{"params/embed": word checksum, ...} of every array of `state`. Single-process runs only:
  across processes the sums are not fully addressable, and a save records none."""
  if jax.process_count() > 1:
    return {}
  sums, _ = jax.device_get(_digest(state))
  return {k: int(v) for k, v in _flat(sums).items()}


def verify(state, meta: dict) -> str | None:
  """Why `state` (restored with `meta`) is not what was saved, or None when it is: a checksum
  that differs, or a non-finite value. Checkpoints without checksums are only checked for
  non-finite values; multi-process restores are not checked (see `checksums`)."""
  if jax.process_count() > 1:
    return None
  sums, finite = jax.device_get(_digest(state))
  saved = meta.get("checksums", {})
  bad = [k for k, v in _flat(sums).items() if k in saved and int(v) != saved[k]]
  if bad:
    return f"checksum mismatch in {len(bad)} array(s), e.g. {bad[0]}"
  nonfinite = [k for k, v in _flat(finite).items() if not v]
  if nonfinite:
    return f"non-finite values in {len(nonfinite)} array(s), e.g. {nonfinite[0]}"
  return None


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
  return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state, *, partial: bool = False):
  """Restores the state at `step` into the structure, shapes and shardings of `abstract_state`;
  `partial` reads only the subtree `abstract_state` names (e.g. the parameters)."""
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  if partial:
    args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  else:
    args = ocp.args.StandardRestore(target)
  return mgr.restore(step, args=ocp.args.Composite(state=args))["state"]


# What a checkpoint may differ in from the config it is restored into: the HiRE knobs (k' and
# the approximators; their parameters are checked by shape), how it is computed and how long a
# context it serves. Every other ModelConfig field is the architecture and must match (a knob
# that changes no shape, such as the window or the embedding scale, would otherwise be silently
# wrong), and param_dtype too, since a different one would be cast silently on restore.
FREE_FIELDS = ("hire_softmax", "hire_ffn", "dtype", "remat", "max_len")


def param_shapes(params) -> dict:
  """{"blocks/0/ffn/w_in": [F, D], ...}: what a checkpoint must match to be restored."""
  return {k: list(x.shape) for k, x in _flat(params).items()}


def _set_aside(mgr: ocp.CheckpointManager, step: int, why: str) -> None:
  """Moves a damaged checkpoint to MODEL_DIR/damaged_checkpoints/ (kept for inspection, out of
  the way of the save that will redo its step). Only `hire train` does this."""
  src = pathlib.Path(mgr.directory) / str(step)
  print(f"WARNING: checkpoint {src} is damaged ({why}); it is kept in "
        f"{src.parent.parent / 'damaged_checkpoints'}", flush=True)
  if jax.process_index() == 0:
    dst = src.parent.parent / "damaged_checkpoints" / f"{step}-{int(time.time())}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def restore_latest_good(mgr: ocp.CheckpointManager, make_abstract, check=None, *,
                        partial: bool = False):
  """(step, state, meta, damaged) of the newest checkpoint that restores and verifies (None for
  the first three if there is none); `damaged` lists (step, why) of those skipped.

  A damaged checkpoint (unreadable, truncated, a checksum that differs, non-finite values) is
  skipped with a warning that says what was wrong, and the previous good one is used; nothing
  on disk changes (training then calls `set_aside`). `make_abstract(meta)` gives
  the restore target; `check(meta)` raises for an incompatible (not damaged) checkpoint, which
  is a user error and left alone."""
  found, damaged = (None, None, None), []
  for step in sorted(mgr.all_steps(), reverse=True):
    try:  # a failed read makes Orbax log and TensorStore print tracebacks: one line says it
      with quiet.library_noise_dropped():
        meta = read_meta(mgr, step)
    except Exception as e:  # noqa: BLE001 - any failure to read means damaged
      damaged.append((step, f"its description is unreadable: {_why(e)}"))
      continue
    if check is not None:
      check(meta)
    try:
      with quiet.library_noise_dropped():
        state = restore(mgr, step, make_abstract(meta), partial=partial)
    except Exception as e:  # noqa: BLE001
      damaged.append((step, f"it does not restore: {_why(e)}"))
      continue
    problem = verify(state, meta)
    if problem:
      damaged.append((step, problem))
      continue
    found = (step, state, meta)
    break
  for step, why in damaged:
    print(f"WARNING: checkpoint {pathlib.Path(mgr.directory) / str(step)} is damaged ({why}); "
          "skipped", flush=True)
  return (*found, damaged)


def set_aside(mgr: ocp.CheckpointManager, damaged) -> None:
  """Moves the damaged checkpoints [(step, why)] to MODEL_DIR/damaged_checkpoints/."""
  for step, why in damaged:
    _set_aside(mgr, step, why)
  if damaged:
    mgr.reload()


def _why(e: Exception) -> str:
  """The error in a few words: TensorStore's chain of "Error opening ... driver" is cut to its
  status and the array it could not read."""
  text = str(e).strip()
  array = re.search(r'Error reading "([^"/]+)/', text)
  if array:
    status = re.match(r"([A-Z_]+): ", text)
    return f"{type(e).__name__}: {status.group(1) + ' ' if status else ''}reading {array[1]}"
  first = (text.splitlines() or [""])[0][:160]
  return f"{type(e).__name__}: {first}" if first else type(e).__name__


def meta_for(model_cfg: ModelConfig, data_cfg, step: int, seed: int, params) -> dict:
  return {"step": step, "seed": seed, "model": dataclasses.asdict(model_cfg),
          "data": dataclasses.asdict(data_cfg), "param_shapes": param_shapes(params)}


def check_compatible(meta: dict, model_cfg: ModelConfig, abstract_params, where: str) -> None:
  """A checkpoint must come from a model of the same shape (HiRE knobs such as k' may differ)."""
  saved = meta.get("model", {})
  cur = dataclasses.asdict(model_cfg)
  defaults = dataclasses.asdict(ModelConfig())  # a field older checkpoints lack had its default
  diff = {k: (saved.get(k, defaults[k]), v) for k, v in cur.items()
          if k not in FREE_FIELDS and saved.get(k, defaults[k]) != v}
  if diff:
    pretty = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
    raise errors.UserError(
        f"checkpoint in {where} is from a different model ({pretty}); use a new MODEL_DIR or the "
        "config it was trained with")
  want, have = param_shapes(abstract_params), meta.get("param_shapes", {})
  bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
  if bad:
    raise errors.UserError(
        f"checkpoint in {where} has other parameters than this config ({len(bad)} differ, e.g. "
        f"{bad[0]}: checkpoint {have.get(bad[0])} vs config {want.get(bad[0])}); use the variant "
        "and approximator settings it was trained with, or a new MODEL_DIR")


def latest_meta(model_dir: str | pathlib.Path) -> dict | None:
  """The JSON description saved with the newest readable checkpoint of `model_dir` (None if
  none). Read from the files directly: no CheckpointManager, so processes need not meet."""
  root = pathlib.Path(model_dir) / "checkpoints"
  steps = sorted((int(p.name) for p in root.glob("*") if p.name.isdigit()), reverse=True) \
      if root.is_dir() else []
  for step in steps:
    try:
      return json.loads((root / str(step) / "meta" / "metadata").read_text())
    except (OSError, ValueError):
      continue
  return None


def restore_params(model_dir: str | pathlib.Path, model: ModelConfig, mesh):
  """(step, graphdef, params) of the newest good checkpoint in `model_dir`, reading only the
  parameters (what eval, generate and bench need; the optimizer state stays on disk)."""
  from hire_cli.lib import state  # state builds the model; checkpoint stays importable alone
  workdir = pathlib.Path(model_dir)
  if not (workdir / "checkpoints").is_dir():
    raise errors.UserError(f"no checkpoints in {workdir}; train first with `hire train "
                           f"--gin.MODEL_DIR={workdir}` or point MODEL_DIR at a trained run")
  graphdef, abstract, axes = state.abstract_model(model)
  shardings = sharding.param_shardings(abstract, axes, mesh)
  target = {"params": jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   abstract, shardings)}
  mgr = manager(workdir)
  try:
    step, restored, _, damaged = restore_latest_good(
        mgr, lambda meta: target,
        lambda meta: check_compatible(meta, model, abstract, str(workdir)), partial=True)
  finally:
    mgr.close()
  if step is None:
    why = f" (damaged: {'; '.join(f'step {s}: {w}' for s, w in damaged)})" if damaged else ""
    raise errors.UserError(f"no complete checkpoint in {workdir / 'checkpoints'}{why}")
  return step, graphdef, restored["params"]
