"""Top-1 / top-5 against hand-made cases, an exact evaluation pass over a
short last batch, and the per-class CSV, PNG and JSON reports."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import evaluation
from cdm_tf.data import class_names

NUM_CLASSES = 7


def _logits_ranking(label, rank):
  """Logits over 7 classes where ``label`` is the rank-th largest (1 = top),
  with no ties."""
  others = [c for c in range(NUM_CLASSES) if c != label]
  order = others[:rank - 1] + [label] + others[rank - 1:]
  logits = np.zeros(NUM_CLASSES, np.float32)
  logits[order] = np.linspace(3.0, -3.0, NUM_CLASSES)
  return logits


def test_hand_made_top1_and_top5():
  # (label, rank of the label): top-1 hit, top-5 only (rank 3 and 5), a
  # miss (rank 6), and a padding example (weight 0) that would be a hit.
  cases = [(2, 1), (2, 3), (4, 6), (4, 5), (0, 1)]
  logits = np.stack([_logits_ranking(label, r) for label, r in cases])
  labels = np.array([label for label, _ in cases])
  weights = np.array([1, 1, 1, 1, 0], np.float32)
  counts = evaluation.accuracy_counts(logits, labels, NUM_CLASSES, weights)
  result = evaluation.result_from_counts(counts)
  assert result.num_examples == 4
  assert result.top1 == pytest.approx(1 / 4)
  assert result.top5 == pytest.approx(3 / 4)
  np.testing.assert_array_equal(result.examples, [0, 0, 2, 0, 2, 0, 0])
  np.testing.assert_array_equal(result.top1_correct, [0, 0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(result.top5_correct, [0, 0, 2, 0, 1, 0, 0])
  per_class = result.per_class_top1
  assert per_class[2] == 0.5 and per_class[4] == 0.0
  assert np.isnan(per_class[0])  # no examples


def test_constant_logits_are_not_a_hit_for_every_tied_class():
  counts = evaluation.accuracy_counts(np.zeros([NUM_CLASSES, NUM_CLASSES]),
                                      np.arange(NUM_CLASSES), NUM_CLASSES)
  # Ties go to the lowest class indices: class 0 for top-1, 0..4 for top-5.
  np.testing.assert_array_equal(counts["top1"], [1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(counts["top5"], [1, 1, 1, 1, 1, 0, 0])


def test_evaluator_sums_an_exact_pass_with_a_short_last_batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=[23, NUM_CLASSES]).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=23).astype(np.int32)

  def dataset_fn(context):
    del context
    # The "images" are the logits themselves, for a model returning them;
    # the last batch is short (3) and gets padded.
    return tf.data.Dataset.from_tensor_slices(
        (logits[:, None, None, :], labels, np.ones(23, np.float32))).batch(10)

  evaluator = evaluation.Evaluator(lambda x, training: x[:, 0, 0, :],
                                   tf.distribute.get_strategy(), dataset_fn,
                                   NUM_CLASSES, per_replica_batch_size=10)
  for _ in range(2):  # the dataset can be evaluated again
    result = evaluator.evaluate(step=5)
    assert result.step == 5 and result.num_examples == 23
    ranks = (logits > logits[np.arange(23), labels][:, None]).sum(axis=1)
    assert result.top1 == pytest.approx(np.mean(ranks == 0))
    assert result.top5 == pytest.approx(np.mean(ranks < 5))


def test_reports_write_csv_png_and_comparison(tmp_path):
  result = evaluation.EvalResult(examples=np.array([4, 4, 4, 4, 4, 4, 4.0]),
                                 top1_correct=np.array([4, 3, 2, 1, 0, 2, 4.0]),
                                 top5_correct=np.array([4, 4, 4, 4, 2, 3,
                                                        4.0]), step=12)
  classes = [
      class_names.ClassInfo(f"s{c}", f"class {c}") for c in range(NUM_CLASSES)
  ]
  reference = tmp_path / "real" / "per_class_accuracy.csv"
  evaluation.write_per_class_csv(
      str(reference),
      evaluation.EvalResult(examples=result.examples,
                            top1_correct=np.full(NUM_CLASSES, 2.0),
                            top5_correct=result.examples), classes)
  summary = evaluation.write_reports(str(tmp_path / "eval"), result, classes,
                                     compare_with=str(reference))
  with open(tmp_path / "eval" / "per_class_accuracy.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["class_id"] for r in rows] == [str(c) for c in range(7)]
  assert rows[1]["name"] == "class 1" and rows[1]["top1_correct"] == "3"
  assert float(rows[1]["top1_accuracy"]) == 0.75
  assert float(rows[4]["top5_accuracy"]) == 0.5
  png = tf.io.decode_png(
      tf.io.read_file(str(tmp_path / "eval" / "per_class_accuracy.png")))
  assert png.shape[0] > 100 and png.shape[1] > 100
  with open(tmp_path / "eval" / "eval.json") as f:
    saved = json.load(f)
  assert saved == summary
  assert saved["top1"] == pytest.approx(16 / 28)
  assert saved["step"] == 12
  assert saved["reference_mean_per_class_top1"] == pytest.approx(0.5)
  assert saved["classes_at_or_above_reference"] == 5  # all but classes 3, 4
  np.testing.assert_allclose(
      evaluation.read_per_class_csv(
          str(tmp_path / "eval" / "per_class_accuracy.csv")),
      result.per_class_top1)
  with pytest.raises(ValueError, match="7 classes, this model 10"):
    evaluation.read_per_class_csv(str(reference), num_classes=10)
  (tmp_path / "other.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ValueError, match="not a per-class accuracy CSV"):
    evaluation.read_per_class_csv(str(tmp_path / "other.csv"))
