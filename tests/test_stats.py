import numpy as np
import pytest

from hire_cli.evals import stats


def test_wilson_interval_contains_the_accuracy_and_shrinks_with_n():
  lo, hi = stats.wilson([True] * 60 + [False] * 40)
  assert lo < 60 < hi and hi - lo == pytest.approx(18.8, abs=0.3)  # textbook: [50.2, 69.1]
  lo2, hi2 = stats.wilson([True] * 600 + [False] * 400)
  assert hi2 - lo2 < (hi - lo) / 3
  lo0, hi0 = stats.wilson([False] * 20)
  assert lo0 == pytest.approx(0.0, abs=1e-9) and 10 < hi0 < 20  # not empty at 0%


def test_mcnemar_matches_the_binomial_test():
  from scipy import stats as sps
  for b, c in ((10, 2), (5, 5), (0, 7), (30, 18)):
    assert stats.mcnemar_p(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)
  assert stats.mcnemar_p(0, 0) == 1.0


def test_paired_interval_uses_the_pairing():
  """Two models that agree on all but 3 of 400 questions differ significantly less than an
  unpaired interval would allow; the same numbers unpaired would give a ~7-point interval."""
  rng = np.random.default_rng(0)
  a = rng.random(400) < 0.7
  b = a.copy()
  b[np.flatnonzero(~a)[:3]] = True  # B gets 3 more right
  r = stats.paired(a, b)
  assert r["diff"] == pytest.approx(0.75)
  assert r["hi"] - r["lo"] < 2.0
  assert r["p"] == pytest.approx(0.25)
  with pytest.raises(ValueError, match="same questions"):
    stats.paired(a, b[:10])
