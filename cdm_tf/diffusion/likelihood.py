"""Gaussian KL and the discretized Gaussian decoder likelihood.

See DDPM (Ho et al., 2020), Sec. 3.3.
"""

import math

import tensorflow as tf


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + tf.exp(logvar1 - logvar2) +
                tf.square(mean1 - mean2) * tf.exp(-logvar2))


def approx_standard_normal_cdf(x):
  # The tanh approximation of Page (1977); accurate to ~1e-4 and, unlike
  # erf, numerically stable for the log-probabilities of the tails below.
  return 0.5 * (
      1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
  """Log-likelihood of 8-bit data x (rescaled to [-1, 1]) under a Gaussian.

  Each pixel's probability is the Gaussian mass of its 1/255-wide bin, with
  the outermost bins extended to -inf and +inf. Returns nats, elementwise.
  """
  centered_x = x - means
  inv_stdv = tf.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
  log_cdf_plus = tf.math.log(tf.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = tf.math.log(tf.maximum(1.0 - cdf_min, 1e-12))
  log_cdf_delta = tf.math.log(tf.maximum(cdf_plus - cdf_min, 1e-12))
  return tf.where(x < -0.999, log_cdf_plus,
                  tf.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def mean_over_nonbatch(x):
  return tf.reduce_mean(x, axis=list(range(1, len(x.shape))))
