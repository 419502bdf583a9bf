import json
import shutil

import jax
import numpy as np
import pytest

from hire_cli import errors
from hire_cli.lib import checkpoint, data, optimizer, sharding, state
from hire_cli.nn.config import ModelConfig
from hire_cli.runs import evaluate, train

# Shipped vocabulary (V = 32000), everything else tiny.
SMALL = ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=8, d_ff=32,
                    max_len=128)
DATA = data.DataConfig(seq_len=128)
MESH = sharding.MeshConfig()
OPT = optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=2)


def test_train_step_lowers_loss_on_a_fixed_batch(tiny_cfg):
  mesh = sharding.make_mesh(MESH)
  setup = state.create(tiny_cfg, optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0),
                       50, 0, mesh)
  step = train.make_train_step(setup)
  targets = np.random.default_rng(0).integers(0, tiny_cfg.vocab_size, (4, 16)).astype(np.int32)
  st, first = step(setup.state, data.lm_inputs(targets), targets)
  for _ in range(30):
    st, m = step(st, data.lm_inputs(targets), targets)
  assert float(m["loss"]) < 0.5 * float(first["loss"]), (first["loss"], m["loss"])
  assert int(st["step"]) == 31


def _run(model_dir, steps, **kw):
  return train.train(model_dir=str(model_dir), model=kw.pop("model", SMALL), data_cfg=DATA,
                     opt=OPT, mesh_cfg=MESH, train_steps=steps, batch_size=4, seed=0,
                     checkpoint_every=kw.pop("checkpoint_every", 2), log_every=1, **kw)


def _params(model_dir):
  return checkpoint.restore_params(str(model_dir), SMALL, sharding.make_mesh(MESH))


def test_train_checkpoint_resume_eval_end_to_end(tmp_path, capsys):
  straight, crashed = tmp_path / "straight", tmp_path / "crashed"
  _run(straight, 6)
  assert "Starting from scratch" in capsys.readouterr().out
  # A crash after step 4: the copy loses its last checkpoint and is restarted.
  shutil.copytree(straight, crashed)
  shutil.rmtree(crashed / "checkpoints" / "6")
  _run(crashed, 6)
  assert "Resuming from checkpoint at step 4" in capsys.readouterr().out

  step_a, _, params_a = _params(straight)
  step_b, _, params_b = _params(crashed)
  assert step_a == step_b == 6
  # Data position and all state are in the checkpoint: the resumed run is bitwise identical.
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # A second `hire train` with a larger TRAIN_STEPS continues instead of starting over.
  _run(crashed, 8)
  assert "Resuming from checkpoint at step 6" in capsys.readouterr().out
  resumed = crashed
  metrics = evaluate.evaluate(model_dir=str(resumed), model=SMALL, data_cfg=DATA, mesh_cfg=MESH,
                              batch_size=4, eval_batches=2)
  saved = json.loads((resumed / "eval" / "metrics.json").read_text())
  assert saved["step"] == 8 and saved == pytest.approx(metrics)
  assert np.isclose(np.exp(saved["loss"]), saved["perplexity"])


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path):
  _run(tmp_path, 2)
  other = ModelConfig(**{**SMALL.__dict__, "d_model": 24})
  with pytest.raises(errors.UserError, match="d_model: checkpoint 16 vs config 24"):
    _run(tmp_path, 4, model=other)


def test_nonfinite_loss_stops_without_a_bad_checkpoint(tmp_path):
  bad = optimizer.OptimizerConfig(learning_rate=1e30, warmup_steps=0, clip_norm=1e30)
  with pytest.raises(FloatingPointError, match="became"):
    train.train(model_dir=str(tmp_path), model=SMALL, data_cfg=DATA, opt=bad, mesh_cfg=MESH,
                train_steps=6, batch_size=4, checkpoint_every=1, log_every=1)
  mgr_steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  # Every checkpoint that exists restores to finite parameters.
  for s in mgr_steps:
    from hire_cli.lib import checkpoint
    mgr = checkpoint.manager(tmp_path)
    setup = state.create(SMALL, bad, 6, 0, sharding.make_mesh(MESH), abstract_only=True)
    st = checkpoint.restore(mgr, s, setup.state)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(st["params"]))
