import jax
import numpy as np
import pytest

from hire_cli.evals import served_metrics
from hire_cli.nn import loss


def test_served_loss_is_comparable_to_the_exact_loss():
  """The served loss normalises over the candidates plus the target: with every token a
  candidate it is the exact loss; with a few candidates it is a finite, lower number, unlike the
  floored sampling loss, and the miss rate counts the targets outside the candidates."""
  rng = np.random.default_rng(0)
  logits_BxLxV = jax.numpy.asarray(rng.normal(size=(2, 5, 50)).astype(np.float32))
  targets_BxL = jax.numpy.asarray(rng.integers(0, 50, size=(2, 5)))
  exact = float(loss.cross_entropy(logits_BxLxV, targets_BxL)[0])
  all_BxLxV = jax.numpy.broadcast_to(jax.numpy.arange(50), (2, 5, 50))
  full = served_metrics.served_metrics(logits_BxLxV, all_BxLxV, targets_BxL, ks=(1,))
  np.testing.assert_allclose(float(full["served_loss"]), exact, rtol=1e-5)
  assert float(full["candidate_miss_rate"]) == 0.0
  few_BxLx4 = jax.numpy.asarray(np.argsort(-np.asarray(logits_BxLxV), -1)[..., :4])
  few = served_metrics.served_metrics(logits_BxLxV, few_BxLx4, targets_BxL, ks=(1,))
  hit = (np.asarray(few_BxLx4) == np.asarray(targets_BxL)[..., None]).any(-1)
  assert float(few["candidate_miss_rate"]) == pytest.approx(1 - hit.mean())
  assert 0 < float(few["served_loss"]) <= exact
  assert float(few["served_sampling_loss"]) > float(few["served_loss"]) + 5


def test_approx_tail_loss_is_exact_for_a_perfect_approximator_and_not_otherwise():
  """Scores equal to the logits up to a constant give the exact loss for any candidate set (the
  shift calibrates the constant; without it the test fails); scores that misjudge the tail give
  another number, while the candidates-plus-target loss stays below the exact one."""
  rng = np.random.default_rng(1)
  logits_BxLxV = jax.numpy.asarray(rng.normal(size=(2, 6, 40)).astype(np.float32) * 2)
  top_BxL = np.argmax(np.asarray(logits_BxLxV), -1)
  targets_BxL = jax.numpy.asarray(np.where(np.arange(6) % 2 == 0, top_BxL,
                                           rng.integers(0, 40, size=(2, 6))))
  exact = float(loss.cross_entropy(logits_BxLxV, targets_BxL)[0])
  few_BxLx5 = jax.numpy.asarray(np.argsort(-np.asarray(logits_BxLxV), -1)[..., :5])
  hit = (np.asarray(few_BxLx5) == np.asarray(targets_BxL)[..., None]).any(-1)
  assert 0 < hit.mean() < 1  # both branches: targets inside and outside the candidates
  perfect = served_metrics.served_metrics(logits_BxLxV, few_BxLx5, targets_BxL, ks=(1,),
                                          scores_BxLxV=logits_BxLxV + 3.0)
  np.testing.assert_allclose(float(perfect["served_loss_approx_tail"]), exact, rtol=1e-5)
  assert float(perfect["served_loss"]) < exact - 0.05  # the tail left out
  flat = served_metrics.served_metrics(logits_BxLxV, few_BxLx5, targets_BxL, ks=(1,),
                                       scores_BxLxV=jax.numpy.zeros_like(logits_BxLxV))
  assert abs(float(flat["served_loss_approx_tail"]) - exact) > 0.05
  assert "served_loss_approx_tail" not in served_metrics.served_metrics(
      logits_BxLxV, few_BxLx5, targets_BxL, ks=(1,))
