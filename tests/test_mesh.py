"""Sharded training on a 2x4 (data x model) mesh of 8 CPU devices: same numbers as one device,
parameters really split, checkpoints saved and restored sharded."""

import pytest

_MESH_SCRIPT = r"""
import json, sys
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from hire_cli.lib import checkpoint, data, optimizer, sharding, state
from hire_cli.runs import train
from hire_cli.nn.config import ModelConfig

assert jax.device_count() == 8, jax.devices()
# V, F and H all divide by the model axis (4), so vocab, mlp and heads really shard.
cfg = ModelConfig(vocab_size=256, d_model=16, n_layers=1, n_heads=4, d_head=4, d_ff=32, max_len=32)
opt = optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0)
targets_BxL = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 32)).astype(np.int32)
out = {}

def run(mesh_cfg, devices):
  mesh = sharding.make_mesh(mesh_cfg, devices)
  setup = state.create(cfg, opt, 10, 0, mesh)
  step = train.make_train_step(setup)
  st = setup.state
  for _ in range(2):
    st, metrics = step(st, sharding.to_global(data.lm_inputs(targets_BxL), mesh),
                       sharding.to_global(targets_BxL, mesh))
  return mesh, st, float(metrics["loss"])

_, one, out["loss_1x1"] = run(sharding.MeshConfig(1, 1), jax.devices()[:1])
mesh, st, out["loss_2x4"] = run(sharding.MeshConfig(2, 4), jax.devices())
out["mesh"] = dict(mesh.shape)
one_np, st_np = jax.device_get(one), jax.device_get(st)
out["max_param_diff"] = max(
    float(np.abs(a - b).max())
    for a, b in zip(jax.tree.leaves(one_np["params"]), jax.tree.leaves(st_np["params"])))
out["max_opt_diff"] = max(float(np.abs(a - b).max()) for a, b in
                          zip(jax.tree.leaves(one_np["opt"]), jax.tree.leaves(st_np["opt"])))

p = st["params"]
shards = {"head/w": p["head"]["w"], "embed": p["embed"],
          "ffn/w_in": p["blocks"][0]["ffn"]["w_in"],
          "attn/w_qkv": p["blocks"][0]["attn"]["w_qkv"], "norm": p["final_norm"]["scale"]}
out["specs"] = {k: [a for a in v.sharding.spec] for k, v in shards.items()}
out["shard_shapes"] = {k: [list(v.shape), list(v.addressable_shards[0].data.shape)]
                       for k, v in shards.items()}
# Adam's first moment follows its parameter's layout.
mu = [s for s in jax.tree.leaves(st["opt"], is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
out["mu_head_spec"] = [a for a in mu[0].mu["head"]["w"].sharding.spec]

mgr = checkpoint.manager(sys.argv[1])
checkpoint.save(mgr, 2, st, {"step": 2})
for name, mesh_cfg, devices in [("2x4", sharding.MeshConfig(2, 4), jax.devices()),
                                ("1x1", sharding.MeshConfig(1, 1), jax.devices()[:1])]:
  target = state.create(cfg, opt, 10, 0, sharding.make_mesh(mesh_cfg, devices), abstract_only=True)
  back = checkpoint.restore(mgr, 2, target.state)
  same_values = all(np.array_equal(np.asarray(a), b) for a, b in
                    zip(jax.tree.leaves(back), jax.tree.leaves(st_np)))
  same_shardings = all(a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in
                       zip(jax.tree.leaves(back), jax.tree.leaves(target.state)))
  out["restore_" + name] = [same_values, same_shardings]
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_2x4_mesh_matches_one_device_and_checkpoints_sharded(tmp_path, cpu_devices):
  out = cpu_devices.run(_MESH_SCRIPT, str(tmp_path))
  assert out["mesh"] == {"data": 2, "fsdp": 1, "model": 4}
  assert abs(out["loss_1x1"] - out["loss_2x4"]) < 1e-5, out
  assert out["max_param_diff"] < 1e-4 and out["max_opt_diff"] < 1e-4, out

  assert out["specs"] == {"head/w": ["model", None], "embed": ["model", None],
                          "ffn/w_in": ["model", None], "attn/w_qkv": [None, None, "model", None],
                          "norm": [None]}, out["specs"]
  assert out["shard_shapes"]["head/w"] == [[256, 16], [64, 16]]
  assert out["shard_shapes"]["ffn/w_in"] == [[32, 16], [8, 16]]
  assert out["shard_shapes"]["attn/w_qkv"] == [[16, 3, 4, 4], [16, 3, 1, 4]]
  assert out["mu_head_spec"] == ["model", None]

  assert out["restore_2x4"] == [True, True], "restore on the same mesh: values and shardings"
  assert out["restore_1x1"] == [True, True], "restore onto another mesh reshards"


_LOG_SCRIPT = r"""
import contextlib, io, json, sys
from hire_cli.lib import data, optimizer, sharding
from hire_cli.nn.config import ModelConfig
from hire_cli.runs import train

cfg = ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32,
                  max_len=128)
log = io.StringIO()
with contextlib.redirect_stdout(log):
  train.train(model_dir=sys.argv[1], model=cfg, data_cfg=data.DataConfig(seq_len=128),
              opt=optimizer.OptimizerConfig(), train_steps=1, batch_size=4, dry_run=True,
              mesh_cfg=sharding.MeshConfig(data=2, fsdp=2, model=2))
print("RESULT" + json.dumps(log.getvalue().splitlines()))
"""


def test_the_train_log_begins_with_the_mesh(tmp_path, cpu_devices):
  """The first line of `hire train` (a dry run here: the same start) names the mesh's axes and
  sizes, its devices and the number of processes."""
  lines = cpu_devices.run(_LOG_SCRIPT, str(tmp_path / "run"))
  assert lines[0] == "mesh data=2 fsdp=2 model=2: 8 devices (cpu, ids 0-7), 1 process", lines
