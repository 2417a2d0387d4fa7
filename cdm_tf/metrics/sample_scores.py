"""Scoring a generated set against real data: what tools/evaluate.py and
sampler sweeps (``cdm_tf.sweeps``) share.

Both compare generated images with the statistics of real splits at the
generated images' resolution (``ReferenceSpec.statistics``, computed once
and cached by ``fid.reference_statistics``), score them with
``sample_quality.evaluate`` and write the labelled values to
``METRICS_FILE``. This module holds the pieces around that call: which
generated set and which sample counts are scored
(``read_complete_manifest``, ``choose_sample_counts``,
``image_resolution``), whether the real data has what the scoring needs
(``check_real_data``), what the references were (``reference_fingerprint``,
for records that must notice a change) and the scores of real images of
the same count (``real_baseline``), for scale.
"""

import dataclasses
from typing import Optional

import gin
import numpy as np

from cdm_tf import fingerprints
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.metrics import features
from cdm_tf.metrics import fid
from cdm_tf.metrics import report
from cdm_tf.metrics import sample_quality
from cdm_tf.synthetic_set import split_manifest

# The labelled metric values of a scored set (``report.MetricsReport``).
METRICS_FILE = "metrics.json"
# The same metrics of real images, for scale (``real_baseline``).
BASELINE_FILE = "metrics_real_baseline.json"
# Digits of a reference's statistics fingerprint kept in records.
_FINGERPRINT_DIGITS = 16
# The metric names of a CAS result's values (classifiers.cas), by its keys.
CAS_METRICS = {"top1": "CAS top-1", "top5": "CAS top-5"}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReferenceSpec:
  """The real splits generated images are compared with (their statistics
  are computed once per resolution and cached, ``fid.reference_statistics``).

  Attributes:
    data_dir: real ImageNet-format data (the tools' ``--real_data_dir``).
    splits: reference splits; FID is reported against each.
    num_examples: use the first N images of each split; None uses all.
    keep_features: real features kept for KID and precision/recall (0: no
      KID or precision/recall).
    cache_dir: where statistics are cached when ``data_dir`` is read-only.
  """
  data_dir: str
  splits: tuple = ("train", "validation")
  num_examples: Optional[int] = None
  keep_features: int = 10_000
  cache_dir: Optional[str] = None

  def description(self):
    """What decides the statistics, for records."""
    return {
        "data_dir": self.data_dir.rstrip("/"), "splits": list(self.splits),
        "num_examples": self.num_examples, "keep_features": self.keep_features
    }

  def statistics(self, extractor, resolution, num_classes, batch_size=None):
    """{split: ``fid.ReferenceStatistics``} of ``extractor`` at
    ``resolution`` (real images centre-cropped and resized to it)."""
    return {
        split: fid.reference_statistics(
            self.data_dir, extractor, split=split,
            num_examples=self.num_examples, resolution=resolution,
            num_classes=num_classes, batch_size=batch_size,
            keep_features=self.keep_features,
            cache_dir=self.cache_dir) for split in self.splits
    }


def reference_fingerprint(references):
  """{split: count, statistics fingerprint, kept features} of
  {split: ``fid.ReferenceStatistics``}, for records."""
  described = {}
  for name, reference in sorted(references.items()):
    stats = reference.statistics
    digest = fingerprints.of_arrays(
        [np.concatenate([stats.mean.ravel(),
                         stats.covariance.ravel()])])
    described[name] = {
        "count": stats.count, "sha256": digest[:_FINGERPRINT_DIGITS],
        "features":
            (None if reference.features is None else len(reference.features))
    }
  return described


def read_complete_manifest(generated_dir, split):
  """The manifest of a finished generated set.

  Raises:
    ValueError: no manifest of ``split``, or shards still missing.
  """
  try:
    manifest = split_manifest.read(generated_dir, split)
  except FileNotFoundError as e:
    raise ValueError(f"no manifest of split {split!r} in {generated_dir} "
                     f"({split_manifest.file_path(generated_dir, split)}"
                     "; a directory written by tools/generate.py)") from e
  if not manifest.complete:
    raise ValueError(f"{generated_dir} holds {len(manifest.shards)} of the "
                     f"{manifest.num_shards} shards of split {split!r}: finish "
                     "generating it first")
  return manifest


def choose_sample_counts(requested, num_images):
  """The N's of FID@N: ``requested`` (integers or their strings) sorted,
  or the defaults for the set's size when None or empty.

  Raises:
    ValueError: a count that is no integer or outside 2..num_images.
  """
  if not requested:
    return sample_quality.default_sample_counts(num_images)
  try:
    counts = tuple(sorted({int(n) for n in requested}))
  except ValueError as e:
    raise ValueError(f"--sample_counts must be integers: {e}") from e
  if counts[0] < 2 or counts[-1] > num_images:
    raise ValueError(f"--sample_counts {list(counts)} must be in "
                     f"2..{num_images} (the set's size)")
  return counts


def image_resolution(generated, where):
  """The side of the (square) images of dataset ``generated``: the real
  images are cropped and resized to it before their statistics are
  computed. ``where`` names the set in errors."""
  for element in generated.take(1):
    height, width = element[schema.IMAGE].shape[:2]
    if height != width:
      raise ValueError(f"the generated images are {height}x{width}, not "
                       "square")
    return int(height)
  raise ValueError(f"{where} holds no images")


def check_real_data(real_data_dir, num_classes, reference_splits,
                    other_splits=(), baseline_split=None):
  """Refuses real data without the classes or splits the scoring reads.

  Args:
    real_data_dir: the real data.
    num_classes: the generated set's.
    reference_splits: the splits compared with.
    other_splits: more splits that must be there (e.g. CAS's validation).
    baseline_split: the split of ``real_baseline``, or None.
  """
  classes = class_names.load_classes(real_data_dir)
  if len(classes) != num_classes:
    raise ValueError(f"the generated set has {num_classes} classes, "
                     f"{real_data_dir} {len(classes)}")
  for split in list(reference_splits) + list(other_splits):
    imagenet_reader.list_files(real_data_dir, split)
  if baseline_split:
    imagenet_reader.list_files(real_data_dir, baseline_split)
    if not set(reference_splits) - {baseline_split}:
      raise ValueError(f"--real_baseline_split={baseline_split} needs "
                       "another reference split to be compared with")


def real_baseline(real_data_dir, split, extractor, classifier, references,
                  count, resolution, num_classes, batch_size=None):
  """The metrics of the first ``count`` real images of ``split``, prepared
  like the reference images, against the other reference splits: what
  real images of that count score on this feature network.

  Returns:
    ``report.MetricsReport``.
  """
  real = imagenet_reader.read_dataset(
      imagenet_reader.list_files(real_data_dir, split), num_classes=num_classes,
      shuffle=False)
  extracted = features.extract(
      real, extractor, num_examples=count, batch_size=batch_size,
      preprocess=features.center_crop_resize(resolution))
  others = {name: r for name, r in references.items() if name != split}
  # The IS from the extractor's logits, or from logits that follow from its
  # features (the 2015 Inception's); a separate classifier's would take a
  # second pass over the real images, which the baseline does not make.
  separate = classifier is not None and (
      not sample_quality.scores_from_features(classifier, extractor))
  baseline = sample_quality.evaluate(
      extracted, extractor, others, sample_counts=(count,),
      classifier=None if separate else classifier)
  if separate:
    baseline.notes = [
        f"IS not reported for the real images: {classifier.name}"
        " would need a second pass over them."
    ]
  return baseline


def cas_values(scores, network, num_samples, reference="validation"):
  """``report.MetricValue``s of a CAS result {"top1", "top5"} (as
  ``configured_cas_scorer``'s ``score`` returns it; may add "network"),
  labelled with ``network`` and the generated images it trained on.

  Raises:
    ValueError: ``scores`` has neither top-1 nor top-5.
  """
  values = []
  for key, metric in CAS_METRICS.items():
    if key in scores and scores[key] is not None:
      values.append(
          report.MetricValue(
              metric, float(scores[key]), scores.get("network", network),
              num_samples, reference, details={
                  "protocol": "classifier trained on the generated images "
                              "only, accuracy on the real split"
              }))
  if not values:
    raise ValueError(f"cas_fn returned no top1/top5: {scores}")
  return values
