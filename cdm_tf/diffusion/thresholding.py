"""Thresholding of the predicted x_0 at each sampling step.

Static thresholding clips to the data range [-1, 1]. Dynamic thresholding
(Saharia et al. 2022, Imagen, Sec. 2.3) picks, per example, s = the p-th
percentile of |x_0|, and if s > 1 clips to [-s, s] and divides by s, which
keeps saturated pixels from piling up at high guidance weights.
"""

import tensorflow as tf


def static_threshold(pred_xstart):
  return tf.clip_by_value(pred_xstart, -1.0, 1.0)


def per_example_percentile(x, percentile):
  """p-th percentile (0..100) of each example's values, linear interpolation.

  Matches ``np.percentile(x.reshape(B, -1), p, axis=1)``.
  """
  flat = tf.reshape(x, [tf.shape(x)[0], -1])
  sorted_vals = tf.sort(flat, axis=-1)
  n = tf.shape(flat)[1]
  position = tf.cast(n - 1, tf.float32) * (percentile / 100.0)
  lower = tf.cast(tf.floor(position), tf.int32)
  upper = tf.minimum(lower + 1, n - 1)
  frac = position - tf.floor(position)
  lo_vals = tf.gather(sorted_vals, lower, axis=1)
  hi_vals = tf.gather(sorted_vals, upper, axis=1)
  return lo_vals + (hi_vals - lo_vals) * frac


def dynamic_threshold(pred_xstart, percentile):
  if not 0.0 < percentile <= 100.0:
    raise ValueError(f"dynamic threshold percentile must be in (0, 100], got "
                     f"{percentile}")
  s = per_example_percentile(tf.abs(pred_xstart), percentile)
  s = tf.maximum(s, 1.0)
  s = tf.reshape(s, [-1] + [1] * (len(pred_xstart.shape) - 1))
  return tf.clip_by_value(pred_xstart, -s, s) / s


def apply_threshold(pred_xstart, clip_denoised, dynamic_threshold_percentile):
  """The one entry point the samplers use: dynamic wins over static."""
  if dynamic_threshold_percentile is not None:
    return dynamic_threshold(pred_xstart, dynamic_threshold_percentile)
  if clip_denoised:
    return static_threshold(pred_xstart)
  return pred_xstart
