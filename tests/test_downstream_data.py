"""The shipped downstream evaluation data (data/downstream/, built by data/build_downstream.py)."""

import gzip
import json
import pathlib

import pytest

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
DOWNSTREAM = DATA / "downstream"
CORPUS = DATA / "corpus"


def _manifest():
  with open(DOWNSTREAM / "manifest.json", encoding="utf-8") as f:
    return json.load(f)


def _records(task):
  with open(DOWNSTREAM / task["file"], encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _split_texts(split):
  with gzip.open(CORPUS / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
    return [" ".join(json.loads(line)["text"].split()) for line in f]


TASKS = _manifest()["tasks"]


@pytest.fixture(scope="module")
def train_text():
  return "\n".join(_split_texts("train"))


def test_manifest_lists_the_tasks():
  names = [t["name"] for t in TASKS]
  assert len(names) == len(set(names))
  assert {"sentiment_rt", "cloze", "mp_swap", "mp_replace", "mp_agreement"} <= set(names)
  assert sum(n.startswith("bb_") for n in names) == 5
  for t in TASKS:
    assert t["kind"] in ("multiple_choice", "cloze", "minimal_pair")
    assert t["file"] == f"{t['name']}.jsonl"
    assert t["source"] and t["license"]
    if t["name"].startswith("bb_"):
      assert "canary GUID" in t["canary"]
    else:
      assert t["canary"] is None
  total = sum((DOWNSTREAM / t["file"]).stat().st_size for t in TASKS)
  assert total < 3_000_000


def _well_formed(task):
  records = _records(task)
  assert len(records) == task["n"] > 0, (len(records), task["n"])
  assert [r["id"] for r in records] == list(range(task["n"])), "ids are not 0..n-1"
  for r in records:
    assert set(r) == {"id", "inputs", "choices", "label"}, r
    assert isinstance(r["inputs"], str) and r["inputs"].strip(), r
    assert all(isinstance(c, str) and c.startswith(" ") and c.strip() for c in r["choices"]), r
    assert isinstance(r["label"], int) and 0 <= r["label"] < len(r["choices"]), r
    if task["kind"] == "minimal_pair":
      assert len(r["choices"]) == 2 and r["choices"][0] != r["choices"][1], r
    elif task["kind"] == "multiple_choice":
      assert 2 <= len(r["choices"]) <= 5, r
      assert len(set(r["choices"])) == len(r["choices"]), r
    else:
      assert len(r["choices"]) == 1 and r["label"] == 0, r
  # (timedial asks about the same dialogue with different choice sets)
  distinct = len({(r["inputs"], tuple(r["choices"])) for r in records})
  assert distinct > 0.9 * len(records), f"{distinct} distinct of {len(records)}"


def test_every_task_file_is_well_formed():
  bad = []
  for task in TASKS:
    try:
      _well_formed(task)
    except AssertionError as e:
      bad.append(f"{task['file']}: {str(e)[:300]}")
  assert not bad, "\n".join(bad)


def test_sentiment_is_balanced():
  task = next(t for t in TASKS if t["name"] == "sentiment_rt")
  records = _records(task)
  assert all(r["choices"] == [" positive", " negative"] for r in records)
  labels = [r["label"] for r in records]
  assert labels.count(0) == labels.count(1) == len(records) // 2
  assert all(r["inputs"].startswith("Review: ") and r["inputs"].endswith("\nSentiment:")
             for r in records)


def test_cloze_items_are_last_words_of_validation_sentences():
  task = next(t for t in TASKS if t["name"] == "cloze")
  validation = "\n".join(_split_texts("validation"))
  for r in _records(task):
    word = r["choices"][0][1:]
    assert word.isascii() and word.isalpha() and len(word) >= 3
    assert not r["inputs"].endswith(" ")
    assert 40 <= len(r["inputs"].split()) + 1 <= 80
    passage = r["inputs"] + " " + word
    # the passage is held-out text, followed by the sentence's final punctuation
    assert any(passage + p in validation for p in ".!?"), passage[-80:]


def test_cloze_passages_do_not_occur_in_train(train_text):
  task = next(t for t in TASKS if t["name"] == "cloze")
  for r in _records(task)[::10]:  # a sample: the builder checks every passage's ending
    passage = r["inputs"] + r["choices"][0]
    assert passage not in train_text
    assert " ".join(passage.split()[-10:]) not in train_text, passage[-80:]


def test_bigbench_canary_not_in_train(train_text):
  canaries = {t["canary"] for t in TASKS if t["canary"]}
  assert canaries
  for canary in canaries:
    assert canary.split()[-1] not in train_text  # the GUID


@pytest.mark.parametrize("kind", ["swap", "replace", "agreement"])
def test_minimal_pairs_are_held_out_sentences_with_one_defect(kind):
  """The right choice continues a sentence of the test split (never train); the wrong one is the
  same words with the kind's defect; the right answer's position is balanced."""
  task = next(t for t in TASKS if t["name"] == f"mp_{kind}")
  records = _records(task)
  test = "\n".join(_split_texts("test"))
  labels = [r["label"] for r in records]
  assert 0.4 < sum(labels) / len(labels) < 0.6
  for r in records[::25]:
    good, bad = r["choices"][r["label"]], r["choices"][1 - r["label"]]
    assert r["inputs"] + good in test, (r["inputs"] + good)[-80:]
    g, b = good.split(), bad.split()
    assert len(g) == len(b) and g != b
    diff = [i for i in range(len(g)) if g[i] != b[i]]
    if kind == "swap":
      assert diff == [0, 1] and (g[0], g[1]) == (b[1], b[0])
    else:
      assert diff == [0]
    if kind == "agreement":
      assert {g[0], b[0]} in ({"is", "are"}, {"was", "were"}, {"has", "have"}, {"does", "do"})
