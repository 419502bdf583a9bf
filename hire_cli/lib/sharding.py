"""Device mesh and logical-axis rules: parameters carry logical names, the rules map them onto
the mesh's `data`, `fsdp` and `model` axes (as in flax's lm1b example, T5X and MaxText).

`fsdp` shards every parameter and optimizer moment along `embed` (or, for a parameter without
one, its largest dimension that divides), so each device holds 1/fsdp of the state; XLA's SPMD
partitioner gathers a layer's weights where they are used. The batch is split over data x fsdp."""

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hire_cli import errors, validate

# logical axis -> mesh axis (None = replicated)
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("embed", "fsdp"),
    ("kv", None),
)
AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1  # devices on the data axis; -1 = all devices not used by `model`
  model: int = 1  # devices on the model axis (vocab, mlp and heads are split over it)
  fsdp: int = 1  # devices over which parameters and optimizer state are split (-1 = the rest)

  def __post_init__(self):
    validate.fields(self)  # positive device counts, -1 = the rest (validate.RULES)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  data, fsdp, model = cfg.data, cfg.fsdp, cfg.model
  if fsdp == -1:  # FSDP over everything left: data stays 1 unless it is set
    data = 1 if data == -1 else data
    fsdp = max(n // (data * model), 1)
  if data == -1:
    data = max(n // (fsdp * model), 1)
  if data * fsdp * model > n:
    raise errors.UserError(
        f"mesh {data}x{fsdp}x{model} (data x fsdp x model) needs {data * fsdp * model} devices "
        f"but only {n} are visible; lower MESH_DATA/MESH_FSDP/MESH_MODEL or set "
        "XLA_FLAGS=--xla_force_host_platform_device_count")
  grid = np.array(devices[:data * fsdp * model]).reshape(data, fsdp, model)
  return Mesh(grid, AXES)


def describe(mesh: Mesh) -> str:
  """'mesh data=2 fsdp=2 model=2: 8 devices (cpu, ids 0-7), 1 process': what a run runs on."""
  devices = list(mesh.devices.flat)
  ids = sorted(d.id for d in devices)
  span = f"ids {ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else f"ids {ids}"
  kinds = ", ".join(sorted({d.device_kind for d in devices}))
  axes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
  n = jax.process_count()
  return (f"mesh {axes}: {len(devices)} device{'s' * (len(devices) > 1)} ({kinds}, {span}), "
          f"{n} process{'es' * (n > 1)}")


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch is split (data x fsdp)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def spec_for(axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> P:
  """PartitionSpec for logical `axes`; a dimension that does not divide stays replicated. The
`fsdp` axis, when no dimension took it through its rule (no `embed`, or it does not divide),
goes to the largest dimension left that divides, so no parameter stays whole on every device."""
  table = dict(rules)
  out = []
  for name, dim in zip(axes or (None,) * len(shape), shape):
    mesh_axis = table.get(name)
    if mesh_axis is not None and dim % mesh.shape[mesh_axis] == 0 and mesh.shape[mesh_axis] > 1:
      out.append(mesh_axis)
    else:
      out.append(None)
  fsdp = mesh.shape.get("fsdp", 1)
  if fsdp > 1 and "fsdp" in table.values() and "fsdp" not in out:
    free = [i for i, dim in enumerate(shape) if out[i] is None and dim % fsdp == 0]
    if free:
      out[max(free, key=lambda i: shape[i])] = "fsdp"
  return P(*out)


def logical_axes(state: nnx.State):
  """Pure-dict tree of logical axis tuples, parallel to `nnx.to_pure_dict(state)`."""
  axes = jax.tree.map(lambda v: v.get_metadata().get("axes"), state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(axes) if isinstance(axes, nnx.State) else axes


def param_shardings(params, axes, mesh: Mesh):
  return jax.tree.map(lambda x, a: NamedSharding(mesh, spec_for(a, x.shape, mesh)), params, axes,
                      is_leaf=lambda a: isinstance(a, tuple) or a is None)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(batch_local_BxL, mesh: Mesh) -> jax.Array:
  """This process's rows -> one global array sharded over the mesh's data x fsdp axes."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), batch_local_BxL)
