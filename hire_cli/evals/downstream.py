"""Downstream accuracy: the tasks of `downstream_tasks.py` driven by `seqio.Evaluator`, scored by
log-likelihood with the exact model and with HiRE inference in the same pass."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from absl import logging

from hire_cli.evals import served_metrics, stats
from hire_cli.lib import downstream_tasks, state
from hire_cli.nn import served
from hire_cli.nn.config import ModelConfig
from hire_cli.report import reporting


def target_positions(weights_BxL, multiple: int = 8) -> np.ndarray:
  """pos_BxT: each row's target positions (weight > 0) first, in order, then padding positions.
  T is the largest count in the batch rounded up to `multiple`, so a handful of shapes compile;
  the padding points at weight-0 positions and so scores nothing."""
  w_BxL = np.asarray(weights_BxL) > 0
  t = min(w_BxL.shape[1], -(-max(int(w_BxL.sum(1).max()), 1) // multiple) * multiple)
  return np.argsort(~w_BxL, axis=1, kind="stable")[:, :t].astype(np.int32)


@functools.lru_cache(maxsize=8)
def make_score_fn(graphdef):
  """Jitted per-batch scores of the target tokens: for each path ('' exact, '_hire' served) the
  summed log-likelihood ll_B, the token count n_B and greedy_B (every target token the argmax).

  Both heads run only at `pos_BxT` (`target_positions`; default all L): a choice has a few
  tokens and the prompt none, so the V-wide logits and HiRE's candidate search are not spent
  on the prompt."""

  @jax.jit
  def score(params, inputs_BxL, targets_BxL, weights_BxL, pos_BxT=None):
    model = state.bind(graphdef, params)
    cfg = model.cfg
    if pos_BxT is None:
      pos_BxT = jnp.broadcast_to(jnp.arange(inputs_BxL.shape[1]), inputs_BxL.shape)
    at = lambda a_BxL: jnp.take_along_axis(a_BxL, pos_BxT, axis=1)
    at_h = lambda h_BxLxD: jnp.take_along_axis(h_BxLxD, pos_BxT[..., None], axis=1)
    targets_BxT = at(targets_BxL)
    w_BxT = at(weights_BxL).astype(jnp.float32)
    n_B = jnp.sum(w_BxT, -1)

    def summarise(logp_BxT, top1_BxT):
      hit_BxT = jnp.where(w_BxT > 0, top1_BxT == targets_BxT, True)
      return jnp.sum(logp_BxT * w_BxT, -1), jnp.all(hit_BxT, -1)

    h_BxTxD = at_h(served.hidden(model, inputs_BxL, hire=False)[0])
    logits_BxTxV = model.logits(h_BxTxD).astype(jnp.float32)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, -1)
    logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], -1)[..., 0]
    out = {"": summarise(logp_BxT, jnp.argmax(logits_BxTxV, -1))}
    if not cfg.has_hire:
      out["_hire"] = out[""]
    else:
      s = served.forward(served.bind(graphdef, params), inputs_BxL, pos_BxT)
      if s["cand"] is not None:
        slogp_BxT = served_metrics.scoring_log_probs(s["logits"], s["cand"], targets_BxT)
      else:
        slogp_BxT = jnp.take_along_axis(jax.nn.log_softmax(s["logits"], -1),
                                        targets_BxT[..., None], -1)[..., 0]
      out["_hire"] = summarise(slogp_BxT, s["top1"])
    return {s: {"ll": ll_B, "greedy": g_B, "n": n_B} for s, (ll_B, g_B) in out.items()}

  return score


def seqio_score_fn(graphdef, params, batch_size: int, progress=None, first: int = 0):
  """The `score_fn` seqio.Evaluator calls: [(index, scores dict)] for a cached dataset of
  (index, PrefixLM features). Batches are padded to `batch_size` so one compilation serves all.
  `first` replaces the 0 the feature converter puts first (a BOS model's bos_id): each choice
  is then scored given BOS and the prompt, as the model was trained."""
  score = make_score_fn(graphdef)

  def fn(dataset):
    results = []
    for index_B, feats in dataset.batch(batch_size).as_numpy_iterator():
      b = len(index_B)
      pad = lambda a: np.concatenate([a, np.repeat(a[-1:], batch_size - b, 0)]) if b < batch_size \
          else a
      weights = pad(feats["decoder_loss_weights"])
      inputs_BxL = pad(feats["decoder_input_tokens"]).copy()
      inputs_BxL[:, 0] = first  # unpacked rows: column 0 is each row's start
      out = jax.device_get(score(params, inputs_BxL, pad(feats["decoder_target_tokens"]),
                                 weights, target_positions(weights)))
      for i in range(b):
        row = {}
        for s in downstream_tasks.PATHS:
          n = max(float(out[s]["n"][i]), 1.0)
          row.update({"ll" + s: float(out[s]["ll"][i]), "ll_norm" + s: float(out[s]["ll"][i]) / n,
                      "greedy" + s: bool(out[s]["greedy"][i])})
        results.append((int(index_B[i]), row))
      if progress:
        progress(b)
    return results

  return fn


class _Progress:
  """Progress lines with ETA over all (question, choice) examples of all tasks."""

  def __init__(self, total: int):
    self.total, self.done, self.next_report = total, 0, 0
    self.bar = reporting.Progress(0, total)

  def __call__(self, n: int):
    self.done += n
    if self.done >= self.next_report or self.done == self.total:
      reporting.say("  downstream " + self.bar.line(self.done))
      self.next_report = self.done + max(self.total // 10, 1)


def evaluate_downstream(graphdef, params, cfg: ModelConfig, *, data_dir: str = "",
                        shots: int = 0, limit: int = 0, pairs_limit: int = 0,
                        batch_size: int = 16, seq_len: int = 128, targets_len: int = 16,
                        vocab_path: str = "", items: dict | None = None) -> dict:
  """Accuracy (%) per task with its 95% interval, exact and (for HiRE models) served by HiRE,
  with the paired HiRE-minus-exact difference; the mean over the multiple-choice and cloze
  tasks, and the pooled accuracy of the minimal pairs (`pairs_limit` pairs per kind, 0 = all):
  {"downstream/<task>/accuracy[_norm][_hire][_lo|_hi]": ..., "downstream/mean/accuracy": ...}.
  `items`, when given, receives each task's per-question outcomes ('1' right, '0' wrong) per
  path, for paired comparisons across runs (`hire compare`)."""
  found = downstream_tasks.manifest(data_dir)
  inputs_len = min(seq_len, cfg.max_len) - targets_len  # long prompts keep their end
  lengths = {"inputs": inputs_len, "targets": targets_len}
  plan = [(t, 0 if _is_pair(t) else shots, pairs_limit if _is_pair(t) else limit) for t in found]
  names = [downstream_tasks.register(t, shots=s, limit=n, vocab_path=vocab_path)
           for t, s, n in plan]
  total = sum(sum(len(q["choices"]) for q in downstream_tasks.read_questions(t["path"], n))
              for t, _, n in plan)
  progress = _Progress(total)
  score_fn = seqio_score_fn(graphdef, params, batch_size, progress, cfg.first_input)
  has_hire = cfg.has_hire
  suffixes = ("", "_hire") if has_hire else ("",)
  metrics, outcomes = {}, {}
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # seqio warns per task that the lengths exceed the data
  try:
    for (task, s, n), name in zip(plan, names):
      rows = []
      metrics.update(_evaluate_task(task, name, lengths, _recording(score_fn, rows), has_hire))
      outcomes[task["name"]] = _outcomes(task, rows, s, n)
  finally:
    logging.set_verbosity(verbosity)
  for t, right in outcomes.items():
    metrics.update(_error_bars(t, right, suffixes, metrics))
    if items is not None:
      items[t] = {("hire" if s else "exact"): "".join("01"[int(r)] for r in right[s])
                  for s in suffixes}
  pairs = [t["name"] for t in found if _is_pair(t)]
  for suffix in suffixes:
    per_task = [metrics[f"downstream/{t['name']}/accuracy{suffix}"] for t in found
                if not _is_pair(t)]
    if per_task:
      metrics[f"downstream/mean/accuracy{suffix}"] = float(np.mean(per_task))
    if pairs:
      pooled = np.concatenate([outcomes[t][suffix] for t in pairs])
      metrics[f"downstream/minimal_pairs/accuracy{suffix}"] = 100.0 * float(pooled.mean())
      lo, hi = stats.wilson(pooled)
      metrics.update({f"downstream/minimal_pairs/accuracy{suffix}_lo": lo,
                      f"downstream/minimal_pairs/accuracy{suffix}_hi": hi})
  if pairs and has_hire:
    metrics.update(_paired("minimal_pairs", np.concatenate([outcomes[t][""] for t in pairs]),
                           np.concatenate([outcomes[t]["_hire"] for t in pairs])))
  return metrics


def _is_pair(task: dict) -> bool:
  return task["kind"] == "minimal_pair"


def _recording(score_fn, rows: list):
  def fn(dataset):
    found = score_fn(dataset)
    rows.extend(found)
    return found
  return fn


def _outcomes(task: dict, rows: list, shots: int, limit: int) -> dict:
  """{path suffix: right_Q} per question, from the scores seqio was handed (in example order)."""
  scores = [sc for _, sc in sorted(rows, key=lambda r: r[0])]
  if task["kind"] == "cloze":
    return {s: np.array([sc["greedy" + s] for sc in scores]) for s in downstream_tasks.PATHS}
  by_q = collections.defaultdict(list)
  for ex, sc in zip(downstream_tasks.examples(task["path"], shots, limit), scores, strict=True):
    by_q[ex["idx"]].append((ex["choice"], ex["label"], sc))
  return {s: np.array([max(q, key=lambda c: c[2]["ll" + s])[0] == q[0][1]
                       for q in by_q.values()]) for s in downstream_tasks.PATHS}


def _error_bars(task: str, right: dict, suffixes, metrics: dict) -> dict:
  out = {f"downstream/{task}/n": float(right[""].size)}
  for s in suffixes:
    acc = metrics[f"downstream/{task}/accuracy{s}"]
    if abs(100.0 * right[s].mean() - acc) > 1e-6:  # the outcomes must be what seqio scored
      raise RuntimeError(f"internal: {task} outcomes give {100 * right[s].mean():.4f}% but "
                         f"seqio's metric {acc:.4f}%; the example order changed")
    lo, hi = stats.wilson(right[s])
    out.update({f"downstream/{task}/accuracy{s}_lo": lo, f"downstream/{task}/accuracy{s}_hi": hi})
  if "_hire" in suffixes:
    out.update(_paired(task, right[""], right["_hire"]))
  return out


def _paired(task: str, exact_Q, hire_Q) -> dict:
  """HiRE-served minus exact accuracy on the same questions (points), 95% interval, McNemar p."""
  r = stats.paired(exact_Q, hire_Q)
  return {f"downstream/{task}/hire_minus_exact": r["diff"],
          f"downstream/{task}/hire_minus_exact_lo": r["lo"],
          f"downstream/{task}/hire_minus_exact_hi": r["hi"],
          f"downstream/{task}/hire_minus_exact_p": r["p"]}


def _evaluate_task(task: dict, name: str, lengths: dict, score_fn, has_hire: bool) -> dict:
  """One task through seqio.Evaluator: {"downstream/<task>/<metric>": value}."""
  evaluator = seqio.Evaluator(name, seqio.PrefixLMFeatureConverter(pack=False),
                              eval_split="validation", sequence_length=lengths,
                              async_compute_metrics=False)
  result, _ = evaluator.evaluate(compute_metrics=True, score_fn=score_fn)
  metrics = {}
  for key, value in result.result()[name].items():
    if key.endswith("_hire") and not has_hire:
      continue
    metrics[f"downstream/{task['name']}/{key}"] = float(getattr(value, "value", value))
  return metrics
