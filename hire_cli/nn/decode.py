"""Decode engine: a jitted prefill and a jitted one-token step over the KV cache.

Token selection (greedy, or top-k sampling with temperature) happens inside the step, so the
loop needs no host sync beyond reading the token when the caller wants it."""

import functools

import jax
import jax.numpy as jnp

from hire_cli.lib import state
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.model import cache_with, init_cache, write_cache


def next_token(model, h_Bx1xD, hire: bool, key, top_k: int = 0, temperature: float = 0.0):
  """The next token from the last hidden state: greedy when temperature == 0, else sampled from
  the softmax over the top-k logits at `temperature`. With `hire` and a HiRE head, only the
  approximator and the k' gathered rows of W are read."""
  k = 1 if temperature == 0 else top_k
  if hire and model.cfg.hire_softmax is not None:
    values_BxK, ids_BxK = (x[:, 0] for x in model.head.hire_top_k(h_Bx1xD, k=k)[:2])
  else:
    values_BxK, ids_BxK = jax.lax.top_k(model.logits(h_Bx1xD)[:, 0].astype(jnp.float32), k)
  if temperature == 0:
    return ids_BxK[:, 0].astype(jnp.int32)
  choice_B = jax.random.categorical(key, values_BxK.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(ids_BxK, choice_B[:, None], -1)[:, 0].astype(jnp.int32)


@functools.lru_cache(maxsize=None)
def _fns(graphdef, hire: bool, top_k: int, temperature: float):
  # Each call is two programs: the model reads the cache and returns the new keys and values,
  # then `write_cache` stores them in place (see model.Attention for why not one).
  @jax.jit
  def prefill_fn(params, cache, prompt_BxL, key):
    model = state.bind(graphdef, params)
    # Prefill is compute-bound: the exact model fills the cache; HiRE picks the next token.
    h_BxLxD, new_kv = model(prompt_BxL, cache, 0)
    return next_token(model, h_BxLxD[:, -1:], hire, key, top_k, temperature), new_kv

  @jax.jit
  def step_fn(params, cache, token_B, index, key):
    model = state.bind(graphdef, params)
    h_Bx1xD, new_kv = model(token_B[:, None], cache, index, hire=hire)
    return next_token(model, h_Bx1xD, hire, key, top_k, temperature), new_kv

  def prefill(params, cache, prompt_BxL, key):
    token_B, new_kv = prefill_fn(params, cache, prompt_BxL, key)
    return token_B, write_cache(cache, new_kv, 0)

  def step(params, cache, token_B, index, key):
    token_B, new_kv = step_fn(params, cache, token_B, index, key)
    return token_B, write_cache(cache, new_kv, index)

  return prefill, step


def prefill_and_step(graphdef, hire: bool = False, top_k: int = 0, temperature: float = 0.0):
  """(prefill(params, cache, prompt_BxL, key) -> (token_B, cache),
      step(params, cache, token_B, index, key) -> (token_B, cache)); `hire` takes the HiRE
  paths; temperature 0 is greedy (the key is then unused)."""
  if temperature < 0 or (temperature > 0 and top_k <= 0):
    raise ValueError("sampling needs temperature > 0 and top_k >= 1 (temperature 0 = greedy)")
  return _fns(graphdef, hire, top_k, float(temperature))


def generate(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int, *,
             hire: bool = False, top_k: int = 0, temperature: float = 0.0, seed: int = 0,
             on_token=None):
  """Continues `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32. `on_token(token_B)`
  is called after each step (streaming); it is the only host sync in the loop."""
  prefill, step = prefill_and_step(graphdef, hire, top_k, temperature)
  b, l = prompt_BxL.shape
  keys = jax.random.split(jax.random.key(seed), num_tokens)
  cache = init_cache(cfg, b, min(cfg.max_len, l + num_tokens))
  token_B, cache = prefill(params, cache, jnp.asarray(prompt_BxL, jnp.int32), keys[0])
  out = [token_B]
  if on_token:
    on_token(token_B)
  for i in range(num_tokens - 1):
    token_B, cache = step(params, cache, token_B, jnp.int32(l + i), keys[i + 1])
    out.append(token_B)
    if on_token:
      on_token(token_B)
  return jnp.stack(out, axis=1)


def greedy(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int, hire: bool = False):
  """Greedy continuation of `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32."""
  return generate(graphdef, params, cfg, prompt_BxL, num_tokens, hire=hire)


@functools.lru_cache(maxsize=None)
def _forced_fn(graphdef, hire: bool):
  @jax.jit
  def forced(params, cache, prompt_BxP, ref_BxT):
    model = state.bind(graphdef, params)
    p = prompt_BxP.shape[1]
    h_BxPxD, kv = model(prompt_BxP, cache, 0)  # the exact prefill, as `generate` does
    cache = cache_with(cache, kv, 0)
    h_BxTm1xD, _ = model(ref_BxT[:, :-1], cache, p, hire=hire)
    h_BxTxD = jnp.concatenate([h_BxPxD[:, -1:], h_BxTm1xD], axis=1)
    b, t, d = h_BxTxD.shape  # each position as its own decode step: the same greedy choice
    return next_token(model, h_BxTxD.reshape(b * t, 1, d), hire, None).reshape(b, t)

  return forced


def teacher_forced_greedy(graphdef, params, cfg: ModelConfig, prompt_BxP, ref_BxT, *,
                          hire: bool = False):
  """(B, T) int32: the greedy token at each of the T positions of `ref_BxT` given the prompt and
  the reference tokens before it (not the model's own earlier choices), on the path `generate`
  takes (exact prefill, then the HiRE layers when `hire`). Compared with a dense greedy
  continuation this is the per-step agreement, which one early divergence cannot shift."""
  b, p = prompt_BxP.shape
  cache = init_cache(cfg, b, min(cfg.max_len, p + ref_BxT.shape[1]))
  return _forced_fn(graphdef, hire)(params, cache, jnp.asarray(prompt_BxP, jnp.int32),
                                    jnp.asarray(ref_BxT, jnp.int32))
