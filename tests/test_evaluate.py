"""`hire eval`'s metric functions against independent computations on the same tokens."""

import dataclasses

import numpy as np

from hire_cli.evals import metrics, recall_curve
from hire_cli.lib import state
from hire_cli.lib.sharding import MeshConfig, make_mesh
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReSoftmaxConfig


def _numpy_recall(cand_NxKp, exact_NxV, k):
  true_NxK = np.argsort(-exact_NxV, axis=-1, kind="stable")[:, :k]
  return np.mean([len(set(t) & set(c)) / k for t, c in zip(true_NxK, cand_NxKp)])


def test_eval_recall_equals_independent_recall(tiny_cfg):
  cfg = dataclasses.replace(tiny_cfg, hire_softmax=HiReSoftmaxConfig(
      approx=ApproxConfig(rank=2), k=8, k_prime=16))
  mesh = make_mesh(MeshConfig())
  graphdef, params = state.init_params(cfg, 0, mesh)
  rows_NxL = np.random.default_rng(0).integers(3, cfg.vocab_size, (8, 16)).astype(np.int32)
  found = metrics.mean_metrics(metrics.make_eval_fn(graphdef), params, rows_NxL, 4, 2, mesh)

  # Independent: numpy top-k of the exact logits and of the approximator's scores.
  model = state.bind(graphdef, params)
  inputs = np.pad(rows_NxL[:, :-1], ((0, 0), (1, 0)))
  h = model(inputs)[0]
  exact_NxV = np.asarray(model.logits(h)).reshape(-1, cfg.vocab_size)
  approx_NxV = np.asarray(model.head.approx_scores(h)).reshape(-1, cfg.vocab_size)
  cand_NxKp = np.argsort(-approx_NxV, axis=-1, kind="stable")[:, :16]
  for k in (1, 8):
    expected = _numpy_recall(cand_NxKp, exact_NxV, k)
    assert abs(found[f"recall/softmax@{k}"] - expected) < 1e-6
  assert 0.05 < found["recall/softmax@8"] < 0.99  # a random rank-2 approximator is approximate
  # The served loss with the tail from the approximator, by masks over V in float64.
  targets_N = rows_NxL.reshape(-1)
  logp = []
  for z, s, c, t in zip(exact_NxV.astype(np.float64), approx_NxV.astype(np.float64), cand_NxKp,
                        targets_N):
    in_c = np.zeros(cfg.vocab_size, bool)
    in_c[c] = True
    shift = np.log(np.exp(z[in_c]).sum()) - np.log(np.exp(s[in_c]).sum())
    rest = ~in_c
    rest[t] = False
    mass = np.exp(z[in_c]).sum() + np.exp(s[rest] + shift).sum() + (0 if in_c[t] else np.exp(z[t]))
    logp.append(z[t] - np.log(mass))
  assert abs(found["served_loss_approx_tail"] + np.mean(logp)) < 1e-4

  curve = recall_curve.softmax_recall_curve(graphdef, params, rows_NxL, 4, 2, [8, 16, 97], mesh,
                                            ks=(1, 8))
  at16 = curve["k_prime"].index(16)
  assert abs(curve["recall@8"][at16] - found["recall/softmax@8"]) < 1e-6
  assert curve["recall@8"][-1] == 1.0  # k' = V finds everything
  assert curve["recall@8"] == sorted(curve["recall@8"])  # more candidates never lose recall
