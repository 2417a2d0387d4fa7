"""Inception Score, KID, precision/recall and the labelled report."""

import json

import numpy as np
import pytest

from cdm_tf.metrics import inception_score
from cdm_tf.metrics import kid
from cdm_tf.metrics import precision_recall
from cdm_tf.metrics import report

NETWORK = "test classifier"


def test_inception_score_of_uniform_predictions_is_one():
  result = inception_score.inception_score(np.zeros((100, 7)), NETWORK)
  assert result.value == pytest.approx(1.0)
  assert result.std == pytest.approx(0.0)
  assert result.label == f"IS@100 ({NETWORK})"


def test_inception_score_of_confident_distinct_classes_is_their_number():
  classes = 5
  # Every split of 10 holds each class twice, predicted with certainty.
  logits = 1000.0 * np.eye(classes)[np.arange(100) % classes]
  result = inception_score.inception_score(logits, NETWORK)
  assert result.value == pytest.approx(classes, rel=1e-9)
  assert result.std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_of_one_repeated_confident_class_is_one():
  logits = np.tile(1000.0 * np.eye(4)[2], (50, 1))
  assert inception_score.inception_score(logits,
                                         NETWORK).value == (pytest.approx(1.0))


def test_inception_score_splits_are_equal_consecutive_parts():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(103, 6)) * 3
  scores = inception_score.split_scores(logits)
  assert scores.shape == (10,)
  # Split 3 is samples 30..39; the last 3 samples are left out.
  p = np.exp(logits[30:40]) / np.exp(logits[30:40]).sum(1, keepdims=True)
  marginal = p.mean(0)
  expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), 1)))
  assert scores[3] == pytest.approx(expected, rel=1e-10)
  result = inception_score.inception_score(logits, NETWORK)
  assert result.num_samples == 100
  assert result.value == pytest.approx(scores.mean())
  with pytest.raises(ValueError, match="cannot fill"):
    inception_score.split_scores(logits[:9])


def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(400, 16))
  same = kid.kid(real, real, "f", num_subsets=50, subset_size=100)
  other_sample = kid.kid(real, rng.normal(size=(400, 16)), "f", num_subsets=50,
                         subset_size=100)
  shifted = kid.kid(real,
                    rng.normal(size=(400, 16)) + 0.5, "f", num_subsets=50,
                    subset_size=100)
  assert shifted.value > 0
  # Subsets of one set share images, which biases KID slightly negative.
  assert -0.05 * shifted.value < same.value <= 0
  assert abs(other_sample.value) < 0.05 * shifted.value
  assert shifted.label == "KID@400 (f)"
  assert shifted.details["subset_size"] == 100


def test_unbiased_mmd_matches_its_definition():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1

  def k(a, b):
    return (a @ b / 3 + 1)**3

  within_x = np.mean(
      [k(x[i], x[j]) for i in range(6) for j in range(6) if i != j])
  within_y = np.mean(
      [k(y[i], y[j]) for i in range(6) for j in range(6) if i != j])
  cross = np.mean([k(x[i], y[j]) for i in range(6) for j in range(6)])
  assert kid.mmd2_unbiased(x,
                           y) == pytest.approx(within_x + within_y - 2 * cross)


def test_kid_subset_size_shrinks_to_the_smaller_set():
  rng = np.random.default_rng(3)
  result = kid.kid(rng.normal(size=(30, 4)), rng.normal(size=(20, 4)), "f",
                   num_subsets=3)
  assert result.details["subset_size"] == 20


def test_precision_and_recall_of_a_set_with_itself_are_one():
  rng = np.random.default_rng(4)
  features = rng.normal(size=(200, 8))
  precision, recall = precision_recall.precision_recall(features, features, "f",
                                                        "train")
  assert precision.value == 1.0 and recall.value == 1.0
  assert precision.label == "precision@200 vs train (f)"


def test_a_collapsed_generator_is_precise_but_does_not_recall():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(500, 2))
  collapsed = rng.normal(size=(500, 2)) * 0.05  # one mode at the centre
  precision, recall = precision_recall.precision_recall(real, collapsed, "f")
  assert precision.value > 0.95
  assert recall.value < 0.2


def test_far_away_samples_have_no_precision_or_recall():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(100, 4))
  far = rng.normal(size=(100, 4)) + 100
  precision, recall = precision_recall.precision_recall(real, far, "f")
  assert precision.value == 0.0 and recall.value == 0.0


def test_knn_radius_is_the_distance_to_the_kth_other_point():
  points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
  radii = precision_recall.knn_radii(points, k=3)
  np.testing.assert_allclose(radii, [6.0, 5.0, 3.0, 5.0, 9.0])


def test_report_labels_values_and_writes_json(tmp_path):
  values = report.MetricsReport()
  values.add(
      report.MetricValue("FID", 12.5, "Inception-v3 pool3", 50_000, "train"))
  values.add(
      report.MetricValue("IS", 3.25, "Fashion-MNIST classifier: x", 10_000,
                         std=0.5))
  assert [v.label for v in values.values] == [
      "FID@50K vs train (Inception-v3 pool3)",
      "IS@10K (Fashion-MNIST classifier: x)"
  ]
  assert values.get("IS@10K (Fashion-MNIST classifier: x)").std == 0.5
  table = values.format_table()
  assert "FID@50K vs train (Inception-v3 pool3)  12.5000" in table
  assert "3.2500 +- 0.5000" in table
  path = tmp_path / "metrics.json"
  values.write_json(str(path))
  written = json.loads(path.read_text())["metrics"]
  assert written[0]["label"] == "FID@50K vs train (Inception-v3 pool3)"
  assert written[0]["network"] == "Inception-v3 pool3"
  assert written[1]["std"] == 0.5
  assert report.count_label(1234) == "1234"
