"""Training: the step lowers the loss, checkpoints resume bitwise, bad states never saved."""

import json
import shutil

import jax
import numpy as np
import pytest

from hire_cli import errors
from hire_cli.lib import checkpoint, data, optimizer, sharding, state
from hire_cli.nn.config import ModelConfig
from hire_cli.runs import evaluate, train


def test_train_step_lowers_loss_on_a_fixed_batch(tiny_cfg):
  mesh = sharding.make_mesh(sharding.MeshConfig())
  setup = state.create(tiny_cfg, optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0),
                       50, 0, mesh)
  step = train.make_train_step(setup)
  targets_BxL = np.random.default_rng(0).integers(0, tiny_cfg.vocab_size, (4, 16))
  targets_BxL = targets_BxL.astype(np.int32)
  st, first = step(setup.state, data.lm_inputs(targets_BxL), targets_BxL)
  for _ in range(30):
    st, m = step(st, data.lm_inputs(targets_BxL), targets_BxL)
  assert float(m["loss"]) < 0.5 * float(first["loss"]), (first["loss"], m["loss"])
  assert int(st["step"]) == 31


@pytest.mark.slow
def test_train_checkpoint_resume_eval_end_to_end(tmp_path, capsys, small_run):
  straight, crashed = tmp_path / "straight", tmp_path / "crashed"
  small_run.train(straight, 6)
  assert "Starting from scratch" in capsys.readouterr().out
  # A crash after step 4: the copy loses its last checkpoint and is restarted.
  shutil.copytree(straight, crashed)
  shutil.rmtree(crashed / "checkpoints" / "6")
  small_run.train(crashed, 6)
  assert "Resuming from checkpoint at step 4" in capsys.readouterr().out

  step_a, _, params_a = small_run.params(straight)
  step_b, _, params_b = small_run.params(crashed)
  assert step_a == step_b == 6
  # Data position and all state are in the checkpoint: the resumed run is bitwise identical.
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # A second `hire train` with a larger TRAIN_STEPS continues instead of starting over.
  small_run.train(crashed, 8)
  assert "Resuming from checkpoint at step 6" in capsys.readouterr().out
  resumed = crashed
  metrics = evaluate.evaluate(model_dir=str(resumed), model=small_run.model,
                              data_cfg=small_run.data, mesh_cfg=small_run.mesh, batch_size=4,
                              eval_batches=2)
  saved = json.loads((resumed / "eval" / "hire_corpus_lm" / "metrics.json").read_text())
  assert saved.pop("data") == metrics.pop("data")
  assert saved["step"] == 8 and saved == pytest.approx(metrics)
  assert np.isclose(np.exp(saved["loss"]), saved["perplexity"])


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path, small_run):
  small_run.trained(tmp_path, 2)
  other = ModelConfig(**{**small_run.model.__dict__, "d_model": 24})
  with pytest.raises(errors.UserError, match="d_model: checkpoint 16 vs config 24"):
    small_run.train(tmp_path, 4, model=other)


def test_nonfinite_loss_stops_without_a_bad_checkpoint(tmp_path, small_run):
  bad = optimizer.OptimizerConfig(learning_rate=1e30, warmup_steps=0, clip_norm=1e30)
  with pytest.raises(FloatingPointError, match="became"):
    train.train(model_dir=str(tmp_path), model=small_run.model, data_cfg=small_run.data, opt=bad,
                mesh_cfg=small_run.mesh, train_steps=6, batch_size=4, checkpoint_every=1,
                log_every=1)
  mgr_steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  # Every checkpoint that exists restores to finite parameters.
  for s in mgr_steps:
    mgr = checkpoint.manager(tmp_path)
    setup = state.create(small_run.model, bad, 6, 0, sharding.make_mesh(small_run.mesh),
                         abstract_only=True)
    st = checkpoint.restore(mgr, s, setup.state)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(st["params"]))
