"""PNG plots for eval reports and the quality comparison (matplotlib, headless)."""

import pathlib
import re


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def ffn_layer_recall(metrics: dict) -> list[tuple[int, float]]:
  """[(layer, recall)] from `recall/ffn/layer_<i>@k` metrics, by layer."""
  found = []
  for key, value in metrics.items():
    m = re.fullmatch(r"recall/ffn/layer_(\d+)@k", key)
    if m:
      found.append((int(m.group(1)), value))
  return sorted(found)


def eval_plots(metrics: dict, curve: dict | None, out_dir: pathlib.Path) -> list[str]:
  """Writes softmax_recall_vs_kprime.png (HiRE-Softmax) and ffn_recall_per_layer.png (HiRE-FFN);
  returns the file names written."""
  plt = _pyplot()
  written = []
  if curve:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, ys in curve.items():
      if key.startswith("recall@"):
        ax.plot(curve["k_prime"], ys, marker="o", label=key)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k' (candidates rescored exactly)")
    ax.set_ylabel("recall of the exact top-k")
    ax.set_title("HiRE-Softmax: recall against k'")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "softmax_recall_vs_kprime.png", dpi=100)
    plt.close(fig)
    written.append("softmax_recall_vs_kprime.png")
  layers = ffn_layer_recall(metrics)
  if layers:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([f"layer {i}" for i, _ in layers], [r for _, r in layers])
    ax.axhline(0.95, color="gray", linestyle="--", label="aim 0.95")
    ax.set_ylim(0, 1)
    ax.set_ylabel("group recall@k")
    ax.set_title("HiRE-FFN: recall of the predicted groups per layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "ffn_recall_per_layer.png", dpi=100)
    plt.close(fig)
    written.append("ffn_recall_per_layer.png")
  return written


def training_curves(histories: dict[str, list[dict]], path: pathlib.Path) -> None:
  """Train loss (left) and validation loss (right) against step, one line per run."""
  plt = _pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for name, rows in histories.items():
    train = _last_per_step(rows, "loss")
    val = _last_per_step(rows, "eval/loss")
    if train:
      ax1.plot(*zip(*train), label=name)
    if val:
      ax2.plot(*zip(*val), marker="o", label=name)
  _finish(plt, fig, path, ((ax1, "train loss", "nats/token"),
                           (ax2, "validation loss", "nats/token")))


def _finish(plt, fig, path: pathlib.Path, axes) -> None:
  """Labels each (axis, title, y unit) against step, with a grid and a legend; saves `fig`."""
  for ax, title, unit in axes:
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _last_per_step(rows: list[dict], key: str) -> list[tuple[int, float]]:
  by_step = {r["step"]: r[key] for r in rows if key in r}  # a resumed run rewrites steps
  return sorted(by_step.items())


def gap_over_training(rows: list[dict], path: pathlib.Path) -> None:
  """HiRE's exact- and served-loss gap to dense in % (left) and its recalls and top-1 agreement
  (right) at each periodic evaluation."""
  plt = _pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  steps = [r["step"] for r in rows]
  for key in ("exact loss gap %", "served loss gap %", "served approx-tail loss gap %"):
    if rows and key in rows[0]:
      ax1.plot(steps, [r[key] for r in rows], marker="o", label=key.replace(" %", ""))
  ax1.axhline(1.0, color="gray", ls="--", lw=1, label="1% aim")
  for key in ("softmax recall@32", "FFN group recall", "top-1 agreement"):
    if rows and key in rows[0]:
      ax2.plot(steps, [r[key] for r in rows], marker="o", label=key)
  _finish(plt, fig, path, ((ax1, "HiRE loss minus dense loss", "% of dense"),
                           (ax2, "HiRE recall and agreement", "fraction")))
