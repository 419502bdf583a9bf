"""Decode engine: a jitted prefill and a jitted one-token step over the KV cache.

Greedy selection happens inside the step, so the loop needs no host sync beyond reading the
token when the caller wants it."""

import functools

import jax
import jax.numpy as jnp

from hire_cli import state
from hire_cli.config import ModelConfig
from hire_cli.model import init_cache


def next_token(model, h_Bx1xD, hire: bool):
  """Greedy token from the last hidden state. With `hire` and a HiRE head, only the approximator
  and the k' gathered rows of W are read."""
  if hire and model.cfg.hire_softmax is not None:
    return model.head.hire_top_k(h_Bx1xD, k=1)[1][:, 0, 0].astype(jnp.int32)
  return jnp.argmax(model.logits(h_Bx1xD)[:, 0], -1).astype(jnp.int32)


@functools.lru_cache(maxsize=None)
def _fns(graphdef, hire: bool):
  @functools.partial(jax.jit, donate_argnums=1)
  def prefill(params, cache, prompt_BxL):
    model = state.bind(graphdef, params)
    # Prefill is compute-bound: the exact model fills the cache; HiRE picks the next token.
    h_BxLxD, cache = model(prompt_BxL, cache, 0)
    return next_token(model, h_BxLxD[:, -1:], hire), cache

  @functools.partial(jax.jit, donate_argnums=1)
  def step(params, cache, token_B, index):
    model = state.bind(graphdef, params)
    h_Bx1xD, cache = model(token_B[:, None], cache, index, hire=hire)
    return next_token(model, h_Bx1xD, hire), cache

  return prefill, step


def prefill_and_step(graphdef, hire: bool = False):
  """(prefill(params, cache, prompt_BxL) -> (token_B, cache),
      step(params, cache, token_B, index) -> (token_B, cache)); `hire` takes the HiRE paths."""
  return _fns(graphdef, hire)


def greedy(graphdef, params, cfg: ModelConfig, prompt_BxL, num_tokens: int, hire: bool = False):
  """Greedy continuation of `prompt_BxL` by `num_tokens` tokens: (B, num_tokens) int32."""
  prefill, step = prefill_and_step(graphdef, hire)
  b, l = prompt_BxL.shape
  cache = init_cache(cfg, b, min(cfg.max_len, l + num_tokens))
  token_B, cache = prefill(params, cache, jnp.asarray(prompt_BxL, jnp.int32))
  out = [token_B]
  for i in range(num_tokens - 1):
    token_B, cache = step(params, cache, token_B, jnp.int32(l + i))
    out.append(token_B)
  return jnp.stack(out, axis=1)
