"""Downstream evaluation tasks as seqio Tasks (the data: `data/downstream/`, see its README).

Every task is multiple choice, scored zero-shot (or few-shot) by log-likelihood: each
(question, choice) pair is one seqio example with `inputs` = the prompt and `targets` = the
choice's text, plus `idx` (the question), `choice` and `label`. The model's score function returns,
per example, the summed and the per-token log-likelihood of the targets, and whether every target
token is the greedy one, for exact and for HiRE inference; the metric functions group the
examples of a question and pick the best choice. A `cloze` task has one choice, the held-out last
word, and is scored by greedy exact match (LAMBADA accuracy).
"""

import collections
import functools
import hashlib
import json
import pathlib

import numpy as np
import seqio
import tensorflow as tf

from hire_cli import errors, paths
from hire_cli.lib import tasks

PREFIX = "hire_ds_"
# Score dict keys: a suffix per inference path.
PATHS = ("", "_hire")


def downstream_dir() -> pathlib.Path:
  return paths.data_dir() / "downstream"


def manifest(data_dir: str = "") -> list[dict]:
  """The task list of `data_dir` (default `data/downstream`)."""
  root = pathlib.Path(data_dir or downstream_dir())
  path = root / "manifest.json"
  if not path.exists():
    raise errors.UserError(f"no downstream manifest at {path}; run `python "
                           "data/build_downstream.py` or set DOWNSTREAM_DIR to a folder with one")
  found = json.loads(path.read_text())["tasks"]
  for t in found:
    t["path"] = str(root / t["file"])
  return found


def read_questions(path: str, limit: int = 0) -> list[dict]:
  rows = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]
  return rows[:limit] if limit else rows


def few_shot_prefix(questions: list[dict], i: int, shots: int) -> str:
  """`shots` solved examples for question i: the ones after it in the file, never itself."""
  picked = [questions[(i + j) % len(questions)] for j in range(1, shots + 1)
            if (i + j) % len(questions) != i]
  return "".join(q["inputs"] + q["choices"][q["label"]] + "\n\n" for q in picked)


def examples(path: str, shots: int = 0, limit: int = 0):
  """One dict per (question, choice)."""
  questions = read_questions(path, limit)
  for i, q in enumerate(questions):
    prompt = few_shot_prefix(questions, i, shots) + q["inputs"] if shots else q["inputs"]
    for j, choice in enumerate(q["choices"]):
      yield {"inputs": prompt, "targets": choice, "idx": i, "choice": j, "label": q["label"]}


def left_truncate_inputs(dataset, sequence_length):
  """Keeps the last tokens of a long prompt (its end holds the question) and at most
  `sequence_length['targets']` target tokens."""
  n_in, n_t = sequence_length["inputs"], sequence_length["targets"]

  def fn(ex):
    return {**ex, "inputs": ex["inputs"][-n_in:], "targets": ex["targets"][:n_t]}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def postprocess(output, example=None, is_target=False):
  """Targets keep what the metrics group by; model outputs (scores) pass through."""
  if is_target:
    return {"idx": int(example["idx"]), "choice": int(example["choice"]),
            "label": int(example["label"])}
  return output


def _grouped(targets, scores):
  by_q = collections.defaultdict(list)
  for t, s in zip(targets, scores):
    by_q[t["idx"]].append((t["choice"], t["label"], s))
  return by_q.values()


def multiple_choice_accuracy(targets, scores) -> dict:
  """Accuracy of the best-scoring choice, by summed log-likelihood (`accuracy`) and by
  per-token log-likelihood (`accuracy_norm`), for exact and HiRE inference."""
  out = {}
  for suffix in PATHS:
    for name, key in (("accuracy", "ll"), ("accuracy_norm", "ll_norm")):
      right = [max(q, key=lambda c: c[2][key + suffix])[0] == q[0][1] for q in _grouped(
          targets, scores)]
      out[name + suffix] = 100.0 * float(np.mean(right))
  return out


def cloze_accuracy(targets, scores) -> dict:
  """Greedy exact match of the held-out word (every one of its tokens the argmax)."""
  return {"accuracy" + s: 100.0 * float(np.mean([sc["greedy" + s] for sc in scores]))
          for s in PATHS}


def task_name(name: str, shots: int, vocab_path: str) -> str:
  """`hire_ds_<task>_<shots>shot`; another vocabulary than the shipped one adds its hash."""
  base = f"{PREFIX}{name}_{shots}shot"
  if not vocab_path or vocab_path == str(paths.default_vocab_path()):
    return base
  return f"{base}__{hashlib.sha1(vocab_path.encode()).hexdigest()[:10]}"


def register(task: dict, *, shots: int = 0, limit: int = 0, vocab_path: str = "") -> str:
  """Registers (once) the seqio Task for one manifest entry; returns its name."""
  name = task_name(task["name"], shots, vocab_path)
  if limit:
    name = f"{name}_first{limit}"
  if pathlib.Path(task["path"]).parent.resolve() != downstream_dir().resolve():  # another copy
    name = f"{name}__{hashlib.sha1(task['path'].encode()).hexdigest()[:10]}"
  if name in seqio.TaskRegistry.names():
    return name
  sig = {"inputs": tf.TensorSpec((), tf.string), "targets": tf.TensorSpec((), tf.string),
         "idx": tf.TensorSpec((), tf.int32), "choice": tf.TensorSpec((), tf.int32),
         "label": tf.TensorSpec((), tf.int32)}

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_generator(
        functools.partial(examples, task["path"], shots, limit), output_signature=sig)

  vocab = tasks.vocabulary(vocab_path)
  metric = cloze_accuracy if task["kind"] == "cloze" else multiple_choice_accuracy
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=["validation"]),
      preprocessors=[seqio.preprocessors.tokenize, left_truncate_inputs],
      output_features={"inputs": seqio.Feature(vocab, add_eos=False),
                       "targets": seqio.Feature(vocab, add_eos=False)},
      postprocess_fn=postprocess,
      metric_fns=[metric])  # (targets, scores) arguments: seqio calls it with the scores
  return name


def record(data_dir: str = "") -> dict:
  """What the downstream numbers were measured on: the folder and a fingerprint of its files."""
  from hire_cli.lib import text_source
  root = pathlib.Path(data_dir or downstream_dir())
  files = [root / "manifest.json"] + [pathlib.Path(t["path"]) for t in manifest(data_dir)]
  sigs = [text_source.file_signature(str(f)) for f in files]
  return {"dir": str(root), "tasks": [t["name"] for t in manifest(data_dir)],
          "fingerprint": hashlib.sha1(json.dumps(sigs).encode()).hexdigest()}


def register_shipped() -> list[str]:
  """The shipped tasks, zero-shot, with the shipped vocabulary: registered on import (as in a
  T5X task module), so `seqio.get_mixture_or_task('hire_ds_cloze_0shot')` works after
  `import hire_cli.lib.downstream_tasks`. Nothing is registered when data/downstream is absent."""
  try:
    return [register(t) for t in manifest()]
  except errors.UserError:
    return []


register_shipped()
