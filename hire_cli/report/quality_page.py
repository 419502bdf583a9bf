"""The results pages of `make quality`: the four-way table with its aims, and the dense-vs-HiRE
gap over training (`--gap`)."""

import datetime
import json
import os
import pathlib
import platform

from hire_cli.report import eval_report, plots, reporting

VARIANTS = ("dense", "hire_softmax", "hire_ffn", "hire")
# The quality runs train and evaluate on the shipped corpus: `hire eval` writes eval/<task>/.
EVAL_DATA = "hire_corpus_lm"


def metrics_of(root: pathlib.Path, variants=VARIANTS) -> dict:
  return {v: json.loads((root / v / "eval" / EVAL_DATA / "metrics.json").read_text())
          for v in variants}


def with_interval(m: dict, key: str):
  """'62.50 [58.10, 66.70]' when `key` has a 95% interval (`key_lo`, `key_hi`), else the value."""
  if key not in m:
    return None
  if f"{key}_lo" not in m:
    return m[key]
  return f"{m[key]:.2f} [{m[key + '_lo']:.2f}, {m[key + '_hi']:.2f}]"


def results_rows(metrics: dict, latency: dict) -> list[tuple[str, list]]:
  """(label, [value per variant]) rows of the results table."""
  variants = list(metrics)

  def col(key, v):
    return metrics[v].get(key)

  rows = [("validation loss (exact model)", [col("loss", v) for v in variants]),
          ("served loss (HiRE inference, Z over candidates + target)",
           [col("served_loss", v) for v in variants]),
          ("served loss, tail from the approximator (Z over all V)",
           [col("served_loss_approx_tail", v) for v in variants]),
          ("candidate miss rate (target outside the k')",
           [col("candidate_miss_rate", v) for v in variants]),
          ("sampling loss (candidates only, 1e-6 floor)",
           [col("served_sampling_loss", v) for v in variants]),
          ("perplexity (exact)", [col("perplexity", v) for v in variants])]
  tasks = sorted({k.split("/")[1] for m in metrics.values() for k in m
                  if k.startswith("downstream/") and k.split("/")[1] not in
                  ("mean", "minimal_pairs")})
  pairs = [t for t in tasks if t.startswith("mp_")]
  for t in [t for t in tasks if t not in pairs] + ["mean"] + pairs + ["minimal_pairs"]:
    for label, key in (("exact", "accuracy"), ("HiRE", "accuracy_hire")):
      rows.append((f"{t} accuracy % ({label})",
                   [with_interval(metrics[v], f"downstream/{t}/{key}") for v in variants]))
  for k in (1, 8, 32):
    rows.append((f"softmax recall@{k}", [col(f"recall/softmax@{k}", v) for v in variants]))
  rows.append(("mean FFN group recall", [col("recall/ffn@k", v) for v in variants]))
  rows.append(("top-1 agreement (HiRE vs exact)", [col("top1_agreement", v) for v in variants]))
  cases = {c["variant"]: c for c in latency.get("cases", []) if c["batch"] == 1}
  for label, key in (("decode ms/token, batch 1", "ms_per_token"), ("speedup vs dense", "speedup"),
                     ("roofline speedup (bytes)", "roofline_speedup")):
    rows.append((label, [cases.get(v, {}).get(key) for v in variants]))
  return rows


def trend(rows: list[dict], column: str, aim: float, *, higher_is_better: bool) -> str | None:
  """How `column` of the gap table moved over training and, if its slope over the last three
  periodic evaluations points at `aim`, near which step that slope would reach it."""
  pts = [(r["step"], r[column]) for r in rows if r.get(column) is not None]
  if len(pts) < 2:
    return None
  tail = pts[-3:]
  mean_s = sum(s for s, _ in tail) / len(tail)
  mean_v = sum(v for _, v in tail) / len(tail)
  slope = (sum((s - mean_s) * (v - mean_v) for s, v in tail) /
           sum((s - mean_s) ** 2 for s, _ in tail))
  (s0, v0), (s1, v1) = pts[0], pts[-1]
  text = (f"over training {v0:.4g} at step {s0} -> {v1:.4g} at step {s1}, "
          f"{100 * slope:+.3g} per 100 steps over the last {len(tail)} evaluations")
  if slope != 0 and (slope > 0) == higher_is_better:
    reached = s1 + (aim - v1) / slope
    return text + f"; if that slope held, the aim would be reached near step {reached:.0f}"
  return text + "; not moving toward the aim"


def aims(metrics: dict, free_running: float | None = None, gap: list[dict] = (),
         paired: list[dict] = ()) -> list[str]:
  """The aims of the fidelity issue, each with the measured value and met / missed by how much;
  a missed aim with a series in the gap table (`gap_rows`) also says how it moved in training."""
  d, h = metrics["dense"], metrics["hire"]
  lines = []

  def check(name, ok, detail, series=None):
    line = f"- {name}: {detail} -> {'met' if ok else 'MISSED'}"
    if not ok and series:
      column, aim, higher_is_better = series
      moved = trend(list(gap), column, aim, higher_is_better=higher_is_better)
      line += f" ({moved})" if moved else ""
    lines.append(line)

  for label, key, tol, col in (("exact", "loss", 0.01, "exact loss gap %"),
                               ("served", "served_loss", 0.015, "served loss gap %")):
    if key in h:
      rel = (h[key] - d["loss"]) / d["loss"]
      below = (", below dense because its normaliser leaves out the mass outside the "
               "candidates: read the approx-tail line" if key == "served_loss" and rel < 0 else "")
      check(f"HiRE {label} validation loss within {100 * tol:g}% of dense", rel <= tol,
            f"{h[key]:.4f} vs {d['loss']:.4f} ({100 * rel:+.2f}%{below})",
            (col, 100 * tol, False))
  if "served_loss_approx_tail" in h:  # not an aim of the issue: the stricter estimate, beside it
    rel = (h["served_loss_approx_tail"] - d["loss"]) / d["loss"]
    lines.append(f"- (informational) HiRE served loss with the tail estimated by the approximator: "
                 f"{h['served_loss_approx_tail']:.4f} vs {d['loss']:.4f} ({100 * rel:+.2f}%)")
  for name, key, floor, col in (
      ("softmax recall@32", "recall/softmax@32", 0.99, "softmax recall@32"),
      ("mean FFN group recall", "recall/ffn@k", 0.95, "FFN group recall"),
      ("teacher-forced top-1 agreement", "top1_agreement", 0.995, "top-1 agreement")):
    if key in h:
      check(f"{name} >= {floor}", h[key] >= floor, f"{h[key]:.4f}",
            (col, floor, True))
  if free_running is not None:
    check("free-running greedy agreement >= 0.99 (128 validation prompts)", free_running >= 0.99,
          f"{free_running:.4f}")
  for t in ("minimal_pairs", "mean"):
    key = f"downstream/{t}/accuracy"
    if key + "_hire" in h and key in d:
      gap_points = h[key + "_hire"] - d[key]
      pair = next((r for r in paired if r["task"] == t and pathlib.Path(r["run"]).name == "hire"),
                  None)
      shown = (f"; paired on the same {pair['n']} questions: {pair['diff']:+.2f} "
               f"[{pair['lo']:+.2f}, {pair['hi']:+.2f}], McNemar p = {pair['p']:.3f}"
               if pair else "")
      check(f"HiRE {t} accuracy (HiRE inference) within 1 point of dense", gap_points >= -1.0,
            f"{h[key + '_hire']:.2f} vs {d[key]:.2f} ({gap_points:+.2f} points{shown})")
  return lines


def _machine(latency: dict) -> str:
  return (f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
          f"{latency.get('device', 'unknown device')}.")


def write_results(root: pathlib.Path, out: pathlib.Path, *, size: str, steps: int, limit: int,
                  command: str, minutes: float, variants=VARIANTS, pairs: int = 0,
                  paired: list[dict] = (), setup: str = "") -> None:
  """The results page; `setup` says how the columns differ from their experiment files."""
  metrics = metrics_of(root, variants)
  latency_path = root / "hire" / "bench" / "latency.json"
  latency = json.loads(latency_path.read_text()) if latency_path.exists() else {}
  out.parent.mkdir(parents=True, exist_ok=True)
  curves = out.with_name(out.stem + "_curves.png")
  plots.training_curves({v: reporting.read_jsonl(root / v / "history.jsonl") for v in variants},
                        curves)
  free = root / "hire" / "generate" / "compare.json"
  free_running = json.loads(free.read_text()).get("passages", {}) if free.exists() else {}
  lines = [
      f"# Quality: {' vs '.join(variants)} ({size}, {steps} steps)", "",
      f"Command: `{command}` ({minutes:.0f} min). Date: {datetime.date.today().isoformat()}. "
      + _machine(latency),
      f"Each variant: `configs/experiments/{size}_<variant>.gin`{setup}, {steps} steps, same "
      f"seed and data order, checkpoint at step {metrics['dense'].get('step')}. Downstream: first "
      f"{limit} questions of each shipped task and the first {pairs or 'all'} pairs of each "
      "minimal-pair task (mp_*), zero-shot log-likelihood; accuracies with their 95% Wilson "
      "interval. Latency: `hire bench-latency` of all of them on the HiRE run's weights.",
      "", "| metric | " + " | ".join(variants) + " |", "| --- |" + " ---: |" * len(variants)]
  for label, values in results_rows(metrics, latency):
    lines.append(f"| {label} | " + " | ".join(eval_report.fmt(x) for x in values) + " |")
  lines += ["", "Served loss: the target's log-likelihood under what HiRE serves, normalised over "
            "the k' candidates plus the target (the target's row is gathered when it is not a "
            "candidate), as downstream scoring does; the candidate miss rate says how often the "
            "target was not a candidate. It leaves out the mass outside the candidates, so it "
            "is at most the exact loss of the same logits and reads low when the miss rate is "
            "high. The row below it adds that mass as the approximator estimates it (its scores "
            "of the other ids, put on the logits' scale on the candidates): a perfect "
            "approximator makes it the exact loss of the served logits. The sampling loss is "
            "the softmax over the candidates only with a 1e-6 uniform floor, what sampling draws "
            "from: a missed target costs ~17 nats there, so it is not a quality metric."]
  lines += [""] + eval_report.paired_markdown(list(paired))
  if free_running:
    lines += [f"Free-running greedy agreement of HiRE with its exact model: "
              f"{free_running['agreement']:.4f} over {free_running['prompts']} prompts (`hire "
              "generate --compare`, 48 tokens each; per step after the exact prefix: "
              f"{free_running['stepwise_agreement']:.4f}).", ""]
  gap = gap_rows(reporting.read_jsonl(root / "dense" / "history.jsonl"),
                 reporting.read_jsonl(root / "hire" / "history.jsonl"))
  lines += [f"## Aims (at step {steps})", ""] + aims(metrics, free_running.get("agreement"), gap,
                                                    list(paired))
  if gap:
    lines += [""] + gap_markdown(gap, out.with_name(out.stem + "_gap.png"), size=size)
  comparison = root / "comparison.md"
  extra = ""
  if comparison.exists():  # the runs folder is not in git: keep a copy next to the page
    copy = out.with_name(out.stem + "_comparison.md")
    copy.write_text(comparison.read_text())
    extra = f"; every metric side by side: [{copy.name}]({copy.name})"
  lines += ["", f"![training curves]({curves.name})", "",
            f"Per-run reports: `{root}/<variant>/eval/{EVAL_DATA}/report.md`{extra}."]
  others = sorted(p.name for p in out.parent.glob(f"{out.stem.split('_')[0]}*.md")
                  if p != out and not p.stem.endswith(("_comparison", "_gap")))
  if others:
    lines += ["", "Other results pages: " + ", ".join(f"[{n}]({n})" for n in others) + "."]
    for name in others:  # their gap over training too, so that one page shows every trend
      png = out.with_name(pathlib.Path(name).stem + "_gap.png")
      if png.exists():
        lines += ["", f"The gap over training in [{name}]({name}):", "",
                  f"![gap over training, {name}]({png.name})"]
  out.write_text("\n".join(lines) + "\n")


# HiRE's periodic-eval metrics in the gap table: (column, history.jsonl key).
GAP_KEYS = (("softmax recall@32", "eval/recall/softmax@32"),
            ("FFN group recall", "eval/recall/ffn@k"),
            ("top-1 agreement", "eval/top1_agreement"))


def gap_rows(dense: list[dict], hire: list[dict]) -> list[dict]:
  """One row per periodic evaluation both runs made: the exact- and served-loss gap of HiRE to
  dense (in % of dense) and HiRE's recalls and agreement at that step."""
  d = {r["step"]: r for r in dense if "eval/loss" in r}
  rows = []
  for r in sorted((r for r in hire if "eval/loss" in r), key=lambda r: r["step"]):
    if r["step"] not in d:
      continue
    base = d[r["step"]]["eval/loss"]
    row = {"step": r["step"], "dense loss": base, "hire exact loss": r["eval/loss"],
           "exact loss gap %": 100 * (r["eval/loss"] - base) / base}
    for key, name in (("eval/served_loss", "served"),
                      ("eval/served_loss_approx_tail", "served approx-tail")):
      if key in r:
        row[f"hire {name} loss"] = r[key]
        row[f"{name} loss gap %"] = 100 * (r[key] - base) / base
    for label, key in GAP_KEYS:
      if key in r:
        row[label] = r[key]
    rows.append(row)
  return rows


def gap_markdown(rows: list[dict], png: pathlib.Path, *, size: str) -> list[str]:
  """The gap-over-training section: its table and its plot (written to `png`)."""
  plots.gap_over_training(rows, png)
  cols = list(dict.fromkeys(k for r in rows for k in r))  # every column any row has
  lines = ["## The dense-vs-HiRE gap over training", "",
           "Dense and the default combined HiRE "
           f"(`configs/experiments/{size}_{{dense,hire}}.gin`), same seed and data order; each row "
           "is one periodic evaluation of both during "
           "training (exact and served loss, recalls, teacher-forced agreement on the same "
           "validation batches: fewer than `hire eval` uses, so the losses differ from the table "
           "above).", "",
           "| " + " | ".join(cols) + " |", "|" + " ---: |" * len(cols)]
  for r in rows:
    lines.append("| " + " | ".join(eval_report.fmt(r.get(c)) for c in cols) + " |")
  return lines + ["", f"![gap over training]({png.name})"]
