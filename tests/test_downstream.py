"""Downstream scoring through seqio.Evaluator on hand-made tasks and rigged models."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hire_cli.evals import downstream
from hire_cli.lib import downstream_tasks, state, tasks
from hire_cli.lib.sharding import MeshConfig, make_mesh
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig

CFG = ModelConfig(vocab_size=32000, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=64,
                  max_len=48)
R4 = ApproxConfig(rank=4)


def _write_task(tmp_path, questions, kind="multiple_choice", name="two_q"):
  (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
  manifest = {"tasks": [{"name": name, "kind": kind, "file": f"{name}.jsonl",
                         "n": len(questions), "source": "test", "license": "test",
                         "canary": None}]}
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  return str(tmp_path)


# The answer is " yes" both times, once as choice 0 and once as choice 1.
TWO_QUESTIONS = [
    {"id": 0, "inputs": "Q: Is the sky blue?\nA:", "choices": [" yes", " no"], "label": 0},
    {"id": 1, "inputs": "Q: Is water wet?\nA:", "choices": [" no", " yes"], "label": 1},
]


def rigged_params(cfg, prefer_ids, seed=0):
  """A model whose every position puts the highest logits on `prefer_ids`: all tokens embed to
  the same vector, the block adds nothing, and only the preferred rows of W align with it."""
  _, params = state.init_params(cfg, seed, make_mesh(MeshConfig()))
  params = jax.tree.map(np.asarray, params)
  e_D = np.ones(cfg.d_model, np.float32)
  params["embed"] = np.tile(e_D, (cfg.vocab_size, 1))
  for block in params["blocks"].values():
    block["attn"]["w_out"] = np.zeros_like(block["attn"]["w_out"])
    block["ffn"]["w_out"] = np.zeros_like(block["ffn"]["w_out"])
  w_VxD = np.zeros((cfg.vocab_size, cfg.d_model), np.float32)
  w_VxD[list(prefer_ids)] = 5.0 * e_D
  params["head"]["w"] = w_VxD
  return params


def _ids(text):
  return set(tasks.vocabulary().encode(text)) - set(tasks.vocabulary().encode(" "))


@pytest.mark.parametrize("prefer,expected", [(" yes", 100.0), (" no", 0.0)])
def test_rigged_model_scores_known_answers(tmp_path, prefer, expected):
  data_dir = _write_task(tmp_path, TWO_QUESTIONS)
  graphdef = state.abstract_model(CFG)[0]
  params = rigged_params(CFG, _ids(prefer))
  found = downstream.evaluate_downstream(graphdef, params, CFG, data_dir=data_dir,
                                         batch_size=4, targets_len=8)
  assert found["downstream/two_q/accuracy"] == expected
  assert found["downstream/two_q/accuracy_norm"] == expected
  assert found["downstream/mean/accuracy"] == expected
  assert "downstream/two_q/accuracy_hire" not in found  # a dense model has no HiRE path


def test_cloze_is_greedy_exact_match(tmp_path):
  questions = [{"id": 0, "inputs": "The cat sat on the", "choices": [" mat"], "label": 0},
               {"id": 1, "inputs": "The dog sat on the", "choices": [" log"], "label": 0}]
  data_dir = _write_task(tmp_path, questions, kind="cloze", name="cz")
  graphdef = state.abstract_model(CFG)[0]
  found = downstream.evaluate_downstream(graphdef, rigged_params(CFG, _ids(" mat")), CFG,
                                         data_dir=data_dir, batch_size=2, targets_len=8,
                                         limit=2)
  assert found["downstream/cz/accuracy"] == 50.0


@pytest.mark.slow
def test_hire_path_is_reported_and_can_differ(tmp_path):
  """A HiRE-Softmax model with k' = V scores exactly what the model computes; with a tiny k'
  the partition function covers only the candidates and the target, so a target the exact
  model finds unlikely scores far higher: the HiRE path is really taken."""
  data_dir = _write_task(tmp_path, TWO_QUESTIONS)
  full = ModelConfig(**{**CFG.__dict__, "hire_softmax": HiReSoftmaxConfig(approx=R4, k=1, k_prime=32000)})
  tiny = ModelConfig(**{**CFG.__dict__, "hire_softmax": HiReSoftmaxConfig(approx=R4, k=1, k_prime=1)})
  for cfg in (full, tiny):
    graphdef = state.abstract_model(cfg)[0]
    params = rigged_params(cfg, _ids(" yes"))
    score = downstream.make_score_fn(graphdef)
    yes = sorted(_ids(" yes"))[0]  # a token the rigged model likes: far above the floor
    inputs = jnp.asarray([[0, 5, yes, yes]], jnp.int32)
    targets = jnp.asarray([[5, yes, yes, yes]], jnp.int32)
    out = score(params, inputs, targets, jnp.asarray([[1, 1, 1, 1]]))
    if cfg is full:
      np.testing.assert_allclose(out["_hire"]["ll"], out[""]["ll"], rtol=1e-4, atol=1e-4)
      found = downstream.evaluate_downstream(graphdef, params, cfg, data_dir=data_dir,
                                             batch_size=4, targets_len=8)
      assert found["downstream/two_q/accuracy_hire"] == found["downstream/two_q/accuracy"]
      assert found["downstream/mean/accuracy_hire"] == 100.0
    else:  # token 5 is far down the exact softmax, but normalised over 1 candidate + itself
      assert float(out["_hire"]["ll"][0]) > float(out[""]["ll"][0]) + 1.0


def test_ffn_only_model_has_hire_path(tmp_path):
  data_dir = _write_task(tmp_path, TWO_QUESTIONS)
  cfg = ModelConfig(**{**CFG.__dict__, "hire_ffn": HiReFfnConfig(approx=R4, group_size=8)})
  graphdef, params = state.init_params(cfg, 0, make_mesh(MeshConfig()))
  found = downstream.evaluate_downstream(graphdef, params, cfg, data_dir=data_dir,
                                         batch_size=4, targets_len=8)
  assert {"downstream/two_q/accuracy_hire", "downstream/mean/accuracy_hire"} <= set(found)


def test_few_shot_prompt_never_contains_its_own_answer():
  qs = [{"inputs": f"Q{i}:", "choices": [f" a{i}", f" b{i}"], "label": i % 2} for i in range(4)]
  prefix = downstream_tasks.few_shot_prefix(qs, 1, 2)
  assert prefix == "Q2: a2\n\nQ3: b3\n\n"
  assert "Q1" not in prefix


def test_target_positions_put_targets_first_and_pad_with_unweighted():
  w_BxL = np.array([[0, 0, 1, 1, 0, 1], [1, 0, 0, 0, 0, 0]])
  pos_BxT = downstream.target_positions(w_BxL, multiple=4)
  assert pos_BxT.shape == (2, 4)
  np.testing.assert_array_equal(pos_BxT[0, :3], [2, 3, 5])
  assert pos_BxT[1, 0] == 0 and not w_BxL[1, pos_BxT[1, 1:]].any()


def test_scoring_at_target_positions_equals_scoring_everywhere():
  """Gathering the target positions before the heads changes nothing but the cost: the same
  log-likelihoods and greedy matches as the heads applied at all L positions, both paths."""
  cfg = ModelConfig(**{**CFG.__dict__, "hire_softmax": HiReSoftmaxConfig(approx=R4, k=1, k_prime=8),
                       "hire_ffn": HiReFfnConfig(approx=R4, group_size=8)})
  graphdef, params = state.init_params(cfg, 0, make_mesh(MeshConfig()))
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(3, 500, (3, 12)), jnp.int32)
  targets = jnp.asarray(rng.integers(3, 500, (3, 12)), jnp.int32)
  weights = np.zeros((3, 12), np.int32)
  weights[0, 9:] = 1
  weights[1, 4:6] = 1
  weights[2, [2, 7, 11]] = 1
  score = downstream.make_score_fn(graphdef)
  everywhere = score(params, inputs, targets, jnp.asarray(weights))
  gathered = score(params, inputs, targets, jnp.asarray(weights),
                   downstream.target_positions(weights, multiple=4))
  for path in ("", "_hire"):
    np.testing.assert_allclose(gathered[path]["ll"], everywhere[path]["ll"], rtol=1e-5)
    np.testing.assert_array_equal(gathered[path]["greedy"], everywhere[path]["greedy"])
    np.testing.assert_array_equal(gathered[path]["n"], [3, 2, 3])


def test_minimal_pairs_error_bars_and_items(tmp_path):
  """Minimal pairs ride along with the other tasks but are pooled on their own and limited by
  `pairs_limit`; every accuracy has a Wilson interval; the per-question outcomes handed back
  are the ones behind the reported accuracy; a HiRE model gets the paired HiRE-minus-exact."""
  pairs = [{"id": i, "inputs": "So it was", "choices": [" yes indeed", " no indeed"][::s],
            "label": 0 if s == 1 else 1} for i, s in enumerate([1, -1, 1, 1, -1, 1])]
  pairs[2]["label"] = 1  # one pair the rigged model gets wrong
  _write_task(tmp_path, TWO_QUESTIONS)
  (tmp_path / "mp_x.jsonl").write_text("".join(json.dumps(q) + "\n" for q in pairs))
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  manifest["tasks"].append({"name": "mp_x", "kind": "minimal_pair", "file": "mp_x.jsonl",
                            "n": 6, "source": "test", "license": "test", "canary": None})
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  cfg = ModelConfig(**{**CFG.__dict__, "hire_softmax": HiReSoftmaxConfig(approx=R4, k=1,
                                                                          k_prime=32000)})
  graphdef = state.abstract_model(cfg)[0]
  items = {}
  found = downstream.evaluate_downstream(graphdef, rigged_params(cfg, _ids(" yes")), cfg,
                                         data_dir=str(tmp_path), batch_size=4, targets_len=8,
                                         limit=1, pairs_limit=5, items=items)
  assert found["downstream/mp_x/accuracy"] == 80.0  # 4 of the first 5 pairs
  assert items["mp_x"] == {"exact": "11011", "hire": "11011"}
  assert items["two_q"] == {"exact": "1", "hire": "1"}  # `limit` applies to the other tasks
  assert found["downstream/mean/accuracy"] == 100.0  # the mean leaves the pairs out
  assert found["downstream/minimal_pairs/accuracy"] == 80.0
  lo, hi = found["downstream/mp_x/accuracy_lo"], found["downstream/mp_x/accuracy_hi"]
  assert 30 < lo < 80 < hi < 100
  assert found["downstream/mp_x/hire_minus_exact"] == 0.0  # k' = V: HiRE scores exactly
  assert found["downstream/mp_x/hire_minus_exact_p"] == 1.0


def test_a_bos_model_scores_each_choice_after_bos(tmp_path, monkeypatch):
  """The feature converter puts 0 first; a BOS model's rows start with its bos_id instead (each
  choice is scored given BOS and the prompt), and the rest of each row is left as it was."""
  seen = []

  def fake_make_score_fn(graphdef):
    def score(params, inputs_BxL, targets_BxL, weights_BxL, pos_BxT):
      seen.append((np.array(inputs_BxL), np.array(targets_BxL)))
      b = len(inputs_BxL)
      r = {"ll": np.zeros(b), "greedy": np.zeros(b, bool), "n": np.ones(b)}
      return {"": r, "_hire": r}
    return score

  monkeypatch.setattr(downstream, "make_score_fn", fake_make_score_fn)
  data_dir = _write_task(tmp_path, TWO_QUESTIONS)
  for bos_id, first in ((-1, 0), (2, 2)):
    cfg = ModelConfig(**{**CFG.__dict__, "bos_id": bos_id})
    downstream.evaluate_downstream(None, None, cfg, data_dir=data_dir, batch_size=4,
                                   targets_len=8)
    inputs_BxL, targets_BxL = seen[-1]
    assert (inputs_BxL[:, 0] == first).all()
    np.testing.assert_array_equal(inputs_BxL[:, 1:], targets_BxL[:, :-1])
