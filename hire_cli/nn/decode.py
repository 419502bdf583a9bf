"""Decode engine: a jitted prefill and a jitted one-token step over the KV cache.

Token selection (greedy, or top-k sampling with temperature) happens inside the step, so the
loop needs no host sync beyond reading the token when the caller wants it. `served` picks the
path of every step: the model as trained, or the served path, both through `served.py`'s
interface (`hidden`, `next_token`); each (graphdef, served, sampling) gets its own programs,
compiled once (the last few kept)."""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn import served as served_lib
from hire_cli.nn.config import ModelConfig
from hire_cli.nn.model import cache_with, init_cache, write_cache


@functools.lru_cache(maxsize=16)
def _fns(graphdef, served: bool, top_k: int, temperature: float):
  # Each call is two programs: the model reads the cache and returns the new keys and values,
  # then `write_cache` stores them in place (see model.Attention for why not one).
  @jax.jit
  def prefill_fn(params, cache, prompt_BxL, key):
    model = nnx.merge(graphdef, params)
    # Prefill is compute-bound: the exact model fills the cache; HiRE picks the next token.
    h_BxLxD, new_kv = served_lib.hidden(model, prompt_BxL, cache, 0, hire=False)
    return served_lib.next_token(model, h_BxLxD[:, -1:], key, top_k, temperature,
                                 hire=served), new_kv

  @jax.jit
  def step_fn(params, cache, token_B, index, key):
    model = nnx.merge(graphdef, params)
    h_Bx1xD, new_kv = served_lib.hidden(model, token_B[:, None], cache, index, hire=served)
    return served_lib.next_token(model, h_Bx1xD, key, top_k, temperature, hire=served), new_kv

  return prefill_fn, step_fn


def _with_cache_write(prefill_fn, step_fn):
  def prefill(params, cache, prompt_BxL, key):
    token_B, new_kv = prefill_fn(params, cache, prompt_BxL, key)
    return token_B, write_cache(cache, new_kv, 0)

  def step(params, cache, token_B, index, key):
    token_B, new_kv = step_fn(params, cache, token_B, index, key)
    return token_B, write_cache(cache, new_kv, index)

  return prefill, step


def compiled_step(graphdef, params, cfg: ModelConfig, batch: int, served: bool):
  """The decode step's program (greedy, one token per sequence) compiled for `batch` and a
  cache of max_len: what `cost_analysis()` and `as_text()` are read from to check what a step
  reads (tests/test_cost.py)."""
  step_fn = _fns(graphdef, bool(served), 0, 0.0)[1]
  cache = init_cache(cfg, batch)
  return step_fn.lower(params, cache, jnp.zeros((batch,), jnp.int32), jnp.int32(1),
                       jax.random.key(0)).compile()


def prefill_and_step(graphdef, served: bool = False, top_k: int = 0, temperature: float = 0.0):
  """(prefill(params, cache, prompt_BxL, key) -> (token_B, cache),
      step(params, cache, token_B, index, key) -> (token_B, cache)); `served` takes the served
  path; temperature 0 is greedy (the key is then unused)."""
  if temperature < 0 or (temperature > 0 and top_k <= 0):
    raise ValueError("sampling needs temperature > 0 and top_k >= 1 (temperature 0 = greedy)")
  return _with_cache_write(*_fns(graphdef, bool(served), top_k, float(temperature)))


def generate(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int, *,
             served: bool = False, top_k: int = 0, temperature: float = 0.0, seed: int = 0,
             on_token=None):
  """Continues `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32. `on_token(token_B)`
  is called after each step (streaming); it is the only host sync in the loop."""
  prefill, step = prefill_and_step(graphdef, served, top_k, temperature)
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


def greedy(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int,
           served: bool = False):
  """Greedy continuation of `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32."""
  return generate(graphdef, params, cfg, prompt_BxL, num_tokens, served=served)


@functools.lru_cache(maxsize=16)
def _forced_fn(graphdef, served: bool):
  @jax.jit
  def forced(params, cache, prompt_BxP, ref_BxT):
    model = nnx.merge(graphdef, params)
    p = prompt_BxP.shape[1]
    # the exact prefill, as `generate` does
    h_BxPxD, kv = served_lib.hidden(model, prompt_BxP, cache, 0, hire=False)
    cache = cache_with(cache, kv, 0)
    h_BxTm1xD, _ = served_lib.hidden(model, ref_BxT[:, :-1], cache, p, hire=served)
    h_BxTxD = jnp.concatenate([h_BxPxD[:, -1:], h_BxTm1xD], axis=1)
    b, t, d = h_BxTxD.shape  # each position as its own decode step: the same greedy choice
    return served_lib.next_token(model, h_BxTxD.reshape(b * t, 1, d), None,
                                 hire=served).reshape(b, t)

  return forced


def teacher_forced_greedy(graphdef, params, cfg: ModelConfig, prompt_BxP, ref_BxT, *,
                          served: bool = False):
  """(B, T) int32: the greedy token at each of the T positions of `ref_BxT` given the prompt and
  the reference tokens before it (not the model's own earlier choices), on the path `generate`
  takes (exact prefill, then the served path when `served`). Compared with a dense greedy
  continuation this is the per-step agreement, which one early divergence cannot shift."""
  b, p = prompt_BxP.shape
  cache = init_cache(cfg, b, min(cfg.max_len, p + ref_BxT.shape[1]))
  forced = _forced_fn(graphdef, bool(served))
  return forced(params, cache, jnp.asarray(prompt_BxP, jnp.int32), jnp.asarray(ref_BxT, jnp.int32))
