"""Kernel Inception Distance.

KID (Binkowski et al. 2018) is the squared maximum mean discrepancy between
real and generated features under the polynomial kernel

  k(x, y) = (x . y / d + 1)^3,   d = feature dimension,

estimated without bias (the diagonal terms k(x_i, x_i) left out of the
within-set means) on ``num_subsets`` random subsets of ``subset_size``
images from each side; the result is the mean and standard deviation over
subsets. Unlike FID its estimate does not depend on the number of samples
in expectation, and it can be slightly negative when the sets match; a set
against itself comes out a little below 0, since subsets drawn from one
pool share images and a shared image's self-similarity enters the cross
term.
Defaults (100 subsets of 1000) are the ones commonly used; with fewer
images the subset size shrinks to the smaller set.
"""

import numpy as np

from cdm_tf.metrics import report

NUM_SUBSETS = 100
SUBSET_SIZE = 1000


def polynomial_kernel(x, y):
  """(x . y / d + 1)^3 for all pairs of rows, float64 [len(x), len(y)]."""
  return (x @ y.T / x.shape[1] + 1.0)**3


def mmd2_unbiased(x, y):
  """Unbiased MMD^2 estimate of two feature sets of m rows each."""
  m = x.shape[0]
  k_xx = polynomial_kernel(x, x)
  k_yy = polynomial_kernel(y, y)
  k_xy = polynomial_kernel(x, y)
  within = ((k_xx.sum() - np.trace(k_xx)) +
            (k_yy.sum() - np.trace(k_yy))) / (m * (m - 1))
  return within - 2.0 * k_xy.mean()


def kid_subsets(real, generated, num_subsets=NUM_SUBSETS,
                subset_size=SUBSET_SIZE, seed=0):
  """MMD^2 of ``num_subsets`` random subset pairs, float64 [num_subsets]."""
  real = np.asarray(real, np.float64)
  generated = np.asarray(generated, np.float64)
  if real.ndim != 2 or real.shape[1] != generated.shape[1]:
    raise ValueError(f"feature shapes disagree: {real.shape} vs "
                     f"{generated.shape}")
  size = min(subset_size, real.shape[0], generated.shape[0])
  if size < 2:
    raise ValueError("KID needs at least 2 images on each side")
  rng = np.random.default_rng(seed)
  values = np.empty(num_subsets)
  for i in range(num_subsets):
    x = real[rng.choice(real.shape[0], size, replace=False)]
    y = generated[rng.choice(generated.shape[0], size, replace=False)]
    values[i] = mmd2_unbiased(x, y)
  return values


def kid(real, generated, network, reference=None, num_subsets=NUM_SUBSETS,
        subset_size=SUBSET_SIZE, seed=0):
  """``report.MetricValue`` "KID": mean and std of the subset MMD^2 values.

  Args:
    real: real features [N_r, D].
    generated: generated features [N_g, D], same network.
    network: the feature network's name.
    reference: name of the real split, for the report.
    num_subsets, subset_size, seed: the subset sampling.
  """
  values = kid_subsets(real, generated, num_subsets, subset_size, seed)
  size = min(subset_size, len(real), len(generated))
  return report.MetricValue(
      "KID", float(values.mean()), network, len(generated), reference,
      std=float(values.std()), details={
          "num_subsets": num_subsets, "subset_size": size,
          "reference_count": len(real)
      })
