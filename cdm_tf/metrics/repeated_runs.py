"""Summaries of a quantity measured over repeated runs (seeds).

A claim ("the solver is as good as DDPM", "synthetic data helps") rests on
the spread between runs, not on one number. ``summarize`` gives the mean and
its two-sided Student-t interval; ``separated`` says whether two such
intervals are apart, the bar this project sets for calling a difference an
effect, and ``verdict`` says so in words.
"""

import dataclasses
import math
from typing import Sequence

import numpy as np
import scipy.stats


@dataclasses.dataclass(frozen=True)
class Summary:
  """Mean of ``runs`` values and its ``confidence`` interval [low, high]
  (t distribution, runs - 1 degrees of freedom). One run has no interval:
  low = high = mean, and ``has_interval`` is False."""
  mean: float
  low: float
  high: float
  runs: int
  confidence: float = 0.95

  @property
  def has_interval(self):
    return self.runs > 1

  def format(self, spec=".3f"):
    """'0.991 [0.862, 1.120] (3 runs)'; '0.991 (1 run)' without interval."""
    if not self.has_interval:
      return f"{self.mean:{spec}} (1 run)"
    return (f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}] "
            f"({self.runs} runs)")


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
  """Mean and ``confidence`` t-interval of ``values`` (finite, at least
  one)."""
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or not values.size:
    raise ValueError(f"need a non-empty list of values, got {values.shape}")
  if not np.isfinite(values).all():
    raise ValueError(f"values must be finite, got {values.tolist()}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  mean = float(values.mean())
  if values.size == 1:
    return Summary(mean, mean, mean, 1, confidence)
  standard_error = float(values.std(ddof=1)) / math.sqrt(values.size)
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2,
                                 values.size - 1)) * standard_error
  return Summary(mean, mean - half, mean + half, int(values.size), confidence)


def separated(a: Summary, b: Summary) -> bool:
  """True when both have intervals and the intervals do not overlap."""
  return (a.has_interval and b.has_interval and
          (a.high < b.low or b.high < a.low))


def verdict(a, b, higher_is_better):
  """How summary ``a`` compares with summary ``b`` of one metric, in words
  (None for one not measured)."""
  if a is None or b is None:
    return "not measured yet"
  if not (a.has_interval and b.has_interval):
    return "one run only, no interval: no claim"
  if not separated(a, b):
    return "the intervals overlap: no difference resolved"
  better = (a.mean > b.mean) == higher_is_better
  return f"**effect: {'better' if better else 'worse'}** (intervals separate)"
