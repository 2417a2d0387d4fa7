"""Frechet Inception Distance: feature statistics, distance, cached references.

FID (Heusel et al. 2017) fits a Gaussian to the features of real and of
generated images and reports the Frechet (2-Wasserstein) distance between
the two:

  FID = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2)).

Statistics are float64: means, and covariances with the unbiased (N - 1)
normalisation (``np.cov``), as the original TensorFlow code computes them.

Only the trace of the root enters the distance, and two routes compute it
(``method``), both in float64:

* ``"eigh"`` (the default): with A = S_r^(1/2) from a symmetric
  eigendecomposition, S_r S_g has the eigenvalues of the symmetric positive
  semi-definite A S_g A (``trace_sqrt_product``), so tr((S_r S_g)^(1/2)) is
  the sum of their square roots (round-off's tiny negative eigenvalues
  clipped to 0). Two symmetric eigendecompositions: much faster than a
  general matrix root at 2048 dimensions, and as accurate for singular
  covariances (fewer images than dimensions). Needs symmetric covariances;
  others go the ``"sqrtm"`` route.
* ``"sqrtm"``: the original code's ``scipy.linalg.sqrtm`` of the product.
  When the covariances are (near) singular the root can come out
  non-finite; then, as the original code does, ``eps`` is added to both
  diagonals and the root recomputed, and the result records (and logs)
  that offset. Round-off leaves a tiny imaginary part in the root; it is
  dropped when the diagonal's imaginary parts are below
  ``IMAGINARY_TOLERANCE`` and an error otherwise. Every result keeps the
  largest imaginary part seen.

The ``"eigh"`` route retries with ``eps`` likewise if its decomposition
fails or comes out non-finite, and refuses covariances with clearly
negative eigenvalues (below -``NEGATIVE_TOLERANCE`` times the largest).

CDM reports FID against the statistics of the real training set and of the
validation set, at 10K and 50K samples (Ho et al. 2021, Tables 1-3). Real
statistics are computed once per split (``reference_statistics``) and cached
as ``fid_stats-<key>.npz`` (a ``content_cache`` entry) next to the data, or
in ``cache_dir`` when the data directory is not writable. The key hashes
the split's file names and sizes, the number of examples, the
preprocessing and the feature network's fingerprint, so changed data or a
different network never reuses a stale file. FID@N (``fid_at``) uses the
first N generated images.
"""

import dataclasses
import os
import warnings

from absl import logging
import numpy as np
import scipy.linalg

from cdm_tf import content_cache
from cdm_tf.data import imagenet_reader
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import report

DEFAULT_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3
# Eigenvalues of a covariance (or of A S_g A) below -this x the largest are
# not round-off: the matrix is no covariance.
NEGATIVE_TOLERANCE = 1e-6
METHODS = ("eigh", "sqrtm")
DEFAULT_METHOD = "eigh"
SAMPLE_COUNTS = (10_000, 50_000)
CACHE_PREFIX = "fid_stats-"
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
  """Mean and covariance of a set of features, float64.

  Attributes:
    mean: [D].
    covariance: [D, D], normalised by count - 1.
    count: number of images.
    network: the feature network's name.
  """
  mean: np.ndarray
  covariance: np.ndarray
  count: int
  network: str

  def as_arrays(self):
    return {
        "mean": self.mean, "covariance": self.covariance,
        "count": np.int64(self.count), "network": np.str_(self.network)
    }

  @classmethod
  def from_arrays(cls, arrays):
    return cls(np.asarray(arrays["mean"], np.float64),
               np.asarray(arrays["covariance"], np.float64),
               int(arrays["count"]), str(arrays["network"]))


def statistics(features, network):
  """``FeatureStatistics`` of features [N, D] (N >= 2)."""
  if isinstance(features, features_lib.ExtractedFeatures):
    features = features.features
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"need features [N >= 2, D], got {features.shape}")
  return FeatureStatistics(features.mean(axis=0),
                           np.cov(features,
                                  rowvar=False), features.shape[0], network)


@dataclasses.dataclass(frozen=True)
class FrechetDistance:
  """A Frechet distance and how its matrix square root went.

  Attributes:
    value: the distance.
    offset: eps added to both covariance diagonals (0 if none was needed).
    max_imaginary: largest |imaginary part| of the root's entries (0 on the
      "eigh" route, which has none).
    singular: the covariance product is singular. "sqrtm": scipy warned
      so, or the root was not finite, and the root, so the value, is less
      accurate (fewer images than feature dimensions make the covariances
      singular; scipy does not always notice, ``fid`` always warns).
      "eigh": the product's smallest eigenvalue is zero to round-off; the
      value is as accurate as for a regular product.
    method: the route taken, "eigh" or "sqrtm".
  """
  value: float
  offset: float
  max_imaginary: float
  singular: bool
  method: str = DEFAULT_METHOD


def _sqrtm(matrix):
  """scipy's square root, and whether it warned that matrix is singular."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
    root = scipy.linalg.sqrtm(matrix)
  singular = any(
      issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)
  return root, singular


def _clipped(eigenvalues, what):
  """Eigenvalues with round-off's negative ones set to 0; an error for
  clearly negative ones."""
  largest = max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
  if float(np.min(eigenvalues)) < -NEGATIVE_TOLERANCE * largest:
    raise ValueError(f"FID: {what} has the negative eigenvalue "
                     f"{float(np.min(eigenvalues)):.3g} (largest "
                     f"{largest:.3g}): not a covariance")
  return np.maximum(eigenvalues, 0.0)


def trace_sqrt_product(covariance1, covariance2):
  """tr((S1 S2)^(1/2)) of symmetric positive semi-definite S1, S2.

  With A = S1^(1/2) (symmetric), S1 S2 = A (A S2) has the eigenvalues of
  (A S2) A, a symmetric positive semi-definite matrix (XY and YX share
  their eigenvalues, singular S1 or not), so the root's trace is the sum
  of the square roots of that matrix's eigenvalues.

  Returns:
    (trace, singular): singular when the product's smallest eigenvalue is
    zero to round-off (at most D x machine epsilon x the largest, the rank
    tolerance of ``numpy.linalg.matrix_rank``); such eigenvalues count as
    zero.

  Raises:
    ValueError: a clearly negative eigenvalue (not covariances).
    numpy.linalg.LinAlgError: an eigendecomposition did not converge.
  """
  eigenvalues, eigenvectors = np.linalg.eigh(covariance1)
  root1 = (eigenvectors *
           np.sqrt(_clipped(eigenvalues, "covariance 1"))) @ eigenvectors.T
  inner = root1 @ covariance2 @ root1
  inner = (inner + inner.T) / 2  # symmetric to round-off; make it exactly so
  product = _clipped(np.linalg.eigvalsh(inner), "S1^(1/2) S2 S1^(1/2)")
  tolerance = product.size * np.finfo(np.float64).eps * product[-1]
  singular = bool(product[0] <= tolerance)
  # Eigenvalues at round-off level are zero: their square roots would turn
  # round-off of 1e-16 into errors of 1e-8 each.
  product[product <= tolerance] = 0.0
  return float(np.sum(np.sqrt(product))), singular


def _is_symmetric(matrix):
  return np.allclose(matrix, matrix.T, rtol=1e-10,
                     atol=1e-12 * float(np.max(np.abs(matrix), initial=0.0)))


def _trace_sqrt_eigh(covariance1, covariance2, eps):
  """``trace_sqrt_product``, retried with ``eps`` on the diagonals if it
  fails or is not finite: (trace, offset, singular)."""
  try:
    trace, singular = trace_sqrt_product(covariance1, covariance2)
    if np.isfinite(trace):
      return trace, 0.0, singular
  except np.linalg.LinAlgError:
    pass
  offset = float(eps)
  logging.warning(
      "FID: the eigendecomposition failed or is not finite; "
      "adding %g to the diagonals", offset)
  shift = np.eye(covariance1.shape[0]) * offset
  trace, _ = trace_sqrt_product(covariance1 + shift, covariance2 + shift)
  return trace, offset, True


def _trace_sqrt_sqrtm(covariance1, covariance2, eps):
  """scipy's root of the product: (trace, offset, singular, max_imaginary).
  """
  offset = 0.0
  root, singular = _sqrtm(covariance1 @ covariance2)
  if not np.isfinite(root).all():
    offset = float(eps)
    logging.warning(
        "FID: the covariance product is singular, its square "
        "root is not finite; adding %g to the diagonals", offset)
    shift = np.eye(covariance1.shape[0]) * offset
    root, _ = _sqrtm((covariance1 + shift) @ (covariance2 + shift))
    singular = True
  if singular:
    logging.warning(
        "FID: the %dx%d covariance product is singular, its "
        "square root may be inaccurate (fewer images than "
        "feature dimensions?)", *covariance1.shape)
  max_imaginary = 0.0
  if np.iscomplexobj(root):
    max_imaginary = float(np.abs(root.imag).max())
    diagonal_imaginary = float(np.abs(np.diagonal(root).imag).max())
    if diagonal_imaginary > IMAGINARY_TOLERANCE:
      raise ValueError(f"FID: the covariance product's square root has an "
                       f"imaginary diagonal part of {diagonal_imaginary:.3g}")
    root = root.real
  return float(np.trace(root)), offset, singular, max_imaginary


def frechet_distance(mean1, covariance1, mean2, covariance2, eps=DEFAULT_EPS,
                     method=DEFAULT_METHOD):
  """Frechet distance between N(mean1, covariance1) and N(mean2, covariance2).

  Args:
    mean1, covariance1, mean2, covariance2: the two Gaussians.
    eps: diagonal offset of a retry (see the module docstring).
    method: "eigh" (symmetric eigendecompositions) or "sqrtm" (scipy's
      root of the product); "eigh" falls back to "sqrtm" for covariances
      that are not symmetric.

  Returns:
    ``FrechetDistance``.

  Raises:
    ValueError: shapes disagree, an unknown method, or the covariances are
      not valid (a clearly negative eigenvalue; "sqrtm": the root's diagonal
      keeps an imaginary part above ``IMAGINARY_TOLERANCE``).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  mean1, mean2 = np.atleast_1d(mean1).astype(
      np.float64), np.atleast_1d(mean2).astype(np.float64)
  covariance1 = np.atleast_2d(covariance1).astype(np.float64)
  covariance2 = np.atleast_2d(covariance2).astype(np.float64)
  if mean1.shape != mean2.shape or covariance1.shape != covariance2.shape or (
      covariance1.shape != mean1.shape * 2):
    raise ValueError(f"shapes disagree: means {mean1.shape} {mean2.shape}, "
                     f"covariances {covariance1.shape} {covariance2.shape}")
  if method == "eigh" and not (_is_symmetric(covariance1) and
                               _is_symmetric(covariance2)):
    logging.warning("FID: the covariances are not symmetric; using "
                    "scipy.linalg.sqrtm")
    method = "sqrtm"
  max_imaginary = 0.0
  if method == "eigh":
    trace_root, offset, singular = _trace_sqrt_eigh(covariance1, covariance2,
                                                    eps)
  else:
    trace_root, offset, singular, max_imaginary = _trace_sqrt_sqrtm(
        covariance1, covariance2, eps)
  difference = mean1 - mean2
  value = (difference @ difference + np.trace(covariance1) +
           np.trace(covariance2) - 2.0 * trace_root)
  return FrechetDistance(float(value), offset, max_imaginary, singular, method)


def fid(stats1, stats2, eps=DEFAULT_EPS, method=DEFAULT_METHOD):
  """``frechet_distance`` of two ``FeatureStatistics`` of one network."""
  if stats1.network != stats2.network:
    raise ValueError(f"statistics of different feature networks: "
                     f"{stats1.network!r} vs {stats2.network!r}")
  dimension = stats1.mean.shape[0]
  if min(stats1.count, stats2.count) <= dimension:
    logging.warning(
        "FID from %d and %d images of %d-d features: a "
        "covariance of no more images than dimensions is "
        "singular, the value is biased high", stats1.count, stats2.count,
        dimension)
  return frechet_distance(stats1.mean, stats1.covariance, stats2.mean,
                          stats2.covariance, eps, method)


def fid_at(generated, references, sample_counts=SAMPLE_COUNTS, eps=DEFAULT_EPS,
           method=DEFAULT_METHOD):
  """FID of the first N generated images against each reference, per N.

  Args:
    generated: ``features.ExtractedFeatures`` of at least max(N) images.
    references: {name, e.g. "train": ``FeatureStatistics``} of the same
      network.
    sample_counts: the N's.
    eps, method: see ``frechet_distance``.

  Returns:
    List of ``report.MetricValue`` ("FID@10K vs train (Inception-v3
    pool3)", ...), N-major.

  Raises:
    ValueError: fewer generated images than an N, or statistics of another
      network.
  """
  values = []
  for count in sample_counts:
    if count > generated.count:
      raise ValueError(f"FID@{report.count_label(count)} needs {count} "
                       f"generated images, have {generated.count}")
    stats = statistics(generated.features[:count], generated.network)
    for name, reference in references.items():
      distance = fid(stats, reference, eps, method)
      values.append(
          report.MetricValue(
              "FID", distance.value, generated.network, count, name, details={
                  "reference_count": reference.count,
                  "covariance_offset": distance.offset,
                  "max_imaginary": distance.max_imaginary,
                  "singular_covariance": distance.singular,
                  "sqrt_method": distance.method
              }))
  return values


# ------------------------------------------------ cached real statistics


@dataclasses.dataclass(frozen=True)
class ReferenceStatistics:
  """Statistics of a real split, and optionally its first features.

  Attributes:
    statistics: ``FeatureStatistics``.
    features: float32 [keep_features, D] of the first images (for KID and
      precision/recall), or None.
    cache_path: the cache file it was read from or written to, or None.
  """
  statistics: FeatureStatistics
  features: np.ndarray | None
  cache_path: str | None


def cache_entry(files, sizes, *, num_examples, resolution, fingerprint,
                record_format, num_classes, keep_features, cache_dir=None):
  """The ``content_cache.Entry`` of everything the statistics depend on:
  next to the data, then in ``cache_dir``."""
  description = {
      "version": _CACHE_VERSION,
      "files": [[os.path.basename(f), int(s)] for f, s in zip(files, sizes)],
      "num_examples": num_examples,
      "resolution": resolution,
      "network": fingerprint,
      "format": record_format,
      "num_classes": num_classes,
      "keep_features": keep_features,
  }
  return content_cache.Entry.of(
      description, prefix=CACHE_PREFIX, extension=content_cache.NPZ,
      directories=content_cache.directories(files, cache_dir),
      what="FID statistics cache")


def _check_cached(arrays):
  missing = sorted({"mean", "covariance", "count", "network"} - set(arrays))
  return f"it lacks {', '.join(missing)}" if missing else None


def _compute_reference(files, extractor, num_examples, resolution,
                       record_format, num_classes, batch_size, keep_features):
  """(statistics, the first ``keep_features`` features or None) of a split,
  read in a fixed order."""
  dataset = imagenet_reader.read_dataset(files, record_format=record_format,
                                         num_classes=num_classes, shuffle=False)
  preprocess = (features_lib.center_crop_resize(resolution)
                if resolution else None)
  extracted = features_lib.extract(dataset, extractor,
                                   num_examples=num_examples,
                                   batch_size=batch_size, preprocess=preprocess)
  stats = statistics(extracted.features, extractor.name)
  kept = extracted.features[:keep_features] if keep_features else None
  return stats, kept


def reference_statistics(files, extractor, *, split=None, num_examples=None,
                         resolution=None, record_format=None, num_classes=1000,
                         batch_size=None, keep_features=0, cache_dir=None,
                         use_cache=True):
  """Feature statistics of a real split, computed once and cached.

  Images are read in a fixed order (``read_dataset(shuffle=False)``), so
  the first ``num_examples`` are always the same ones.

  Args:
    files: anything ``imagenet_reader.list_files`` accepts (a directory
      needs ``split``).
    extractor: a ``features.FeatureExtractor``.
    split: split name when ``files`` is a directory.
    num_examples: use the first N images; None uses all.
    resolution: if set, each real image is centre-cropped and resized to
      resolution x resolution first (``features.center_crop_resize``), as
      the cascade's training data; None uses the images as stored.
    record_format: see ``imagenet_reader.read_dataset``; None detects it.
    num_classes: label range the reader accepts.
    batch_size: images per network call.
    keep_features: also keep (and cache) the first this many images'
      features, for KID and precision/recall against the real split.
    cache_dir: where the cache goes if the data directory is not writable
      (also searched).
    use_cache: False always recomputes and writes no cache.

  Returns:
    ``ReferenceStatistics``.
  """
  files = imagenet_reader.list_files(files, split)
  if record_format is None:
    record_format = imagenet_reader.detect_format(files[0])
  sizes = imagenet_reader.file_sizes(files)
  entry = cache_entry(files, sizes, num_examples=num_examples,
                      resolution=resolution, fingerprint=extractor.fingerprint,
                      record_format=record_format, num_classes=num_classes,
                      keep_features=int(keep_features), cache_dir=cache_dir)
  if use_cache:
    cached, path = entry.read(_check_cached)
    if cached is not None:
      logging.info("FID statistics of %s from %s", split or files[0], path)
      return ReferenceStatistics(FeatureStatistics.from_arrays(cached),
                                 cached.get("features"), path)

  stats, kept = _compute_reference(files, extractor, num_examples, resolution,
                                   record_format, num_classes, batch_size,
                                   keep_features)
  path = None
  if use_cache:
    arrays = dict(stats.as_arrays(), split=np.str_(split or ""),
                  num_files=np.int64(len(files)))
    if kept is not None:
      arrays["features"] = kept
    path = entry.write(arrays)
  return ReferenceStatistics(stats, kept, path)
