"""Markdown for `hire eval`: one run's report, and `--compare` tables of several runs."""

import pathlib

# (section, metric-key prefixes) in report order.
FAMILIES = (
    ("Pretraining loss", ("loss", "perplexity", "served_loss", "served_perplexity",
                          "served_loss_approx_tail", "served_sampling_loss", "candidate_miss_rate",
                          "unigram_loss")),
    ("Downstream accuracy (%)", ("downstream/",)),
    ("Top-k recall and agreement", ("recall/", "top1_agreement")),
    ("Latency (batch 1)", ("latency/",)),
)


def family_of(key: str) -> str | None:
  for name, prefixes in FAMILIES:
    if any(key.startswith(p) for p in prefixes):
      return name
  return None


def fmt(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
  return str(value)


def display_rows(metrics: dict) -> list[tuple[str, str]]:
  """(key, text) per metric, a value and its 95% interval (`key_lo`, `key_hi`) in one row:
  '62.5000 [58.1000, 66.7000]'."""
  rows = []
  for k, v in metrics.items():
    base = k[:-3] if k.endswith(("_lo", "_hi")) else None
    if base and f"{base}_lo" in metrics and f"{base}_hi" in metrics and base in metrics:
      continue
    text = fmt(v)
    if f"{k}_lo" in metrics and f"{k}_hi" in metrics:
      text += f" [{fmt(metrics[k + '_lo'])}, {fmt(metrics[k + '_hi'])}]"
    rows.append((k, text))
  return rows


def data_label(metrics: dict) -> str:
  """`task (fingerprint 1a2b3c4d)` of the validation data a metrics.json was measured on."""
  rec = (metrics.get("data") or {}).get("validation")
  if not rec:
    return "unrecorded"
  return f"{rec['task']} (fingerprint {rec['fingerprint'][:8]})"


def data_lines(metrics: dict) -> list[str]:
  lines = ["## Data", ""]
  for role, rec in (metrics.get("data") or {}).items():
    if "task" not in rec:  # the downstream tasks
      lines.append(f"- {role}: `{rec.get('dir')}` ({len(rec.get('tasks', []))} tasks), "
                   f"fingerprint `{rec.get('fingerprint', '')[:16]}`")
      continue
    files, n = rec.get("files") or [], rec.get("num_files", len(rec.get("files") or []))
    shown = ", ".join(f"`{f}`" for f in files[:3]) + (f" and {n - 3} more" if n > 3 else "")
    lines.append(f"- {role}: task `{rec['task']}`, split `{rec['split']}`, fingerprint "
                 f"`{rec['fingerprint'][:16]}`" + (f", files: {shown}" if files else ""))
  return lines + [""]


def find_metrics(run: str) -> dict[str, pathlib.Path]:
  """{data name: metrics.json} of every evaluation of `run` (`eval/<data>/metrics.json`; an
  evaluation from before data had its own folder, `eval/metrics.json`, is named '' and read
  only when there is no other)."""
  root = pathlib.Path(run) / "eval"
  found = {p.parent.name: p for p in sorted(root.glob("*/metrics.json"))}
  if not found and (root / "metrics.json").is_file():
    found[""] = root / "metrics.json"
  return found


def write(path: pathlib.Path, model_dir: str, metrics: dict, curve: dict | None,
          pngs: list[str]) -> None:
  lines = [f"# Evaluation of `{model_dir}` at step {metrics.get('step')}", ""]
  lines += data_lines(metrics)
  lines += ["Accuracies are in %, with their 95% interval in brackets (Wilson; for "
            "`hire_minus_exact`, HiRE's served accuracy minus the exact model's on the same "
            "questions, the paired interval; `_p` is its exact McNemar p-value).", ""]
  for name, _ in FAMILIES:
    rows = [(k, v) for k, v in display_rows(metrics) if family_of(k) == name]
    if not rows:
      continue
    lines += [f"## {name}", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| `{k}` | {v} |" for k, v in rows]
    lines.append("")
  if curve:
    ks = [k for k in curve if k.startswith("recall@")]
    lines += ["## HiRE-Softmax recall against k'", "",
              "| k' | " + " | ".join(ks) + " |", "| ---: |" + " ---: |" * len(ks)]
    for i, kp in enumerate(curve["k_prime"]):
      lines.append(f"| {kp} | " + " | ".join(f"{curve[k][i]:.4f}" for k in ks) + " |")
    lines.append("")
  lines += [f"![{p}]({p})" for p in pngs]
  path.write_text("\n".join(lines) + "\n")


def comparison(runs: list[str], metrics: list[dict]) -> dict:
  """{"runs": [...], "rows": [{"metric", "family", "values": [...], "diff": [... vs run 0]}]}."""
  keys = []
  for m in metrics:
    keys += [k for k in m if k not in keys and family_of(k)]
  order = {name: i for i, (name, _) in enumerate(FAMILIES)}
  keys.sort(key=lambda k: order[family_of(k)])
  rows = []
  for k in keys:
    values = [m.get(k) for m in metrics]
    base = values[0]
    diff = [None if v is None or base is None or not isinstance(v, (int, float)) else v - base
            for v in values[1:]]
    rows.append({"metric": k, "family": family_of(k), "values": values, "diff": diff})
  return {"runs": runs, "steps": [m.get("step") for m in metrics],
          "data": [data_label(m) for m in metrics], "rows": rows}


def _cells(table: dict, row: dict) -> list[str]:
  return [fmt(v) for v in row["values"]] + [
      "-" if d is None else f"{d:+.4f}" for d in row["diff"]]


def _header(table: dict) -> list[str]:
  names = [pathlib.Path(r).name or r for r in table["runs"]]
  return ["metric"] + names + [f"{n} - {names[0]}" for n in names[1:]]


def comparison_markdown(table: dict) -> str:
  head = _header(table)
  lines = ["# hire eval --compare", "",
           "Runs: " + ", ".join(f"`{r}` (step {s}, data {d})" for r, s, d in zip(
               table["runs"], table["steps"], table.get("data", ["?"] * len(table["runs"])))),
           ""]
  if len(set(table.get("data", []))) > 1:
    lines += ["**The runs were evaluated on different data**: their losses are not comparable.",
              ""]
  lines += paired_markdown(table.get("paired", []))
  family = None
  for row in table["rows"]:
    if row["family"] != family:
      family = row["family"]
      lines += ["", f"## {family}", "", "| " + " | ".join(head) + " |",
                "| --- |" + " ---: |" * (len(head) - 1)]
    lines.append(f"| `{row['metric']}` | " + " | ".join(_cells(table, row)) + " |")
  return "\n".join(lines) + "\n"


def comparison_console(table: dict) -> str:
  head = _header(table)
  rows = [[r["metric"]] + _cells(table, r) for r in table["rows"]]
  widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
  line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths)))
  out = [line(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
  return "\n".join(out + [line(r) for r in rows])


def paired_markdown(paired: list[dict]) -> list[str]:
  """The paired downstream comparisons of `hire compare` as a markdown section."""
  if not paired:
    return []
  first = "the first run"
  lines = ["## Downstream, paired on the same questions", "",
           f"Each run's served accuracy (HiRE inference for HiRE runs) minus {first}'s exact "
           "accuracy, in points, with the 95% interval of the paired difference and the exact "
           "McNemar p-value.", "", "| task | run | n | difference | 95% interval | p |",
           "| --- | --- | ---: | ---: | --- | ---: |"]
  for r in paired:
    lines.append(f"| {r['task']} | `{pathlib.Path(r['run']).name}` ({r['path']}) | {r['n']} | "
                 f"{r['diff']:+.2f} | [{r['lo']:+.2f}, {r['hi']:+.2f}] | {r['p']:.3f} |")
  return lines + [""]
