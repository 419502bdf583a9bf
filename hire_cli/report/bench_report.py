"""`hire bench-latency`'s console table and bar plot."""

import pathlib

import numpy as np


def format_table(result: dict) -> str:
  w = max([20] + [len(c["variant"]) + 2 for c in result["cases"]])
  head = (f"{'variant':<{w}}{'batch':>6}{'ctx':>6}{'ms/step':>9}{'tok/s':>9}{'MB/step':>9}"
          f"{'GB/s':>7}{'%bw':>6}{'speedup':>8}{'roofline':>9}{'%roof':>7}{'%gain':>7}"
          f"{'prefill ms':>11}")
  lines = [f"Decode latency on {result['device']} (memory bandwidth "
           f"{result['bandwidth_gbs']:.1f} GB/s, {result['params'] / 1e6:.1f}M params, "
           f"{result['param_dtype']})", head, "-" * len(head)]
  for c in result["cases"]:
    sp = c.get("speedup", float("nan"))
    rf = c.get("roofline_speedup", float("nan"))
    fr = c.get("roofline_fraction", float("nan"))
    fg = c.get("roofline_gain_fraction")
    fg = float("nan") if fg is None else fg
    lines.append(f"{c['variant']:<{w}}{c['batch']:>6}{c['context']:>6}{c['ms_per_token']:>9.2f}"
                 f"{c['tokens_per_s']:>9.1f}{c['weight_bytes_per_step'] / 1e6:>9.1f}"
                 f"{c['achieved_gbs']:>7.1f}{100 * c['bandwidth_fraction']:>6.0f}{sp:>8.2f}"
                 f"{rf:>9.2f}{100 * fr:>7.0f}{100 * fg:>7.0f}{c.get('prefill_ms', float('nan')):>11.1f}")
  return "\n".join(lines)


def plot(cases, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  keys = sorted({(c["batch"], c["context"]) for c in cases})
  variants = list(dict.fromkeys(c["variant"] for c in cases))
  width = 0.8 / max(len(variants), 1)
  for i, v in enumerate(variants):
    ys = [next(c["ms_per_token"] for c in cases if c["variant"] == v and
               (c["batch"], c["context"]) == k) for k in keys]
    ax.bar(np.arange(len(keys)) + i * width, ys, width, label=v)
  ax.set_xticks(np.arange(len(keys)) + width * (len(variants) - 1) / 2)
  ax.set_xticklabels([f"B={b}\nctx={c}" for b, c in keys])
  ax.set_ylabel("ms per decode step")
  ax.set_title("hire bench-latency")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
