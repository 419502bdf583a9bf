"""Console output and metric files: progress lines with ETA, tables, JSON, TensorBoard."""

import json
import math
import pathlib
import time

import jax


def is_chief() -> bool:
  return jax.process_index() == 0


def say(msg: str) -> None:
  """One line to stdout from process 0 only."""
  if is_chief():
    print(msg, flush=True)


def writer(logdir: pathlib.Path):
  """TensorBoard (CLU) writer; non-chief processes only log. CLU imports TensorFlow, which the
  benchmark and generation paths must not need (accelerator hosts may lack it)."""
  from clu import metric_writers
  return metric_writers.create_default_writer(str(logdir), just_logging=not is_chief(),
                                              asynchronous=False)


def fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
  """Rate and ETA for a loop of `total` items starting at `start`."""

  def __init__(self, start: int, total: int):
    self.start, self.total, self.done = start, total, start
    self.t0 = time.perf_counter()
    self.first_done = None  # the first item includes compilation; rate is measured after it

  def line(self, done: int, extra: str = "") -> str:
    now = time.perf_counter()
    if self.first_done is None:
      self.first_done = (done, now)
      rate = float("nan")
    else:
      d0, t0 = self.first_done
      rate = (done - d0) / max(now - t0, 1e-9) if done > d0 else float("nan")
    eta = (self.total - done) / rate if rate == rate and rate > 0 else float("nan")
    pct = 100.0 * done / max(self.total, 1)
    rate_s = f"{rate:.2f}/s" if rate == rate else "-/s"
    extra = f" {extra}" if extra else ""
    return f"[{done}/{self.total} {pct:3.0f}%]{extra} | {rate_s} | ETA {fmt_duration(eta)}"

  def step(self, extra: str = "") -> str:
    """One more item done: its progress line."""
    self.done += 1
    return self.line(self.done, extra)


def track(items, label: str, *, every: float = 10.0, first_compiles: bool = True):
  """Yields `items`; prints `  label [i/n pct] | rate | ETA` after the first item, then at most
  every `every` seconds, and `  label: n done in T` at the end (process 0 only). With
  `first_compiles` the rate is measured after the first item (it includes compilation); an item
  counts as done when the loop body that received it returns, so bodies that dispatch
  asynchronous work should block on it."""
  items = list(items)
  bar = Progress(0, len(items))
  if not first_compiles:
    bar.first_done = (0, bar.t0)
  t0 = last = time.perf_counter()
  for i, item in enumerate(items, 1):
    yield item
    line, now = bar.line(i), time.perf_counter()
    if i < len(items) and (i == 1 or now - last >= every):
      say(f"  {label} {line}")
      last = now
  say(f"  {label}: {len(items)} done in {fmt_duration(time.perf_counter() - t0)}")


def table(rows: list[tuple[str, object]], title: str = "") -> str:
  """A two-column table of metric name and value."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)
  width = max([len(k) for k, _ in rows] + [6])
  lines = [title] if title else []
  lines.append("-" * (width + 16))
  lines += [f"{k:<{width}}  {fmt(v):>12}" for k, v in rows]
  lines.append("-" * (width + 16))
  return "\n".join(lines)


def write_json(path: pathlib.Path, obj) -> None:
  """Atomic JSON write (temp file then rename) so a crash never leaves half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  tmp.replace(path)


def append_jsonl(path: pathlib.Path, obj) -> None:
  """One JSON object appended as a line (chief only); readers keep the last line per step."""
  if is_chief():
    with open(path, "a") as f:
      f.write(json.dumps(obj, sort_keys=True) + "\n")


def read_jsonl(path: pathlib.Path) -> list[dict]:
  """The objects of a JSON-lines file; a torn last line (a killed run) is skipped."""
  out = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out
