"""Progress lines with ETA (`reporting.track`) and the phase lines of `make quality` and `make
demo` (`phases.Phases`)."""

import re

import pytest

from hire_cli.report import phases, reporting


def test_track_prints_progress_with_an_eta_then_the_total(capsys, monkeypatch):
  clock = iter(range(0, 1000, 5))  # each item reads the clock twice: 10 s per item
  monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
  assert list(reporting.track(range(6), "validation", every=15.0)) == list(range(6))
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("  validation [1/6  17%]") and "ETA ?" in lines[0], lines
  # after the first (compiling) item the rate is measured: 0.1 items/s, so 3 left take 30 s
  assert any(re.search(r"\[3/6  50%\] .*0\.10/s \| ETA 0m30s", line) for line in lines), lines
  assert lines[-1].startswith("  validation: 6 done in"), lines
  assert len(lines) == 4, "one line per 15 s (items 1, 3, 5), then the total"


def test_track_counts_the_first_item_when_it_does_not_compile(capsys, monkeypatch):
  clock = iter(range(0, 1000, 5))
  monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
  list(reporting.track(range(2), "latency", first_compiles=False))
  assert "ETA ?" not in capsys.readouterr().out.splitlines()[0]


def test_phases_eta_uses_the_phases_of_the_same_kind():
  p = phases.Phases("quality", ["train", "train", "eval", "eval", "bench"], retry="make quality")
  assert p.eta() != p.eta()  # unknown (nan) before any phase ran
  p.took = [100.0]
  assert p.eta() == 100 + 100 + 100 + 100  # eval and bench: the mean of what ran
  p.took = [100.0, 120.0, 10.0]
  assert p.eta() == pytest.approx(10 + 230 / 3)  # eval like the eval; bench: mean of all
  p.took = [100.0, None]  # a skipped train phase says nothing about how long one takes
  assert p.eta() == 100 + 100 + 100


def test_phases_eta_scales_the_kinds_not_run_yet_by_their_weights():
  p = phases.Phases("demo", ["train", "eval", "bench"], retry="make demo",
                    weights={"train": 1.0, "eval": 0.5, "bench": 0.25})
  p.took = [400.0]
  assert p.eta() == 200 + 100
