"""Error bars for accuracies: a Wilson interval for one accuracy, and a paired comparison of two
models (or two inference paths) on the same questions."""

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(correct, z: float = Z95) -> tuple[float, float]:
  """95% Wilson score interval (in %) of the accuracy of `correct` (booleans, one per question).
  Unlike mean +- 1.96 sd it stays inside [0, 100] and is not empty at 0% or 100%."""
  c = np.asarray(correct, bool)
  n = c.size
  if n == 0:
    return float("nan"), float("nan")
  p = c.mean()
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return 100.0 * (centre - half), 100.0 * (centre + half)


def mcnemar_p(b: int, c: int) -> float:
  """Exact two-sided McNemar p-value from the discordant counts b (only A right) and c (only B
  right): a binomial(b + c, 1/2) test. 1.0 when the two never disagree."""
  n = b + c
  if n == 0:
    return 1.0
  k = min(b, c)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
  return min(1.0, 2.0 * tail)


def paired(correct_a, correct_b, z: float = Z95) -> dict:
  """B minus A on the same questions, in accuracy points: the difference, its 95% interval
  (normal approximation on the per-question differences, which uses the pairing: questions both
  get right or both get wrong add no variance) and the exact McNemar p-value."""
  a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if a.shape != b.shape:
    raise ValueError(f"paired comparison needs the same questions: {a.size} vs {b.size}")
  d = b.astype(float) - a.astype(float)
  n = d.size
  mean = d.mean() if n else float("nan")
  half = z * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
  return {"diff": 100.0 * mean, "lo": 100.0 * (mean - half), "hi": 100.0 * (mean + half),
          "p": mcnemar_p(int(np.sum(a & ~b)), int(np.sum(~a & b))), "n": int(n)}
