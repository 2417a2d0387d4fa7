"""How a sweep scores its points: ``metrics.sample_scores`` and
``sample_quality.evaluate`` on each point's set, with the same feature
network, references and metric settings at every point.

FID@N against each reference split, KID, precision/recall and IS, each
labelled with the feature network; optionally the Classification Accuracy
Score through a ``cas_fn`` (``sample_scores.cas_values``). The
references' statistics are computed once per resolution.
"""

import dataclasses
import os
from typing import Callable, Optional

from cdm_tf.classifiers import cas
from cdm_tf.metrics import kid
from cdm_tf.metrics import precision_recall
from cdm_tf.metrics import sample_quality
from cdm_tf.metrics import sample_scores
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import split_manifest

DEFAULT_CAS_NAME = "CAS classifier trained on the point's images"


@dataclasses.dataclass(frozen=True)
class MetricSettings:
  """How every point is scored.

  Attributes:
    sample_counts: the N's of FID@N.
    kid_subsets, kid_subset_size, neighbourhood: see ``sample_quality``.
    batch_size: images per feature-network call.
  """
  sample_counts: tuple
  kid_subsets: int = kid.NUM_SUBSETS
  kid_subset_size: int = kid.SUBSET_SIZE
  neighbourhood: int = precision_recall.NEIGHBOURHOOD
  batch_size: Optional[int] = None


@dataclasses.dataclass
class PointScorer:
  """Scores a point's synthetic set.

  Attributes:
    extractor: the ``features.FeatureExtractor`` of FID, KID and
      precision/recall (and IS when it has logits).
    references: a ``sample_scores.ReferenceSpec``.
    classifier: optional ``FeatureExtractor`` with logits for the IS when
      ``extractor`` has none.
    cas_fn: optional ``synthetic_dir -> {"top1": .., "top5": ..}``, the
      Classification Accuracy Score of a point's set (may add "network").
    cas_name: the CAS classifier's description for the metric labels.
  """
  extractor: object
  references: sample_scores.ReferenceSpec
  classifier: object = None
  cas_fn: Optional[Callable] = None
  cas_name: str = DEFAULT_CAS_NAME
  _statistics: dict = dataclasses.field(default_factory=dict, init=False,
                                        repr=False)

  def record(self, metric_settings):
    """What the sweep record keeps of the scoring."""
    classifier = self.classifier
    return {
        "feature_network": {
            "name": self.extractor.name,
            "fingerprint": self.extractor.fingerprint
        },
        "inception_score_classifier": None if classifier is None else {
            "name": classifier.name, "fingerprint": classifier.fingerprint
        },
        "references": self.references.description(),
        "metrics": {
            "fid_sample_counts": list(metric_settings.sample_counts),
            "kid_subsets": metric_settings.kid_subsets,
            "kid_subset_size": metric_settings.kid_subset_size,
            "neighbourhood": metric_settings.neighbourhood,
            "cas": self.cas_name if self.cas_fn is not None else None
        },
    }

  def reference_statistics(self, resolution, num_classes, batch_size=None):
    """{split: ``fid.ReferenceStatistics``} at ``resolution``, computed
    (or read from their cache) once."""
    if resolution not in self._statistics:
      self._statistics[resolution] = self.references.statistics(
          self.extractor, resolution, num_classes, batch_size)
    return self._statistics[resolution]

  def score(self, point_dir, split, resolution, num_classes, num_images,
            metric_settings):
    """The ``report.MetricsReport`` of the point's set in ``point_dir``."""
    references = self.reference_statistics(resolution, num_classes,
                                           metric_settings.batch_size)
    manifest = split_manifest.read(point_dir, split)
    metrics = sample_quality.evaluate(
        reader.read(manifest.shard_paths(point_dir)), self.extractor,
        references, sample_counts=metric_settings.sample_counts,
        classifier=self.classifier, batch_size=metric_settings.batch_size,
        kid_subsets=metric_settings.kid_subsets,
        kid_subset_size=metric_settings.kid_subset_size,
        neighbourhood=metric_settings.neighbourhood)
    if self.cas_fn is not None:
      metrics.extend(
          sample_scores.cas_values(self.cas_fn(point_dir), self.cas_name,
                                   num_images))
    return metrics

  def reference_fingerprint(self, resolution, num_classes, batch_size=None):
    """``sample_scores.reference_fingerprint`` of the references at
    ``resolution``."""
    return sample_scores.reference_fingerprint(
        self.reference_statistics(resolution, num_classes, batch_size))


def configured_cas_fn(strategy, real_data_dir, print_fn=print):
  """A ``cas_fn`` with the CAS model and recipe the parsed gin files bind
  (``cas.configured_cas_scorer``): each point's classifier trains (or
  resumes) in ``<point>/cas_classifier``.

  Returns:
    ``(cas_fn, cas_name)`` for ``PointScorer``.
  """
  score, name = cas.configured_cas_scorer(strategy, real_data_dir, print_fn,
                                          trained_on="the point's images")

  def point_score(synthetic_dir):
    result = score(synthetic_dir, os.path.join(synthetic_dir,
                                               cas.CLASSIFIER_DIR))
    if result is None:
      raise SystemExit(cas.STOPPED_MESSAGE)
    return result

  return point_score, name
