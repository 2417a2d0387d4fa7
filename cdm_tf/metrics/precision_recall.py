"""Improved precision and recall of generated features (k-NN manifolds).

Kynkaanniemi et al. (2019) estimate each distribution's support as the
union of balls around its samples, each ball reaching the sample's k-th
nearest neighbour within the same set (k = 3 by default; a sample counts as
its own first neighbour at distance 0, so the radius is the distance to the
k-th other sample). Then

* precision = fraction of generated samples inside the real support
  (quality: samples look real);
* recall = fraction of real samples inside the generated support
  (coverage: the real variety is produced).

Distances are Euclidean in the given feature space (the paper uses VGG-16
features; here any extractor's, named in the report), computed in blocks so
50K x 50K comparisons fit in memory.
"""

import numpy as np

from cdm_tf.metrics import report

NEIGHBOURHOOD = 3
_BLOCK = 1024


def _squared_distances(a, b, b_norms):
  a_norms = np.einsum("ij,ij->i", a, a)
  return np.maximum(a_norms[:, None] - 2.0 * a @ b.T + b_norms[None, :], 0.0)


def knn_radii(features, k=NEIGHBOURHOOD):
  """Distance of each row to its k-th nearest row (itself being the 0th)."""
  features = np.asarray(features, np.float64)
  if features.shape[0] <= k:
    raise ValueError(f"need more than k={k} samples, got {features.shape[0]}")
  norms = np.einsum("ij,ij->i", features, features)
  radii = np.empty(features.shape[0])
  for start in range(0, features.shape[0], _BLOCK):
    d2 = _squared_distances(features[start:start + _BLOCK], features, norms)
    radii[start:start + _BLOCK] = np.sqrt(np.partition(d2, k, axis=1)[:, k])
  return radii


def coverage(manifold, radii, queries):
  """Fraction of ``queries`` within radius of some ``manifold`` sample."""
  manifold = np.asarray(manifold, np.float64)
  queries = np.asarray(queries, np.float64)
  norms = np.einsum("ij,ij->i", manifold, manifold)
  squared_radii = radii**2
  inside = 0
  for start in range(0, queries.shape[0], _BLOCK):
    d2 = _squared_distances(queries[start:start + _BLOCK], manifold, norms)
    inside += int(np.any(d2 <= squared_radii[None, :], axis=1).sum())
  return inside / queries.shape[0]


def precision_recall(real, generated, network, reference=None, k=NEIGHBOURHOOD):
  """``report.MetricValue``s "precision" and "recall".

  Args:
    real: real features [N_r, D].
    generated: generated features [N_g, D], same network.
    network: the feature network's name.
    reference: name of the real split, for the report.
    k: neighbourhood size.
  """
  real = np.asarray(real, np.float64)
  generated = np.asarray(generated, np.float64)
  if real.ndim != 2 or real.shape[1] != generated.shape[1]:
    raise ValueError(f"feature shapes disagree: {real.shape} vs "
                     f"{generated.shape}")
  precision = coverage(real, knn_radii(real, k), generated)
  recall = coverage(generated, knn_radii(generated, k), real)
  details = {"k": k, "reference_count": len(real)}
  return [
      report.MetricValue("precision", precision, network, len(generated),
                         reference, details=details),
      report.MetricValue("recall", recall, network, len(generated), reference,
                         details=details)
  ]
