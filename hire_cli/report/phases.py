"""Progress of a run made of several `hire` commands (`make quality`, `make demo`): which phase
runs, the time so far and an ETA from the phases already run. Each command prints its own
progress lines (training steps, eval batches, benchmark cases) below its phase's line."""

import subprocess
import sys
import time

from hire_cli.report import reporting


def say(msg: str) -> None:
  """A console line; the orchestrator is one process and never starts JAX (its commands do)."""
  print(msg, flush=True)


class Phases:
  """`run(*args)` runs `hire ARGS` as a subprocess; `kinds` names every phase in order (phases
  of a kind take about as long as each other, e.g. "train", "eval")."""

  def __init__(self, name: str, kinds: list[str], *, retry: str,
               weights: dict[str, float] | None = None):
    """`weights`: how long a phase of each kind takes relative to the others (1 when not
    given), used for the kinds that have not run yet."""
    self.name, self.kinds, self.retry = name, kinds, retry
    self.weights = weights or {}
    self.took, self.t0 = [], time.perf_counter()

  def eta(self) -> float:
    """Seconds left: each remaining phase as long as the mean of the phases of its kind run so
    far; a kind not run yet, as the phases run so far scaled by `weights` (unknown before the
    first phase)."""
    by_kind = {}
    for kind, took in zip(self.kinds, self.took):
      if took is not None:  # a skipped phase (already done) says nothing about its kind
        by_kind.setdefault(kind, []).append(took)
    if not by_kind:
      return float("nan")
    w = lambda k: self.weights.get(k, 1.0)  # noqa: E731
    per_weight = (sum(t / w(k) for k, ts in by_kind.items() for t in ts) /
                  sum(map(len, by_kind.values())))
    return sum(sum(by_kind[k]) / len(by_kind[k]) if k in by_kind else per_weight * w(k)
               for k in self.kinds[len(self.took):])

  def elapsed(self) -> float:
    return time.perf_counter() - self.t0

  def _head(self, what: str) -> None:
    say(f"[{self.name} {len(self.took) + 1}/{len(self.kinds)}] {what}  (elapsed "
                  f"{reporting.fmt_duration(self.elapsed())}, ETA "
                  f"{reporting.fmt_duration(self.eta())})")

  def skip(self, why: str) -> None:
    self._head(f"skipped: {why}")
    self.took.append(None)

  def run(self, *args: str, failed: str = "") -> None:
    """`failed`: what to say instead of the default when the command fails."""
    self._head(f"$ hire {' '.join(args)}")
    t = time.perf_counter()
    if subprocess.run([sys.executable, "-m", "hire_cli.cli.main", *args]).returncode != 0:
      raise SystemExit(f"{self.name}: {failed}" if failed else
                       f"{self.name}: `hire {' '.join(args)}` failed; fix it and rerun "
                       f"`{self.retry}` (finished runs are kept and not retrained)")
    self.took.append(time.perf_counter() - t)
