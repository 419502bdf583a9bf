"""`hire eval --compare RUN RUN ...`: the saved eval metrics of several runs side by side."""

import json
import pathlib

import numpy as np

from hire_cli import errors
from hire_cli.evals import stats
from hire_cli.report import eval_report, reporting


def compare_runs(runs: list[str], out: str = "", data: str = "") -> dict:
  """Reads RUN/eval/<data>/metrics.json of each run (written by `hire eval`), prints a table with
  a column per run and the difference to the first, writes OUT.md and OUT.json (default
  <parent of the first run>/comparison). `data` names the evaluation (the folder under eval/)
  when a run has several; the table says what data each column was measured on."""
  if len(runs) < 2:
    raise errors.UserError(f"--compare needs at least two runs, got {runs}; e.g. "
                           "`hire eval --compare runs/small_dense runs/small_hire`")
  paths = [_metrics_path(run, data) for run in runs]
  metrics = [json.loads(p.read_text()) for p in paths]
  table = eval_report.comparison(runs, metrics)
  table["paired"] = paired_downstream(runs, paths)
  base = pathlib.Path(out) if out else pathlib.Path(runs[0]).resolve().parent / "comparison"
  base.parent.mkdir(parents=True, exist_ok=True)
  base.with_suffix(".md").write_text(eval_report.comparison_markdown(table))
  reporting.write_json(base.with_suffix(".json"), table)
  reporting.say(eval_report.comparison_console(table))
  reporting.say("data: " + "; ".join(f"{r}: {d}" for r, d in zip(runs, table["data"])))
  if len(set(table["data"])) > 1:
    reporting.say("warning: the runs were evaluated on different data; their losses are not "
                  "comparable")
  reporting.say(f"Wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}")
  return table


def _metrics_path(run: str, data: str) -> pathlib.Path:
  found = eval_report.find_metrics(run)
  if data:
    if data not in found:
      raise errors.UserError(f"{run} has no evaluation on {data!r} (eval/{data}/metrics.json); it "
                             f"has {sorted(found) or 'none'}")
    return found[data]
  if not found:
    raise errors.UserError(f"{pathlib.Path(run) / 'eval'}/<data>/metrics.json not found; evaluate "
                           f"that run first: `hire eval --gin_file=<its experiment> "
                           f"--gin.MODEL_DIR={run}`")
  if len(found) > 1:
    raise errors.UserError(f"{run} was evaluated on several datasets ({', '.join(sorted(found))}); "
                           "pick one with --data=NAME")
  return next(iter(found.values()))


def paired_downstream(runs: list[str], paths: list[pathlib.Path]) -> list[dict]:
  """Each later run's served accuracy (HiRE inference where it has it) minus the first run's on
  the same questions, per downstream task: the difference in points, its 95% interval and the
  exact McNemar p-value (downstream_items.json next to each run's metrics.json, written by `hire
  eval`). Tasks whose question counts differ (another DOWNSTREAM_LIMIT) are skipped, not
  compared unpaired; so are runs whose downstream files differ (their fingerprints). The
  minimal-pair tasks (mp_*) also get one pooled row, `minimal_pairs`, as `hire eval` pools them."""
  items, prints = [], []
  for metrics_path in paths:
    path = metrics_path.parent / "downstream_items.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    items.append(found.get("tasks", {}))
    prints.append((found.get("data") or {}).get("fingerprint"))
  out = []
  for run, found, fp in zip(runs[1:], items[1:], prints[1:]):
    if fp != prints[0]:
      continue
    pooled = ["", ""]
    for task, by_path in found.items():
      base = items[0].get(task, {}).get("exact")
      mine = by_path.get("hire", by_path["exact"])
      if base is None or len(base) != len(mine):
        continue
      path = "hire" if "hire" in by_path else "exact"
      out.append({"task": task, "run": run, "path": path, **_paired(base, mine)})
      if task.startswith("mp_"):
        pooled = [pooled[0] + base, pooled[1] + mine]
    if pooled[0]:
      out.append({"task": "minimal_pairs", "run": run, "path": path, **_paired(*pooled)})
  return out


def _paired(base: str, mine: str) -> dict:
  """`stats.paired` of two per-question outcome strings ('1' right, '0' wrong)."""
  return stats.paired(np.array([c == "1" for c in base]), np.array([c == "1" for c in mine]))
