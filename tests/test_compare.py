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
  (row,) = compare.paired_downstream(["dense", "hire", "hire_other_data"], [base, same, other])
  assert row["run"] == "hire" and row["path"] == "hire" and row["n"] == 10
  assert row["diff"] == pytest.approx(-10.0)  # one question lost, on the served path
