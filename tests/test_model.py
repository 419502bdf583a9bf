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


def _family(tiny_cfg, **kw):
  """The tiny model with every imported-family knob on: GQA, QK-norm, post-norms, (1 + w)
  norms, embedding scale, GeGLU, a window of 4 on all layers but every third, tied head."""
  knobs = dict(n_heads=4, n_kv_heads=2, qk_norm=True, post_norms=True, norm_offset=1.0,
               norm_eps=1e-5, embed_scale=32**0.5, activation="geglu", sliding_window=4,
               global_every=3, n_layers=3, rope_local_base=100.0, tie_embeddings=True,
               tied_head_scale=1.0)
  return dataclasses.replace(tiny_cfg, **{**knobs, **kw})


@pytest.mark.slow
def test_family_knobs_count_and_cache(tiny_cfg):
  cfg = _family(tiny_cfg)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == cfg.num_params()
  assert model.blocks[0].attn.w_kv.shape == (32, 2, 2, 16)
  assert [cfg.window(i) for i in range(3)] == [4, 4, 0]
  # The windowed layers decoded one token at a time far past their window equal the forward.
  tokens = jax.random.randint(jax.random.key(3), (2, 14), 0, cfg.vocab_size)
  full_BxLxV = _logits(model, tokens)
  cache = init_cache(cfg, 2, 16)
  assert cache[0]["k"].shape == (2, 2, 16, 16)
  h, new_kv = model(tokens[:, :3], cache, 0)
  cache = write_cache(cache, new_kv, 0)
  for t in range(3, 14):
    h, new_kv = model(tokens[:, t:t + 1], cache, t)
    cache = write_cache(cache, new_kv, t)
    np.testing.assert_allclose(model.logits(h)[:, 0], full_BxLxV[:, t], atol=2e-5)


@pytest.mark.parametrize("window,sees", [(4, 4), (5, 5)])
def test_window_limits_what_a_layer_sees(tiny_cfg, window, sees):
  """On windowed layers only, the output at t depends on exactly the last `window` positions
  (an off-by-one window fails: the parametrization pins both sizes)."""
  cfg = _family(tiny_cfg, sliding_window=window, global_every=99, n_layers=1)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  x_BxLxD = jax.random.normal(jax.random.key(1), (1, 10, cfg.d_model))

  def out_at(x, t):
    y, _ = model.blocks[0](x, jnp.arange(10)[None])
    return jnp.sum(y[0, t])

  g = np.abs(np.asarray(jax.grad(out_at)(x_BxLxD, 9)[0])).sum(-1)
  assert (g[:10 - sees] == 0).all() and (g[10 - sees:] > 0).all(), g


def test_tied_head_scales_h_not_w(tiny_cfg):
  """A tied head of scale s gives s x (h . E), computed without rewriting E every step."""
  for scale, cfg_scale in ((tiny_cfg.d_model**-0.5, 0.0), (1.0, 1.0)):
    cfg = dataclasses.replace(tiny_cfg, tie_embeddings=True, tied_head_scale=cfg_scale)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    h = jax.random.normal(jax.random.key(0), (1, 3, cfg.d_model))
    want = np.einsum("bld,vd->blv", np.asarray(h), np.asarray(model.embed[...])) * scale
    np.testing.assert_allclose(model.logits(h), want, rtol=1e-5, atol=1e-5)


def test_bad_family_knobs_are_user_errors(tiny_cfg):
  from hire_cli import errors
  for kw in (dict(n_kv_heads=3), dict(sliding_window=-1), dict(bos_id=tiny_cfg.vocab_size)):
    with pytest.raises(errors.UserError):
      dataclasses.replace(tiny_cfg, **kw)


def test_hire_softmax_on_a_tied_head_shares_the_embedding(tiny_cfg):
  """Post-hoc HiRE on an imported tied model: the head is the embedding (one Variable), so
  its exact logits equal the dense tied model's and the checkpoint holds W once."""
  dense = dataclasses.replace(tiny_cfg, tie_embeddings=True, tied_head_scale=1.0)
  hire = dataclasses.replace(dense, hire_softmax=config.default_hire_softmax(dense))
  model = Transformer(hire, rngs=nnx.Rngs(0))
  _, params, _ = state.abstract_model(hire)
  assert "w" not in params["head"] and model.head.w is model.embed
  dense_model = Transformer(dense, rngs=nnx.Rngs(0))
  tokens = jnp.ones((1, 5), jnp.int32)
  h, _ = dense_model(tokens)
  want = dense_model.logits(h)
  nnx.update(model, nnx.state(dense_model))
  np.testing.assert_allclose(model.logits(h), want, rtol=1e-6)
