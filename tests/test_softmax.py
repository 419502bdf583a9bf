import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from hire_cli import errors
from hire_cli.lib import sharding, state
from hire_cli.nn import decode, loss
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReSoftmaxConfig, ModelConfig
from hire_cli.nn.model import Transformer


def _cfg(tiny_cfg, **kw):
  hc = HiReSoftmaxConfig(**{"k": 8, "k_prime": 24, "approx": ApproxConfig(rank=4), **kw})
  return dataclasses.replace(tiny_cfg, hire_softmax=hc)


def test_full_candidate_set_returns_exactly_the_dense_top_k(tiny_cfg):
  cfg = _cfg(tiny_cfg, k_prime=tiny_cfg.vocab_size)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  h, _ = model(jax.random.randint(jax.random.key(0), (2, 6), 0, cfg.vocab_size))
  values, ids, _ = model.head.served_top_k(h)
  want_values, want_ids = jax.lax.top_k(model.logits(h), cfg.hire_softmax.k)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_allclose(values, want_values, rtol=1e-6, atol=1e-6)


def test_small_candidate_set_is_approximate(tiny_cfg):
  """A random rank-4 approximator with k' << V misses some of the exact top-k."""
  cfg = _cfg(tiny_cfg)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  h, _ = model(jax.random.randint(jax.random.key(0), (4, 16), 0, cfg.vocab_size))
  _, ids, cand = model.head.served_top_k(h)
  _, want_ids = jax.lax.top_k(model.logits(h), cfg.hire_softmax.k)
  assert not np.array_equal(np.sort(ids, -1), np.sort(want_ids, -1))
  assert cand.shape[-1] == cfg.hire_softmax.k_prime
  # Whatever it returns is exact on the candidates: values equal the true logits of those ids.
  logits = np.asarray(model.logits(h))
  values, ids, _ = model.head.served_top_k(h)
  np.testing.assert_allclose(values, np.take_along_axis(logits, np.asarray(ids), -1), atol=1e-5)


@pytest.mark.parametrize("kind", ["lr", "lr_q"])
def test_approximator_loss_leaves_model_gradients_at_zero(tiny_cfg, kind):
  cfg = _cfg(tiny_cfg, approx=ApproxConfig(kind=kind, rank=4, bits=4))
  graphdef, params = state.init_params(cfg, 0, sharding.make_mesh(sharding.MeshConfig()))
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, cfg.vocab_size)

  def aux_loss(p):
    _, sown = state.bind(graphdef, p).logits_with_aux(tokens)
    return loss.collect_aux(sown)[0]

  grads = jax.grad(aux_loss)(params)
  approx_g = grads["head"].pop("approx")
  for leaf in jax.tree.leaves(grads):
    np.testing.assert_array_equal(leaf, 0.0)
  assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(approx_g))


def test_greedy_decoding_matches_dense_when_recall_is_one(tiny_cfg):
  """k' = V makes recall 1, so HiRE greedy decoding must equal dense greedy decoding."""
  mesh = sharding.make_mesh(sharding.MeshConfig())
  cfg = _cfg(tiny_cfg, k_prime=tiny_cfg.vocab_size)
  graphdef, params = state.init_params(cfg, 3, mesh)
  prompt = jax.random.randint(jax.random.key(2), (2, 5), 0, cfg.vocab_size)
  dense = decode.greedy(graphdef, params, cfg, prompt, 12, served=False)
  hire = decode.greedy(graphdef, params, cfg, prompt, 12, served=True)
  np.testing.assert_array_equal(dense, hire)
  # And with a tiny k' it diverges somewhere (the HiRE path really is taken).
  small = _cfg(tiny_cfg, k=1, k_prime=2)
  graphdef_s, _ = state.init_params(small, 3, mesh)
  hire_small = decode.greedy(graphdef_s, params, small, prompt, 12, served=True)
  assert not np.array_equal(dense, hire_small)


@pytest.mark.parametrize("kw,match", [
    ({"k": 0}, "k=0"),
    ({"k": 8, "k_prime": 4}, "k_prime=4"),
    ({"k_prime": 10_000}, "k_prime=10000"),
    ({"topk_method": "magic"}, "topk_method"),
    ({"approx": ApproxConfig(rank=32)}, "rank=32"),
])
def test_bad_softmax_configs_are_user_errors(tiny_cfg, kw, match):
  with pytest.raises(errors.UserError, match=match):
    _cfg(tiny_cfg, **kw)


@pytest.mark.slow
def test_post_hoc_mode_trains_only_the_approximator(tmp_path, capsys):
  """From a dense checkpoint: the model stays bit-identical, the SVD-initialised approximator
  trains, and it starts with a far better recall than a random one."""
  from hire_cli.lib import checkpoint, data, optimizer
  from hire_cli.runs import train
  dense_cfg = ModelConfig(vocab_size=32000, d_model=16, n_layers=1, n_heads=2, d_head=8,
                          d_ff=32, max_len=128)
  hire_cfg = dataclasses.replace(dense_cfg, hire_softmax=HiReSoftmaxConfig(
      k=8, k_prime=64, approx=ApproxConfig(rank=8)))
  mesh_cfg = sharding.MeshConfig()
  common = dict(data_cfg=data.DataConfig(seq_len=128), mesh_cfg=mesh_cfg, batch_size=4,
                opt=optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0), log_every=1)
  train.train(model_dir=str(tmp_path / "dense"), model=dense_cfg, train_steps=3, **common)
  train.train(model_dir=str(tmp_path / "posthoc"), model=hire_cfg, train_steps=3,
              post_hoc_from=str(tmp_path / "dense"), **common)
  mesh = sharding.make_mesh(mesh_cfg)
  _, _, dense = checkpoint.restore_params(str(tmp_path / "dense"), dense_cfg, mesh)
  _, graphdef, hire = checkpoint.restore_params(str(tmp_path / "posthoc"), hire_cfg, mesh)
  approx_trained = hire["head"].pop("approx")
  for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(hire)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # SVD start: the approximator's A B is close to the head's W (rank 8 of a 16-wide W).
  w = np.asarray(dense["head"]["w"])
  ab = np.asarray(approx_trained["lr"]["a"]) @ np.asarray(approx_trained["lr"]["b"])
  assert np.linalg.norm(ab - w) < 0.8 * np.linalg.norm(w)
  random_cfg_params = state.init_params(hire_cfg, 1, mesh)[1]["head"]["approx"]["lr"]
  ab_random = np.asarray(random_cfg_params["a"]) @ np.asarray(random_cfg_params["b"])
  assert np.linalg.norm(ab_random - w) > np.linalg.norm(ab - w)
  # TRAIN_STEPS=0: the approximator as initialised, untrained: exactly the truncated SVD of W.
  capsys.readouterr()
  train.train(model_dir=str(tmp_path / "untrained"), model=hire_cfg, train_steps=0,
              post_hoc_from=str(tmp_path / "dense"), **common)
  log = capsys.readouterr().out
  assert "saving the approximators as initialised (TRAIN_STEPS=0)" in log, log
  assert "Starting from scratch" not in log and "training the approximators" not in log, log
  step, _, untrained = checkpoint.restore_params(str(tmp_path / "untrained"), hire_cfg, mesh)
  u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
  ab0 = np.asarray(untrained["head"]["approx"]["lr"]["a"]) @ np.asarray(
      untrained["head"]["approx"]["lr"]["b"])
  assert step == 0
  np.testing.assert_allclose(ab0, (u[:, :8] * s[:8]) @ vt[:8], atol=1e-4)
  with pytest.raises(errors.UserError, match="TRAIN_STEPS=0 .*POST_HOC_FROM"):
    train.train(model_dir=str(tmp_path / "none"), model=dense_cfg, train_steps=0, **common)
  assert not (tmp_path / "none").exists()
