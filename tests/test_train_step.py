"""The train step's memory knobs on one device: rematerialisation really recomputes (read from the
compiled program), and bfloat16 moments halve the optimizer state without changing the step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hire_cli.lib import data, optimizer, sharding, state, train_cost, train_step


def _compiled(cfg, opt=optimizer.OptimizerConfig()):
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 1), jax.devices()[:1])
  setup = state.create(cfg, opt, 10, 0, mesh, abstract_only=True)
  return train_cost.compile_step(train_step.make(setup), setup.state, 2, 32, mesh)


def _flops(compiled):
  analysis = compiled.cost_analysis()
  return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


def test_remat_recomputes_the_blocks_in_the_backward_pass(tiny_cfg):
  flops = {p: _flops(_compiled(dataclasses.replace(tiny_cfg, remat=p))[0])
           for p in ("none", "dots", "full")}
  # full recomputes each block's forward (its matmuls too); dots keeps the matmuls' outputs.
  assert flops["none"] < flops["dots"] < flops["full"], flops
  fwd = flops["none"] / 3  # backward ~ 2x forward
  assert flops["full"] - flops["none"] > 0.3 * fwd, flops


@pytest.mark.slow
def test_bfloat16_moments_halve_the_optimizer_state(tiny_cfg):
  f32, bf16 = (optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, moments_dtype=d)
               for d in ("float32", "bfloat16"))
  costs = [_compiled(tiny_cfg, o)[1] for o in (f32, bf16)]
  assert abs(costs[1].opt / costs[0].opt - 0.5) < 0.01, (costs[0].opt, costs[1].opt)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 1), jax.devices()[:1])
  rows_BxL = np.random.default_rng(0).integers(0, tiny_cfg.vocab_size, (2, 32)).astype(np.int32)
  losses = []
  for o in (f32, bf16):
    setup = state.create(tiny_cfg, o, 10, 0, mesh)
    step, st = train_step.make(setup), setup.state
    dtypes = {x.dtype for x in jax.tree.leaves(st["opt"]) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(o.moments_dtype)}, dtypes
    for _ in range(3):
      st, metrics = step(st, data.lm_inputs(rows_BxL), rows_BxL)
    losses.append(float(metrics["loss"]))
  assert abs(losses[0] - losses[1]) < 1e-2, losses
