import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hire_cli.lib import state
from hire_cli.nn import config
from hire_cli.nn.model import Transformer, init_cache, write_cache


def _logits(model, tokens_BxL):
  h, _ = model(tokens_BxL)
  return model.logits(h)


@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
@pytest.mark.parametrize("tied", [False, True])
def test_shapes(tiny_cfg, activation, tied):
  cfg = dataclasses.replace(tiny_cfg, activation=activation, tie_embeddings=tied)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  logits = _logits(model, jnp.ones((3, 10), jnp.int32))
  assert logits.shape == (3, 10, cfg.vocab_size)
  assert np.isfinite(np.asarray(logits)).all()
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == cfg.num_params()


def test_causality_through_gradients(tiny_cfg):
  """The output at position t must not depend on inputs after t."""
  model = Transformer(tiny_cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  x_BxLxD = jax.random.normal(jax.random.key(1), (1, 8, tiny_cfg.d_model))

  def out_at(x, t):
    m = nnx.merge(graphdef, params)
    pos = jnp.arange(8)[None]
    for block in m.blocks:
      x, _ = block(x, pos)
    return jnp.sum(x[0, t])

  for t in (0, 3, 6):
    g = jax.grad(out_at)(x_BxLxD, t)
    per_pos = np.abs(np.asarray(g[0])).sum(-1)
    assert (per_pos[t + 1:] == 0).all(), f"position {t} sees the future: {per_pos}"
    assert (per_pos[:t + 1] > 0).all(), f"position {t} ignores the past: {per_pos}"


def test_kv_cache_decode_matches_full_forward(tiny_cfg):
  model = Transformer(tiny_cfg, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, tiny_cfg.vocab_size)
  full_BxLxV = _logits(model, tokens)
  cache = init_cache(tiny_cfg, 2, 16)
  h, new_kv = model(tokens[:, :8], cache, 0)
  cache = write_cache(cache, new_kv, 0)
  np.testing.assert_allclose(model.logits(h), full_BxLxV[:, :8], atol=1e-5)
  for t in range(8, 10):  # one token at a time
    h, new_kv = model(tokens[:, t:t + 1], cache, t)
    cache = write_cache(cache, new_kv, t)
    np.testing.assert_allclose(model.logits(h)[:, 0], full_BxLxV[:, t], atol=1e-5)
  h, _ = model(tokens[:, 10:12], cache, 10)  # a chunk of two after the cached ones
  np.testing.assert_allclose(model.logits(h), full_BxLxV[:, 10:12], atol=1e-5)


def test_params_carry_logical_axes(tiny_cfg):
  _, params, axes = state.abstract_model(tiny_cfg)
  assert axes["embed"] == ("vocab", "embed")
  assert axes["head"]["w"] == ("vocab", "embed")
  assert axes["blocks"][0]["ffn"]["w_in"] == ("mlp", "embed")
  assert jax.tree.structure(params) == jax.tree.structure(
      axes, is_leaf=lambda a: isinstance(a, tuple))


def test_bad_activation_is_a_user_error(tiny_cfg):
  from hire_cli import errors
  with pytest.raises(errors.UserError, match="activation"):
    dataclasses.replace(tiny_cfg, activation="tanh")


@pytest.mark.parametrize("softmax,ffn,has_hire", [
    (False, False, False), (True, False, True), (False, True, True), (True, True, True)])
def test_has_hire_for_the_four_variants(tiny_cfg, softmax, ffn, has_hire):
  cfg = dataclasses.replace(
      tiny_cfg, hire_softmax=config.default_hire_softmax(tiny_cfg) if softmax else None,
      hire_ffn=config.default_hire_ffn(tiny_cfg) if ffn else None)
  assert cfg.has_hire is has_hire
