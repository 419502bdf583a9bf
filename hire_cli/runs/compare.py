"""`hire eval --compare RUN RUN ...`: the saved eval metrics of several runs side by side."""

import json
import pathlib

import numpy as np

from hire_cli import errors
from hire_cli.evals import stats
from hire_cli.report import eval_report, reporting


def compare_runs(runs: list[str], out: str = "") -> dict:
  """Reads RUN/eval/metrics.json of each run (written by `hire eval`), prints a table with a
  column per run and the difference to the first, writes OUT.md and OUT.json (default
  <parent of the first run>/comparison)."""
  if len(runs) < 2:
    raise errors.UserError(f"--compare needs at least two runs, got {runs}; e.g. "
                           "`hire eval --compare runs/small_dense runs/small_hire`")
  metrics = []
  for run in runs:
    path = pathlib.Path(run) / "eval" / "metrics.json"
    if not path.exists():
      raise errors.UserError(f"{path} not found; evaluate that run first: `hire eval "
                             f"--gin_file=<its experiment> --gin.MODEL_DIR={run}`")
    metrics.append(json.loads(path.read_text()))
  table = eval_report.comparison(runs, metrics)
  table["paired"] = paired_downstream(runs)
  base = pathlib.Path(out) if out else pathlib.Path(runs[0]).resolve().parent / "comparison"
  base.parent.mkdir(parents=True, exist_ok=True)
  base.with_suffix(".md").write_text(eval_report.comparison_markdown(table))
  reporting.write_json(base.with_suffix(".json"), table)
  reporting.say(eval_report.comparison_console(table))
  reporting.say(f"Wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}")
  return table


def paired_downstream(runs: list[str]) -> list[dict]:
  """Each later run's served accuracy (HiRE inference where it has it) minus the first run's on
  the same questions, per downstream task: the difference in points, its 95% interval and the
  exact McNemar p-value (RUN/eval/downstream_items.json, written by `hire eval`). Tasks whose
  question counts differ (another DOWNSTREAM_LIMIT) are skipped, not compared unpaired."""
  items = []
  for run in runs:
    path = pathlib.Path(run) / "eval" / "downstream_items.json"
    items.append(json.loads(path.read_text())["tasks"] if path.exists() else {})
  out = []
  for run, found in zip(runs[1:], items[1:]):
    for task, paths in found.items():
      base = items[0].get(task, {}).get("exact")
      mine = paths.get("hire", paths["exact"])
      if base is None or len(base) != len(mine):
        continue
      r = stats.paired(np.array([c == "1" for c in base]), np.array([c == "1" for c in mine]))
      out.append({"task": task, "run": run, "path": "hire" if "hire" in paths else "exact", **r})
  return out
