"""Decode engine: the per-step (teacher-forced) greedy tokens behind `hire generate --compare`."""

import dataclasses

import jax
import numpy as np

from hire_cli.lib import sharding, state
from hire_cli.nn import decode
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig


def _mesh():
  return sharding.make_mesh(sharding.MeshConfig())


def _prompt(cfg, b=3, p=5, seed=2):
  return jax.random.randint(jax.random.key(seed), (b, p), 0, cfg.vocab_size)


def test_teacher_forced_on_own_greedy_output_reproduces_it(tiny_cfg):
  """Fed its own greedy continuation, the model picks it again at every step: the one-pass
  cached forward over T tokens agrees with T single-token decode steps."""
  graphdef, params = state.init_params(tiny_cfg, 0, _mesh())
  prompt = _prompt(tiny_cfg)
  greedy_BxT = decode.greedy(graphdef, params, tiny_cfg, prompt, 10)
  forced_BxT = decode.teacher_forced_greedy(graphdef, params, tiny_cfg, prompt, greedy_BxT)
  np.testing.assert_array_equal(forced_BxT, greedy_BxT)
  # On another sequence it follows that sequence's prefix, not its own: it differs somewhere.
  other_BxT = (greedy_BxT + 1) % tiny_cfg.vocab_size
  assert not np.array_equal(
      decode.teacher_forced_greedy(graphdef, params, tiny_cfg, prompt, other_BxT), greedy_BxT)


def test_hire_per_step_agreement_is_one_only_when_recall_is(tiny_cfg):
  """HiRE-Softmax + HiRE-FFN with every candidate (k' = V, k'_g = all groups) choose dense's
  token at every step; with tiny candidate sets they do not."""
  def cfg(k_prime, k_prime_factor):
    return dataclasses.replace(
        tiny_cfg,
        hire_softmax=HiReSoftmaxConfig(k=1, k_prime=k_prime, approx=ApproxConfig(rank=4)),
        hire_ffn=HiReFfnConfig(approx=ApproxConfig(rank=4), group_size=4, k_fraction=0.25,
                               k_prime_factor=k_prime_factor))
  full = cfg(tiny_cfg.vocab_size, 4.0)  # k_g = 4 of 16 groups, k'_g = 16
  graphdef, params = state.init_params(full, 1, _mesh())
  prompt = _prompt(full)
  dense_BxT = decode.greedy(graphdef, params, full, prompt, 10, served=False)
  forced = decode.teacher_forced_greedy(graphdef, params, full, prompt, dense_BxT, served=True)
  np.testing.assert_array_equal(forced, dense_BxT)

  small = cfg(2, 1.0)
  graphdef_s, _ = state.init_params(small, 1, _mesh())
  forced_s = decode.teacher_forced_greedy(graphdef_s, params, small, prompt, dense_BxT,
                                          served=True)
  assert np.mean(np.asarray(forced_s) == np.asarray(dense_BxT)) < 1.0
