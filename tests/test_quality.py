"""The results page of `make quality`: table rows and the aims, from saved eval metrics."""

import json

import pytest

from hire_cli.report import quality_page, reporting


def _metrics(loss, served, acc, acc_hire=None, recall_sm=None, recall_ffn=None):
  m = {"step": 10, "loss": loss, "perplexity": 2.0, "downstream/cloze/accuracy": acc,
       "downstream/mean/accuracy": acc}
  if served is not None:
    m["served_loss"] = served
    m["downstream/cloze/accuracy_hire"] = acc_hire
    m["downstream/mean/accuracy_hire"] = acc_hire
    m["top1_agreement"] = 0.9
  if recall_sm is not None:
    m["recall/softmax@32"] = recall_sm
  if recall_ffn is not None:
    m["recall/ffn@k"] = recall_ffn
  return m


RUNS = {"dense": _metrics(5.00, None, 40.0),
        "hire_softmax": _metrics(5.00, 5.02, 40.0, 40.0, recall_sm=0.995),
        "hire_ffn": _metrics(5.08, 5.10, 39.0, 38.0, recall_ffn=0.93),
        "hire": _metrics(5.03, 5.20, 40.5, 38.5, recall_sm=0.98, recall_ffn=0.96)}


def test_aims_say_met_or_missed_with_the_numbers():
  lines = quality_page.aims(RUNS)
  text = "\n".join(lines)
  assert "5.0300 vs 5.0000 (+0.60%) -> met" in text       # exact loss within 1%
  assert "within 1.5% of dense: 5.2000 vs 5.0000 (+4.00%) -> MISSED" in text  # served is not
  assert "38.50 vs 40.00 (-1.50 points) -> MISSED" in text
  assert "top-1 agreement >= 0.995: 0.9000 -> MISSED" in text
  assert "softmax recall@32 >= 0.99: 0.9800 -> MISSED" in text
  assert "mean FFN group recall >= 0.95: 0.9600 -> met" in text
  assert "informational" not in text
  tail = {**RUNS, "hire": {**RUNS["hire"], "served_loss_approx_tail": 5.1}}
  assert "tail estimated by the approximator: 5.1000 vs 5.0000 (+2.00%)" in "\n".join(
      quality_page.aims(tail))
  paired = [{"task": "mean", "run": "runs/x/hire", "n": 60, "diff": -1.5, "lo": -3.0, "hi": 0.0,
             "p": 0.06}, {"task": "mean", "run": "hire_ffn", "n": 60, "diff": 9, "lo": 9,
                          "hi": 9, "p": 1}]
  assert ("38.50 vs 40.00 (-1.50 points; paired on the same 60 questions: -1.50 [-3.00, +0.00], "
          "McNemar p = 0.060) -> MISSED") in "\n".join(quality_page.aims(RUNS, paired=paired))
  low = {**RUNS, "hire": {**RUNS["hire"], "served_loss": 4.9}}
  assert "4.9000 vs 5.0000 (-2.00%, below dense because its normaliser" in "\n".join(
      quality_page.aims(low))


def test_results_page_has_every_variant_and_the_curves(tmp_path):
  for v, m in RUNS.items():
    (tmp_path / v / "eval" / quality_page.EVAL_DATA).mkdir(parents=True)
    (tmp_path / v / "eval" / quality_page.EVAL_DATA / "metrics.json").write_text(json.dumps(m))
    for step, loss in ((5, 6.0), (10, m["loss"])):
      reporting.append_jsonl(tmp_path / v / "history.jsonl", {"step": step, "loss": loss})
  out = tmp_path / "docs" / "results.md"
  quality_page.write_results(tmp_path, out, size="tiny", steps=10, limit=3, command="make quality",
                        minutes=1.0)
  page = out.read_text()
  assert "| metric | dense | hire_softmax | hire_ffn | hire |" in page
  assert "| cloze accuracy % (exact) | 40.0000 | 40.0000 | 39.0000 | 40.5000 |" in page
  assert "| validation loss (exact model) | 5.0000 | 5.0000 | 5.0800 | 5.0300 |" in page
  assert "| mean FFN group recall | - | - | 0.9300 | 0.9600 |" in page
  assert (tmp_path / "docs" / "results_curves.png").stat().st_size > 1000


def test_accuracy_cells_carry_their_interval():
  m = {"downstream/mp_swap/accuracy": 80.0, "downstream/mp_swap/accuracy_lo": 75.1,
       "downstream/mp_swap/accuracy_hi": 84.2}
  assert quality_page.with_interval(m, "downstream/mp_swap/accuracy") == "80.00 [75.10, 84.20]"
  assert quality_page.with_interval({"x": 1.0}, "x") == 1.0
  assert quality_page.with_interval({}, "x") is None


def test_gap_rows_pair_the_periodic_evals_and_plot(tmp_path):
  dense = [{"step": 1, "loss": 9.0}, {"step": 100, "eval/loss": 6.0},
           {"step": 200, "eval/loss": 5.0}]
  hire = [{"step": 100, "eval/loss": 6.3, "eval/served_loss": 6.4, "eval/recall/ffn@k": 0.99,
           "eval/top1_agreement": 0.97}, {"step": 200, "eval/loss": 5.05,
                                          "eval/served_loss": 5.1, "eval/recall/ffn@k": 0.995,
                                          "eval/served_loss_approx_tail": 5.2,
                                          "eval/top1_agreement": 0.99},
          {"step": 300, "eval/loss": 4.9}]  # dense has no eval at 300: not a row
  rows = quality_page.gap_rows(dense, hire)
  assert [r["step"] for r in rows] == [100, 200]
  assert rows[0]["exact loss gap %"] == pytest.approx(5.0)
  assert rows[1]["served loss gap %"] == pytest.approx(2.0)
  assert rows[1]["served approx-tail loss gap %"] == pytest.approx(4.0)
  for run, hist in (("dense", dense), ("hire", hire)):
    (tmp_path / "runs" / run).mkdir(parents=True)
    for r in hist:
      reporting.append_jsonl(tmp_path / "runs" / run / "history.jsonl", r)
  lines = quality_page.gap_markdown(rows, tmp_path / "gap.png", size="tiny")
  assert ("| 200 | 5.0000 | 5.0500 | 1.0000 | 5.1000 | 2.0000 | 0.9950 | 0.9900 | 5.2000 | 4.0000 |"
          in lines)
  assert "| 100 | 6.0000 | 6.3000 | 5.0000 | 6.4000 | 6.6667 | 0.9900 | 0.9700 | - | - |" in lines
  assert "|" + " ---: |" * 10 in lines  # one separator cell per column
  assert (tmp_path / "gap.png").stat().st_size > 1000


def test_a_missed_aim_says_how_it_moved_in_training():
  rows = [{"step": 100, "exact loss gap %": 3.0}, {"step": 200, "exact loss gap %": 2.0},
          {"step": 300, "exact loss gap %": 1.5}]
  text = quality_page.trend(rows, "exact loss gap %", 1.0, higher_is_better=False)
  # slope over the last three: -0.75 per 100 steps; 1.5 -> 1.0 takes 67 more steps
  assert text.startswith("over training 3 at step 100 -> 1.5 at step 300, -0.75 per 100 steps")
  assert text.endswith("reached near step 367")
  rising = [dict(r, step=400 - r["step"]) for r in rows][::-1]  # 1.5, 2.0, 3.0
  assert "not moving" in quality_page.trend(rising, "exact loss gap %", 1.0,
                                            higher_is_better=False)
  assert quality_page.trend(rows[:1], "exact loss gap %", 1.0, higher_is_better=False) is None
  metrics = {"dense": {"loss": 5.0}, "hire": {"loss": 5.1}}
  (line,) = quality_page.aims(metrics, gap=rows)
  assert "+2.00%) -> MISSED (over training 3 at step 100" in line
  (line,) = quality_page.aims({"dense": {"loss": 5.0}, "hire": {"loss": 5.02}}, gap=rows)
  assert line.endswith("-> met")  # a met aim carries no trend


def test_results_page_embeds_the_gap_and_links_the_other_pages(tmp_path):
  for v, m in RUNS.items():
    (tmp_path / v / "eval" / quality_page.EVAL_DATA).mkdir(parents=True)
    (tmp_path / v / "eval" / quality_page.EVAL_DATA / "metrics.json").write_text(json.dumps(m))
    for step in (5, 10):
      loss = m["loss"] + (10 - step) * (0.1 if v == "hire" else 0.05)
      reporting.append_jsonl(tmp_path / v / "history.jsonl",
                             {"step": step, "loss": loss, "eval/loss": loss})
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "results_long.md").write_text("# longer\n")
  (tmp_path / "docs" / "results_long_gap.png").write_bytes(b"png")
  out = tmp_path / "docs" / "results.md"
  quality_page.write_results(tmp_path, out, size="tiny", steps=10, limit=3, command="make quality",
                             minutes=1.0)
  page = out.read_text()
  assert "## The dense-vs-HiRE gap over training" in page
  assert "![gap over training](results_gap.png)" in page
  assert (tmp_path / "docs" / "results_gap.png").stat().st_size > 1000
  assert "Other results pages: [results_long.md](results_long.md)." in page
  assert "![gap over training, results_long.md](results_long_gap.png)" in page


def test_pages_only_rewrites_the_page_from_the_runs_and_their_record(tmp_path):
  """`--pages_only` runs nothing (no training: the roots hold only metrics) and takes the command
  and minutes from what made the runs, not from itself; without that record it refuses."""
  import subprocess
  import sys
  root = tmp_path / "runs"
  for v in ("dense", "hire"):
    (root / v / "eval" / quality_page.EVAL_DATA).mkdir(parents=True)
    (root / v / "eval" / quality_page.EVAL_DATA / "metrics.json").write_text(json.dumps(RUNS[v]))
  (root / "comparison.json").write_text(json.dumps({"paired": []}))
  args = [sys.executable, "-m", "hire_cli.runs.quality", "--pages_only", "--variants=dense,hire",
          f"--root={root}", f"--out={tmp_path / 'results.md'}"]
  refused = subprocess.run(args, capture_output=True, text=True)
  assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
      "quality: --pages_only found no"), refused.stderr
  assert not (tmp_path / "results.md").exists()
  (root / "quality_run.json").write_text(json.dumps({"command": "make quality", "minutes": 42.0}))
  subprocess.run(args, check=True, capture_output=True)
  page = (tmp_path / "results.md").read_text()
  assert "Command: `make quality` (42 min)" in page and "| metric | dense | hire |" in page


def test_pages_only_labels_the_page_with_the_recorded_settings(tmp_path):
  """A page rewritten without --steps still says the steps the runs were made with."""
  import subprocess
  import sys
  root = tmp_path / "runs"
  for v in ("dense", "hire"):
    (root / v / "eval" / quality_page.EVAL_DATA).mkdir(parents=True)
    (root / v / "eval" / quality_page.EVAL_DATA / "metrics.json").write_text(json.dumps(RUNS[v]))
  (root / "comparison.json").write_text(json.dumps({"paired": []}))
  (root / "quality_run.json").write_text(json.dumps({
      "command": "make quality-long", "minutes": 1.0, "settings": {
          "variants": ["dense", "hire"], "size": "small", "steps": 600, "limit": 60,
          "pairs": 500}}))
  subprocess.run([sys.executable, "-m", "hire_cli.runs.quality", "--pages_only",
                  f"--root={root}", f"--out={tmp_path / 'r.md'}"], check=True, capture_output=True)
  assert (tmp_path / "r.md").read_text().startswith("# Quality: dense vs hire (small, 600 steps)")
