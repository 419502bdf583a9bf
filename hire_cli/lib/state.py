"""Building the model's parameters and the train state, sharded over a mesh.

The model is defined in NNX; training works on pure pytrees: `params` is
`nnx.to_pure_dict(state)` and `bind(graphdef, params)` gives back a module inside jitted code.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from hire_cli.lib import optimizer, sharding
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.model import Transformer


@dataclasses.dataclass
class Setup:
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  state: dict  # {"params", "opt", "step"}
  state_shardings: dict
  mesh: Mesh


def bind(graphdef: nnx.GraphDef, params) -> Transformer:
  return nnx.merge(graphdef, params)


def abstract_model(cfg: ModelConfig):
  """(graphdef, abstract pure params, logical axes) without allocating anything."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, st = nnx.split(abstract)
  return graphdef, nnx.to_pure_dict(st), sharding.logical_axes(st)


def init_params(cfg: ModelConfig, seed: int, mesh: Mesh):
  """(graphdef, params) with params created directly in their sharded layout."""
  graphdef, abstract, axes = abstract_model(cfg)
  shardings = sharding.param_shardings(abstract, axes, mesh)

  def init():
    return nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed))))

  return graphdef, jax.jit(init, out_shardings=shardings)()


def approximators_only(params):
  """Trainable mask for post-hoc HiRE: only the approximators' parameters."""
  def walk(tree, inside):
    if isinstance(tree, dict):
      return {k: walk(v, inside or k == "approx") for k, v in tree.items()}
    return inside
  return walk(params, False)


def _key(k):
  return getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))


def _follow_params(opt_state, param_shardings, mesh: Mesh):
  """Optimizer moments shard like the parameter they follow (matched by the end of their tree
  path, which works through chains, masks and multi_transform); everything else is replicated."""
  by_path = {tuple(_key(k) for k in path): s for path, s in
             jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  longest = max(len(p) for p in by_path)

  def pick(path, leaf):
    keys = tuple(_key(k) for k in path)
    for n in range(min(longest, len(keys)), 0, -1):
      s = by_path.get(keys[-n:])
      if s is not None and len(s.spec) <= len(getattr(leaf, "shape", ())):
        return s
    return sharding.replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, opt_state)


def create(cfg: ModelConfig, opt_cfg: optimizer.OptimizerConfig, total_steps: int, seed: int,
           mesh: Mesh, *, abstract_only: bool = False, freeze_model: bool = False) -> Setup:
  """The train state {params, opt, step}. With `abstract_only`, shapes and shardings only
  (the restore target when a checkpoint exists). `freeze_model` trains the approximators only."""
  graphdef, abstract_params, axes = abstract_model(cfg)
  p_shard = sharding.param_shardings(abstract_params, axes, mesh)
  trainable = approximators_only(abstract_params) if freeze_model else None
  tx = optimizer.make(opt_cfg, total_steps, abstract_params, trainable)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shard = _follow_params(abstract_opt, p_shard, mesh)
  shardings = {"params": p_shard, "opt": opt_shard, "step": sharding.replicated(mesh)}
  if abstract_only:
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         {"params": abstract_params, "opt": abstract_opt,
                          "step": jax.ShapeDtypeStruct((), jnp.int32)}, shardings)
    return Setup(graphdef, tx, state, shardings, mesh)
  _, params = init_params(cfg, seed, mesh)
  opt = jax.jit(tx.init, out_shardings=opt_shard)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(mesh))
  return Setup(graphdef, tx, {"params": params, "opt": opt, "step": step}, shardings, mesh)


def post_hoc_params(graphdef, params, dense_params, shardings, head_cov_DxD=None):
  """HiRE parameters from a trained dense model: every weight the dense model has is copied, then
  each HiRE layer initialises its approximator from its weights (truncated SVD for LR; Q is
  derived from W anyway). `head_cov_DxD` (`hidden_moment` of the dense model on calibration
  text) fits HiRE-Softmax's LR to the logits on such states instead of to W."""
  def merge(new, old):
    if isinstance(new, dict):
      return {k: merge(v, old[k]) if isinstance(old, dict) and k in old else v
              for k, v in new.items()}
    return old if old is not None else new
  merged = merge(params, dense_params)
  model = bind(graphdef, merged)
  for _, module in nnx.iter_modules(model):
    if module is model.head and head_cov_DxD is not None:
      module.init_from_weights(head_cov_DxD)
    elif hasattr(module, "init_from_weights"):
      module.init_from_weights()
  out = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.device_put(out, shardings)


def hidden_moment(graphdef, params, inputs_NxL, batch: int):
  """cov_DxD: E[h h^T] of the final hidden states over every position of `inputs_NxL` (the
  model as trained, exact), in float32: what `post_hoc_params` fits HiRE-Softmax's LR on."""
  @jax.jit
  def moment(p, tokens_BxL):
    h_BxLxD, _ = bind(graphdef, p)(tokens_BxL)
    h_XxD = h_BxLxD.reshape(-1, h_BxLxD.shape[-1]).astype(jnp.float32)
    return h_XxD.T @ h_XxD

  total_DxD = sum(moment(params, jnp.asarray(inputs_NxL[i:i + batch]))
                  for i in range(0, len(inputs_NxL), batch))
  return total_DxD / inputs_NxL.size

