"""Fully sharded training on a (data 2, fsdp 2, model 2) mesh of 8 CPU devices: the same training
as one device (rematerialised and with accumulated gradients too), parameter and optimizer bytes
per device divided by the fsdp factor in the compiled step, and a sharded checkpoint restored
onto other meshes."""

import pytest

from tests.conftest import CpuDevices

pytestmark = pytest.mark.slow  # one 8-device subprocess, shared by the file's tests

_FSDP_SCRIPT = r"""
import dataclasses, json, sys
import jax, numpy as np
from hire_cli.lib import checkpoint, data, optimizer, sharding, state, train_cost, train_step
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig

assert jax.device_count() == 8, jax.devices()
# Tiny full HiRE: V, F and H divide by the model axis, D by fsdp, so every rule really shards.
cfg = ModelConfig(vocab_size=256, d_model=16, n_layers=2, n_heads=2, d_head=8, d_ff=64,
                  max_len=32, hire_softmax=HiReSoftmaxConfig(k=4, k_prime=16,
                                                             approx=ApproxConfig(rank=4)),
                  hire_ffn=HiReFfnConfig(approx=ApproxConfig(rank=4), k_fraction=0.25))
opt = optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0)
rows_BxL = np.random.default_rng(0).integers(0, cfg.vocab_size, (16, 32)).astype(np.int32)
MESH = sharding.MeshConfig(data=2, model=2, fsdp=2)
out = {}

def run(mesh_cfg, devices, model=cfg, accum=1, batch=rows_BxL, steps=3):
  mesh = sharding.make_mesh(mesh_cfg, devices)
  setup = state.create(model, opt, 10, 0, mesh)
  step = train_step.make(setup, accum)
  st, losses = setup.state, []
  for _ in range(steps):
    st, metrics = step(st, sharding.to_global(data.lm_inputs(batch), mesh),
                       sharding.to_global(batch, mesh))
    losses.append(jax.device_get(metrics))
  return mesh, jax.device_get(st), losses, st

def diff(a, b, part):
  return max(float(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).max())
             for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])))

_, one, one_m, _ = run(sharding.MeshConfig(1, 1), jax.devices()[:1])
mesh, fsdp, fsdp_m, st = run(MESH, jax.devices())
out["mesh"] = dict(mesh.shape)
out["loss"] = [[float(m["loss"]) for m in one_m], [float(m["loss"]) for m in fsdp_m]]
out["aux"] = [float(one_m[-1]["approx_loss_total"]), float(fsdp_m[-1]["approx_loss_total"])]
out["param_diff"], out["opt_diff"] = diff(one, fsdp, "params"), diff(one, fsdp, "opt")
p = st["params"]
out["specs"] = {k: list(v.sharding.spec) for k, v in {
    "embed": p["embed"], "head/w": p["head"]["w"], "ffn/w_in": p["blocks"][0]["ffn"]["w_in"],
    "attn/w_qkv": p["blocks"][0]["attn"]["w_qkv"], "norm": p["final_norm"]["scale"],
    "head/approx/a": p["head"]["approx"]["lr"]["a"]}.items()}

# Remat recomputes, never changes the numbers.
_, remat, remat_m, _ = run(MESH, jax.devices(), model=dataclasses.replace(cfg, remat="full"))
out["remat"] = [[float(m["loss"]) for m in remat_m], diff(fsdp, remat, "params")]
_, dots, dots_m, _ = run(MESH, jax.devices(), model=dataclasses.replace(cfg, remat="dots"))
out["dots"] = [[float(m["loss"]) for m in dots_m], diff(fsdp, dots, "params")]

# Four micro-batches of 16 rows against one batch of 64, on the same mesh.
big_BxL = np.random.default_rng(1).integers(0, cfg.vocab_size, (64, 32)).astype(np.int32)
_, big, big_m, _ = run(MESH, jax.devices(), batch=big_BxL, steps=2)
_, acc, acc_m, _ = run(MESH, jax.devices(), batch=big_BxL, steps=2, accum=4)
out["accum"] = {k: [float(big_m[-1][k]), float(acc_m[-1][k])]
                for k in ("loss", "approx_loss_total", "grad_norm", "tokens", "recall/ffn@k")}
out["accum_diff"] = [diff(big, acc, "params"), diff(big, acc, "opt")]

# Bytes per device of the compiled step, by fsdp factor (model axis 1, the rest data).
out["bytes"] = {}
for f in (1, 2, 4, 8):
  m = sharding.make_mesh(sharding.MeshConfig(data=8 // f, fsdp=f))
  setup = state.create(cfg, opt, 10, 0, m, abstract_only=True)
  _, cost = train_cost.compile_step(train_step.make(setup), setup.state, 16, 32, m)
  out["bytes"][f] = [cost.params, cost.opt, cost.arguments, cost.temp]

mgr = checkpoint.manager(sys.argv[1])
checkpoint.save(mgr, 3, st, {"step": 3})
for name, mesh_cfg, devices in [
    ("1x4x2", sharding.MeshConfig(data=1, fsdp=4, model=2), jax.devices()),
    ("4x2x1", sharding.MeshConfig(data=4, fsdp=2, model=1), jax.devices()),
    ("1x1x1", sharding.MeshConfig(1, 1), jax.devices()[:1])]:
  target = state.create(cfg, opt, 10, 0, sharding.make_mesh(mesh_cfg, devices), abstract_only=True)
  back = checkpoint.restore(mgr, 3, target.state)
  out["restore_" + name] = [
      all(np.array_equal(np.asarray(a), b) for a, b in
          zip(jax.tree.leaves(back), jax.tree.leaves(fsdp))),
      all(a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in
          zip(jax.tree.leaves(back), jax.tree.leaves(target.state)))]
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
  return CpuDevices().run(_FSDP_SCRIPT, str(tmp_path_factory.mktemp("ckpt")), timeout=600)


def test_fsdp_mesh_trains_like_one_device(fsdp_run):
  out = fsdp_run
  assert out["mesh"] == {"data": 2, "fsdp": 2, "model": 2}
  # Tolerance: float32 reductions split differently over 8 devices; 3 AdamW steps at lr 1e-2.
  one, sharded = out["loss"]
  assert max(abs(a - b) for a, b in zip(one, sharded)) < 1e-5, out["loss"]
  assert abs(out["aux"][0] - out["aux"][1]) < 1e-4, out["aux"]
  assert out["param_diff"] < 1e-4 and out["opt_diff"] < 1e-4, out
  # embed -> fsdp everywhere; a parameter without embed puts fsdp on its largest free dim.
  assert out["specs"] == {"embed": ["model", "fsdp"], "head/w": ["model", "fsdp"],
                          "ffn/w_in": ["model", "fsdp"],
                          "attn/w_qkv": ["fsdp", None, "model", None], "norm": ["fsdp"],
                          "head/approx/a": ["model", "fsdp"]}, out["specs"]


def test_remat_gives_the_same_training(fsdp_run):
  for policy in ("remat", "dots"):
    losses, param_diff = fsdp_run[policy]
    assert max(abs(a - b) for a, b in zip(losses, fsdp_run["loss"][1])) < 1e-6, policy
    assert param_diff < 1e-6, (policy, param_diff)


def test_grad_accumulation_equals_the_large_batch(fsdp_run):
  accum = fsdp_run["accum"]
  assert accum["tokens"][0] == accum["tokens"][1] == 64 * 32
  for k in ("loss", "approx_loss_total", "grad_norm", "recall/ffn@k"):
    big, acc = accum[k]
    assert abs(big - acc) < 1e-5 * max(1.0, abs(big)), (k, accum)
  # Adam moments to float rounding; weights to a tenth of one step (lr 1e-2): Adam divides by
  # sqrt(v) + 1e-8, so a weight whose gradient is ~1e-8 (a group the top-k FFN almost never keeps)
  # turns rounding into a visible update (seen: 5e-5 after one step, 4e-4 after two).
  param_diff, opt_diff = fsdp_run["accum_diff"]
  assert opt_diff < 1e-5 and param_diff < 1e-3, fsdp_run["accum_diff"]


def test_compiled_step_bytes_per_device_fall_by_the_fsdp_factor(fsdp_run):
  b = {int(k): v for k, v in fsdp_run["bytes"].items()}
  for f in (2, 4, 8):
    assert b[f][0] * f == b[1][0], ("params", f, b)
    assert b[f][1] * f <= b[1][1] + 64, ("optimizer state", f, b)  # Adam's count stays whole
    assert b[f][2] < b[1][2] / f * 1.05, ("compiled arguments", f, b)
    # Activations stay those of 16/8 rows per device: XLA gathers the weights, not the batch
    # (without the residual stream's sharding constraint the temporaries grew 4.5x at fsdp 8).
    assert b[f][3] < b[1][3] * 1.2, ("temporaries", f, b)


def test_sharded_checkpoint_restores_onto_other_meshes(fsdp_run):
  for name in ("1x4x2", "4x2x1", "1x1x1"):
    assert fsdp_run["restore_" + name] == [True, True], name
