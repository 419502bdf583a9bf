"""Golden numbers for one train step of a tiny HiRE model (HiRE-Softmax + HiRE-FFN): the model,
init, both distillation losses and the optimizer are pinned, so a refactor meant to preserve
behaviour is checked against fixed numbers, not just against itself."""

import dataclasses

import jax
import numpy as np

from hire_cli.lib import data, optimizer, sharding, state
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig
from hire_cli.runs import train

RTOL = 1e-5
LEARNING_RATE = 1e-2
# Computed on CPU (float32, seed 0). See _WHEN_TO_UPDATE before changing any of them.
GOLDEN = {
    "init_abs_sum": 5287.5446297316485,  # sum |p| over every initial parameter, in float64
    "loss": 5.099201202392578,  # LM cross-entropy of the initial parameters
    "approx_loss_total": 9.561630249023438,  # HiRE-Softmax + HiRE-FFN distillation losses
    "grad_norm": 1.5663994550704956,  # global gradient norm (before clipping)
    "param_abs_sum": 5281.884440464976,  # sum |p| over every parameter after the step, in float64
    "loss_after": 4.053506374359131,  # LM cross-entropy of the updated parameters
}
_WHEN_TO_UPDATE = (
    "The golden one-step numbers changed. Updating GOLDEN is legitimate only for a deliberate "
    "change of behaviour: the model's maths, parameter init, the optimizer or its schedule, the "
    "losses, or this test's config and data (say so in the commit; the new values are below). "
    "It is NOT legitimate after a refactor meant to preserve behaviour (moving or renaming code, "
    "restructuring the train step, sharding, checkpointing): there a mismatch is a bug to fix. "
    "If init_abs_sum still matches, the init is fine: look at the losses and the optimizer.")


def _tiny_hire(tiny_cfg):
  return dataclasses.replace(
      tiny_cfg,
      hire_softmax=HiReSoftmaxConfig(k=4, k_prime=16, approx=ApproxConfig(rank=4)),
      hire_ffn=HiReFfnConfig(approx=ApproxConfig(rank=4), group_size=8, k_fraction=0.25,
                             k_prime_factor=2.0))


def _abs_sum(params) -> float:
  return float(sum(np.abs(np.asarray(p, np.float64)).sum() for p in jax.tree.leaves(params)))


def _one_step(cfg, learning_rate: float) -> dict:
  """The GOLDEN quantities for one step from seed 0 on fixed synthetic tokens, on one CPU."""
  cpu = jax.devices("cpu")[:1]
  with jax.default_device(cpu[0]):
    opt = optimizer.OptimizerConfig(learning_rate=learning_rate, warmup_steps=0)
    setup = state.create(cfg, opt, 10, 0, sharding.make_mesh(sharding.MeshConfig(), cpu))
    step = train.make_train_step(setup)
    targets_BxL = np.random.RandomState(0).randint(0, cfg.vocab_size, (4, 16)).astype(np.int32)
    inputs_BxL = data.lm_inputs(targets_BxL)
    got = {"init_abs_sum": _abs_sum(jax.device_get(setup.state["params"]))}
    st, metrics = step(setup.state, inputs_BxL, targets_BxL)
    got.update({k: float(metrics.get(k, np.nan))  # a missing metric fails as nan
                for k in ("loss", "approx_loss_total", "grad_norm")})
    got["param_abs_sum"] = _abs_sum(jax.device_get(st["params"]))
    _, after = step(st, inputs_BxL, targets_BxL)  # same compiled step, loss at the new params
    got["loss_after"] = float(after["loss"])
  return got


def test_one_train_step_matches_golden_values(tiny_cfg):
  got = _one_step(_tiny_hire(tiny_cfg), LEARNING_RATE)
  wrong = {k: f"got {got[k]!r}, golden {want!r}" for k, want in GOLDEN.items()
           if not np.isclose(got[k], want, rtol=RTOL, atol=0.0)}
  assert not wrong, f"{wrong}\n{_WHEN_TO_UPDATE}\nNew values: GOLDEN = {got!r}"
