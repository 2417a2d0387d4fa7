"""Top-1 / top-5 and per-class accuracy of a classifier on real images.

Azizi et al. (2023) report top-1 and top-5 accuracy on the real ImageNet
validation set (Tables 2-4) and compare, class by class, a model trained on
generated data with one trained on real data (Fig. 5, after Ravuri &
Vinyals 2019, Fig. 2). This module:

* counts, per class, the examples and the top-1 / top-5 hits of each batch
  on the replicas (``accuracy_counts``), summed over replicas and batches
  on the host, so the result is exact under any ``tf.distribute`` strategy
  and padding examples (weight 0) count for nothing;
* writes the per-class table as CSV and a Figure-5-style PNG: per-class
  top-1 accuracy of this model (red) against a reference model (blue, e.g.
  real-data training, read back from its CSV), classes sorted by the
  reference's accuracy so the comparison reads as points above or below a
  rising curve.

Top-1 is the argmax and top-5 the five largest logits (``tf.math.top_k``,
ties to the lower class index), so a constant output is not counted as a
hit for every tied class.
"""

import csv
import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from cdm_tf import files

TOP_K = 5
CSV_FIELDS = ("class_id", "synset", "name", "examples", "top1_correct",
              "top5_correct", "top1_accuracy", "top5_accuracy")
RESULTS_FILE = "eval.json"
PER_CLASS_CSV = "per_class_accuracy.csv"
PER_CLASS_PNG = "per_class_accuracy.png"


def accuracy_counts(logits, labels, num_classes, weights=None, k=TOP_K):
  """Per-class example counts and top-1 / top-k hits of one batch.

  Args:
    logits: float [B, num_classes].
    labels: int [B], 0-based.
    num_classes: number of classes C.
    weights: optional float [B]; 0 marks padding examples.
    k: the top-k of "top5" (at most C).

  Returns:
    dict of float32 [C]: "examples", "top1" and "top5" (weighted sums).
  """
  logits = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.int32)
  if weights is None:
    weights = tf.ones_like(labels, tf.float32)
  weights = tf.cast(weights, tf.float32)
  top1 = tf.cast(
      tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
      tf.float32)
  _, top_indices = tf.math.top_k(logits, k=min(k, num_classes))
  topk = tf.cast(tf.reduce_any(tf.equal(top_indices, labels[:, None]), axis=-1),
                 tf.float32)

  def per_class(values):
    return tf.math.unsorted_segment_sum(values * weights, labels, num_classes)

  return {
      "examples": per_class(tf.ones_like(weights)), "top1": per_class(top1),
      "top5": per_class(topk)
  }


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Accuracy counts of one evaluation pass, per class.

  Attributes:
    examples: float [C], examples of each class.
    top1_correct: float [C], top-1 hits per class.
    top5_correct: float [C], top-5 hits per class.
    step: the training step evaluated.
  """
  examples: np.ndarray
  top1_correct: np.ndarray
  top5_correct: np.ndarray
  step: int = 0

  @property
  def num_examples(self):
    return int(round(float(np.sum(self.examples))))

  @property
  def top1(self):
    return float(np.sum(self.top1_correct) / max(np.sum(self.examples), 1))

  @property
  def top5(self):
    return float(np.sum(self.top5_correct) / max(np.sum(self.examples), 1))

  def _per_class(self, correct):
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(self.examples > 0, correct / self.examples, np.nan)

  @property
  def per_class_top1(self):
    """Top-1 accuracy of each class; NaN for a class without examples."""
    return self._per_class(self.top1_correct)

  @property
  def per_class_top5(self):
    return self._per_class(self.top5_correct)

  def as_dict(self):
    return {
        "step": int(self.step), "examples": self.num_examples,
        "top1": self.top1, "top5": self.top5,
        "classes": int(len(self.examples)),
        "mean_per_class_top1": float(np.nanmean(self.per_class_top1))
    }


def result_from_counts(counts, step=0):
  """An ``EvalResult`` from summed ``accuracy_counts`` (numpy or tensors)."""
  return EvalResult(examples=np.asarray(counts["examples"], np.float64),
                    top1_correct=np.asarray(counts["top1"], np.float64),
                    top5_correct=np.asarray(counts["top5"],
                                            np.float64), step=int(step))


class Evaluator:
  """Evaluates a model on a dataset, one exact pass, under a strategy.

  Args:
    model: a Keras classifier returning logits.
    strategy: the ``tf.distribute.Strategy`` the model was built under.
    dataset_fn: callable(input_context) returning per-replica batches of
      (images, labels, weights) with a static image shape, e.g.
      ``input_pipeline.validation_dataset``.
    num_classes: number of classes.
    per_replica_batch_size: the dataset's batch b. Each replica's batch is
      padded to b with weight-0 examples: the last batch may be short, and
      in the last step tf.distribute gives replicas without data an empty
      batch (which Keras layers reject), so the model always sees b.
  """

  def __init__(self, model, strategy, dataset_fn, num_classes,
               per_replica_batch_size):
    self._strategy = strategy
    self._num_classes = int(num_classes)
    self._dataset = strategy.distribute_datasets_from_function(dataset_fn)
    batch_size = int(per_replica_batch_size)

    def replica_step(images, labels, weights):
      missing = batch_size - tf.shape(labels)[0]
      images = tf.pad(images,
                      [[0, missing]] + [[0, 0]] * (len(images.shape) - 1))
      images.set_shape([batch_size] + list(images.shape[1:]))
      labels = tf.pad(labels, [[0, missing]])
      weights = tf.pad(tf.cast(weights, tf.float32), [[0, missing]])
      logits = model(images, training=False)
      return accuracy_counts(logits, labels, self._num_classes, weights)

    @tf.function
    def step(batch):
      per_replica = strategy.run(replica_step, args=batch)
      return {
          name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
          for name, value in per_replica.items()
      }

    self._step = step

  def evaluate(self, step=0):
    """Returns the ``EvalResult`` of one pass over the dataset."""
    totals = {
        name: np.zeros(self._num_classes, np.float64)
        for name in ("examples", "top1", "top5")
    }
    for batch in self._dataset:
      for name, value in self._step(batch).items():
        totals[name] += value.numpy()
    return result_from_counts(totals, step)


def write_per_class_csv(path, result, classes=None):
  """Writes one row per class (``CSV_FIELDS``) atomically.

  Args:
    path: output file.
    result: an ``EvalResult``.
    classes: optional ``ClassInfo`` sequence in label order, for the
      synset and name columns.
  """
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
  writer.writeheader()
  top1, top5 = result.per_class_top1, result.per_class_top5
  for c in range(len(result.examples)):
    info = classes[c] if classes is not None and c < len(classes) else None
    writer.writerow({
        "class_id": c,
        "synset": info.synset if info else "",
        "name": info.name if info else "",
        "examples": int(round(result.examples[c])),
        "top1_correct": int(round(result.top1_correct[c])),
        "top5_correct": int(round(result.top5_correct[c])),
        "top1_accuracy": "" if np.isnan(top1[c]) else f"{top1[c]:.6f}",
        "top5_accuracy": "" if np.isnan(top5[c]) else f"{top5[c]:.6f}",
    })
  files.atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def read_per_class_csv(path, num_classes=None):
  """Per-class top-1 accuracy from a ``write_per_class_csv`` file.

  Args:
    path: the CSV.
    num_classes: expected number of classes, checked when given.

  Returns:
    float array [C] indexed by class id (NaN for a class without examples).

  Raises:
    ValueError: if the file is not such a table or the classes differ.
  """
  with tf.io.gfile.GFile(path) as f:
    rows = list(csv.DictReader(f))
  if not rows or not {"class_id", "top1_accuracy"} <= set(rows[0]):
    raise ValueError(f"{path}: not a per-class accuracy CSV (needs columns "
                     "class_id and top1_accuracy)")
  try:
    ids = [int(r["class_id"]) for r in rows]
    values = [
        float(r["top1_accuracy"]) if r["top1_accuracy"] else np.nan
        for r in rows
    ]
  except ValueError as e:
    raise ValueError(f"{path}: malformed row ({e})") from e
  if sorted(ids) != list(range(len(ids))):
    raise ValueError(f"{path}: class ids are not 0..{len(ids) - 1}")
  if num_classes is not None and len(ids) != num_classes:
    raise ValueError(f"{path} has {len(ids)} classes, this model "
                     f"{num_classes}")
  accuracy = np.full(len(ids), np.nan)
  accuracy[ids] = values
  return accuracy


# Up to this many classes, the x axis names them.
MAX_NAMED_CLASSES = 30


def plot_per_class(path, accuracy, reference=None, label="this model",
                   reference_label="reference", title=None, class_labels=None):
  """Writes a Figure-5-style PNG of per-class top-1 accuracy.

  Classes are sorted by the reference's accuracy (by this model's when there
  is no reference); this model is red, the reference blue.

  Args:
    path: output PNG.
    accuracy: float [C] per-class accuracy of this model.
    reference: optional float [C] of the model to compare with.
    label: legend entry of this model.
    reference_label: legend entry of the reference.
    title: optional title; default summarises the means.
    class_labels: optional names in class order, shown on the x axis for
      up to ``MAX_NAMED_CLASSES`` classes.
  """
  # Figure + Agg canvas, not pyplot: no global backend or figure state.
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  accuracy = np.asarray(accuracy, np.float64)
  key = accuracy if reference is None else np.asarray(reference, np.float64)
  # NaN (no examples) sorts last; stable order keeps ties by class id.
  order = np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")
  ranks = np.arange(len(order))
  marker = 16 if len(order) <= 100 else 3
  fig = figure.Figure(figsize=(8, 4.5), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.add_subplot()
  if reference is not None:
    axes.scatter(ranks, key[order], s=marker, c="tab:blue",
                 label=reference_label)
  axes.scatter(ranks, accuracy[order], s=marker, c="tab:red", label=label)
  axes.set_xlabel("class, sorted by " + (
      f"{reference_label} accuracy" if reference is not None else "accuracy"))
  axes.set_ylabel("top-1 accuracy")
  if class_labels is not None and len(order) <= MAX_NAMED_CLASSES:
    axes.set_xticks(ranks)
    axes.set_xticklabels([class_labels[c] for c in order], rotation=45,
                         ha="right", fontsize=8)
  axes.set_ylim(-0.02, 1.02)
  axes.set_xlim(-1, len(order))
  axes.grid(alpha=0.3)
  axes.legend(loc="lower right")
  if title is None:
    title = f"{label}: mean {np.nanmean(accuracy):.3f}"
    if reference is not None:
      at_least = int(np.sum(accuracy >= key))
      title += (f"; {reference_label}: mean {np.nanmean(key):.3f}; "
                f"{at_least} of {len(order)} classes at or above it")
  axes.set_title(title, fontsize=9)
  files.atomic_write_figure(path, fig)


def write_reports(directory, result, classes=None, compare_with=None,
                  label="this model", reference_label="real-data model",
                  extra=None):
  """eval.json, the per-class CSV and PNG of one evaluation.

  Args:
    directory: output directory.
    result: an ``EvalResult``.
    classes: ``ClassInfo`` sequence for the CSV.
    compare_with: optional per-class CSV of a reference model (e.g. trained
      on real data); the PNG then compares against it.
    label: legend entry of this model.
    reference_label: legend entry of the reference.
    extra: optional dict merged into eval.json.

  Returns:
    dict of what was written: paths, and the metrics.
  """
  num_classes = len(result.examples)
  reference = (read_per_class_csv(compare_with, num_classes)
               if compare_with else None)
  csv_path = os.path.join(directory, PER_CLASS_CSV)
  png_path = os.path.join(directory, PER_CLASS_PNG)
  write_per_class_csv(csv_path, result, classes)
  plot_per_class(png_path, result.per_class_top1, reference, label=label,
                 reference_label=reference_label,
                 class_labels=[c.name for c in classes] if classes else None)
  summary = dict(result.as_dict(), per_class_csv=csv_path,
                 per_class_png=png_path)
  if reference is not None:
    summary["compare_with"] = compare_with
    summary["reference_mean_per_class_top1"] = float(np.nanmean(reference))
    summary["classes_at_or_above_reference"] = int(
        np.sum(result.per_class_top1 >= reference))
  summary.update(extra or {})
  files.atomic_write_json(os.path.join(directory, RESULTS_FILE), summary)
  return summary
