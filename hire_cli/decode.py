"""Decode engine: a jitted prefill and a jitted one-token step over the KV cache.

Greedy selection happens inside the step, so the loop needs no host sync beyond reading the
token when the caller wants it."""

import functools

import jax
import jax.numpy as jnp

from hire_cli import state
from hire_cli.config import ModelConfig
from hire_cli.model import init_cache


@functools.lru_cache(maxsize=None)
def _fns(graphdef):
  @functools.partial(jax.jit, donate_argnums=1)
  def prefill(params, cache, prompt_BxL):
    model = state.bind(graphdef, params)
    h_BxLxD, cache = model(prompt_BxL, cache, 0)
    logits_BxV = model.logits(h_BxLxD[:, -1:])[:, 0]
    return jnp.argmax(logits_BxV, -1).astype(jnp.int32), cache

  @functools.partial(jax.jit, donate_argnums=1)
  def step(params, cache, token_B, index):
    model = state.bind(graphdef, params)
    h_Bx1xD, cache = model(token_B[:, None], cache, index)
    logits_BxV = model.logits(h_Bx1xD)[:, 0]
    return jnp.argmax(logits_BxV, -1).astype(jnp.int32), cache

  return prefill, step


def prefill_and_step(graphdef):
  """(prefill(params, cache, prompt_BxL) -> (token_B, cache),
      step(params, cache, token_B, index) -> (token_B, cache))."""
  return _fns(graphdef)


def greedy(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int):
  """Greedy continuation of `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32."""
  prefill, step = prefill_and_step(graphdef)
  b, l = prompt_BxL.shape
  cache = init_cache(cfg, b, min(cfg.max_len, l + num_tokens))
  token_B, cache = prefill(params, cache, jnp.asarray(prompt_BxL, jnp.int32))
  out = [token_B]
  for i in range(num_tokens - 1):
    token_B, cache = step(params, cache, token_B, jnp.int32(l + i))
    out.append(token_B)
  return jnp.stack(out, axis=1)
