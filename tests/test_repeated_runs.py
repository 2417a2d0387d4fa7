"""Mean and t-interval over repeated runs, against hand-computed values."""

import pytest

from cdm_tf.metrics import repeated_runs


def test_three_runs():
  # mean 2, sample sd 1, standard error 1/sqrt(3) = 0.577350;
  # t(0.975, 2 dof) = 4.302653 -> half-width 2.484138.
  s = repeated_runs.summarize([1.0, 2.0, 3.0])
  assert s.runs == 3 and s.mean == pytest.approx(2.0)
  assert s.low == pytest.approx(2.0 - 2.484138, abs=1e-6)
  assert s.high == pytest.approx(2.0 + 2.484138, abs=1e-6)
  assert s.format(".2f") == "2.00 [-0.48, 4.48] (3 runs)"


def test_four_runs_and_other_confidence():
  # sd = sqrt(0.02 / 3) = 0.081650, se = 0.040825; t(0.975, 3) = 3.182446.
  s = repeated_runs.summarize([0.9, 1.0, 1.1, 1.0])
  assert s.high - s.mean == pytest.approx(0.129922, abs=1e-6)
  # t(0.95, 3) = 2.353363 for a 90% interval.
  s90 = repeated_runs.summarize([0.9, 1.0, 1.1, 1.0], confidence=0.9)
  assert s90.high - s90.mean == pytest.approx(0.096076, abs=1e-6)


def test_one_run_has_no_interval_and_never_separates():
  one = repeated_runs.summarize([5.0])
  assert not one.has_interval and one.low == one.high == 5.0
  assert one.format() == "5.000 (1 run)"
  far = repeated_runs.summarize([100.0, 101.0])
  assert not repeated_runs.separated(one, far)


def test_separated_only_when_intervals_do_not_overlap():
  a = repeated_runs.summarize([1.0, 1.1, 0.9])
  b = repeated_runs.summarize([2.0, 2.1, 1.9])
  wide = repeated_runs.summarize([0.0, 3.0, 1.5])
  assert repeated_runs.separated(a, b) and repeated_runs.separated(b, a)
  assert not repeated_runs.separated(a, wide)


@pytest.mark.parametrize("values, match", [([], "non-empty"),
                                           ([1.0, float("nan")], "finite")])
def test_bad_values_are_refused(values, match):
  with pytest.raises(ValueError, match=match):
    repeated_runs.summarize(values)


def test_verdict_in_words():
  low = repeated_runs.summarize([1.0, 1.1, 1.2])
  high = repeated_runs.summarize([2.0, 2.1, 2.2])
  wide = repeated_runs.summarize([0.0, 1.5, 3.0])
  assert repeated_runs.verdict(
      high, low, True) == ("**effect: better** (intervals separate)")
  assert repeated_runs.verdict(
      high, low, False) == ("**effect: worse** (intervals separate)")
  assert repeated_runs.verdict(
      wide, low, True) == ("the intervals overlap: no difference resolved")
  assert repeated_runs.verdict(repeated_runs.summarize([2.0]), low,
                               True) == ("one run only, no interval: no claim")
  assert repeated_runs.verdict(None, low, True) == "not measured yet"
