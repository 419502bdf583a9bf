"""Device mesh and logical-axis rules: parameters carry logical names, the rules map them onto
the mesh's `data` and `model` axes (as in flax's lm1b example and T5X)."""

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hire_cli import errors, validate

# logical axis -> mesh axis (None = replicated)
DEFAULT_RULES = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("embed", None),
    ("kv", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1  # devices on the data axis; -1 = all devices not used by `model`
  model: int = 1  # devices on the model axis (vocab, mlp and heads are split over it)

  def __post_init__(self):
    validate.fields(self)
    if self.model < 1 or (self.data < 1 and self.data != -1):
      raise errors.UserError(f"MESH_DATA={self.data}, MESH_MODEL={self.model}: use positive "
                             "device counts (MESH_DATA=-1: all devices left by the model axis)")


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  model = cfg.model
  data = cfg.data if cfg.data != -1 else max(n // max(model, 1), 1)
  if data <= 0 or model <= 0:
    raise errors.UserError(f"mesh data={cfg.data}, model={cfg.model}: sizes must be positive or -1")
  if data * model > n:
    raise errors.UserError(
        f"mesh {data}x{model} (data x model) needs {data * model} devices but only {n} are "
        "visible; lower MESH_DATA/MESH_MODEL or set XLA_FLAGS=--xla_force_host_platform_device_count")
  grid = np.array(devices[:data * model]).reshape(data, model)
  return Mesh(grid, ("data", "model"))


def spec_for(axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> P:
  """PartitionSpec for logical `axes`; a dimension that does not divide stays replicated."""
  table = dict(rules)
  out = []
  for name, dim in zip(axes or (None,) * len(shape), shape):
    mesh_axis = table.get(name)
    if mesh_axis is not None and dim % mesh.shape[mesh_axis] == 0 and mesh.shape[mesh_axis] > 1:
      out.append(mesh_axis)
    else:
      out.append(None)
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
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(batch_local_BxL, mesh: Mesh) -> jax.Array:
  """This process's rows -> one global array sharded over the mesh's data axis."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), batch_local_BxL)
