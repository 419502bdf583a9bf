"""`hire compare`'s paired section: the same questions, or no pairing at all."""

import json

import pytest

from hire_cli.runs import compare


def _run(tmp_path, name, fingerprint, exact, hire=None):
  d = tmp_path / name / "eval" / "hire_corpus_lm"
  d.mkdir(parents=True)
  tasks = {"mp_swap": {"exact": exact, **({"hire": hire} if hire else {})}}
  (d / "downstream_items.json").write_text(json.dumps(
      {"step": 10, "data": {"fingerprint": fingerprint}, "tasks": tasks}))
  return d / "metrics.json"


def test_paired_only_on_the_same_question_files(tmp_path):
  base = _run(tmp_path, "dense", "abc", "1100110011")
  same = _run(tmp_path, "hire", "abc", "1100110011", hire="1100110001")
  other = _run(tmp_path, "hire_other_data", "def", "1100110011", hire="1100110001")
  row, pooled = compare.paired_downstream(["dense", "hire", "hire_other_data"],
                                          [base, same, other])
  assert row["run"] == "hire" and row["path"] == "hire" and row["n"] == 10
  assert row["diff"] == pytest.approx(-10.0)  # one question lost, on the served path
  assert pooled["task"] == "minimal_pairs" and pooled["n"] == 10  # one mp_ task: the same


def test_minimal_pairs_pool_every_kind(tmp_path):
  d = tmp_path / "dense" / "eval" / "x"
  h = tmp_path / "hire" / "eval" / "x"
  for where, swap, agree in ((d, "1111", "00"), (h, "1110", "11")):
    where.mkdir(parents=True)
    tasks = {"mp_swap": {"exact": swap, "hire": swap},
             "mp_agreement": {"exact": agree, "hire": agree},
             "cloze": {"exact": "10", "hire": "00"}}
    (where / "downstream_items.json").write_text(json.dumps({"data": {"fingerprint": "f"},
                                                            "tasks": tasks}))
  rows = {r["task"]: r for r in compare.paired_downstream(
      ["dense", "hire"], [d / "metrics.json", h / "metrics.json"])}
  assert rows["minimal_pairs"]["n"] == 6  # the cloze is not a minimal pair
  assert rows["minimal_pairs"]["diff"] == pytest.approx(100 * (5 - 4) / 6)
