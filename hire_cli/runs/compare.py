"""`hire eval --compare RUN RUN ...`: the saved eval metrics of several runs side by side."""

import json
import pathlib

from hire_cli import errors
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
  base = pathlib.Path(out) if out else pathlib.Path(runs[0]).resolve().parent / "comparison"
  base.parent.mkdir(parents=True, exist_ok=True)
  base.with_suffix(".md").write_text(eval_report.comparison_markdown(table))
  reporting.write_json(base.with_suffix(".json"), table)
  reporting.say(eval_report.comparison_console(table))
  reporting.say(f"Wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}")
  return table
