"""Conditioning augmentation of the low-resolution input z (CDM Section 3).

Gaussian augmentation corrupts z_0 with the forward process to level s,
z_s = sqrt(alpha_bar_s) z_0 + sqrt(1 - alpha_bar_s) eps. The level is given
as a fraction of the augmenting process, ``level = s / T`` in [0, 1] (0 = no
augmentation; CDM's s = 1001 of a 4000-step process is 0.25; Imagen's noise
augmentation values 0.0 .. 0.5 are levels directly). Between steps,
alpha-bar is interpolated linearly, matching the piecewise-uniform noise
levels of continuous-noise training. The network receives the level as an
extra time input ``1000 * level`` (same range as its noise time input).

* Amortized training: a level per example, uniform in ``training_range``.
* Non-truncated sampling: sample z_0 to the end, then ``augment`` it to s.
* Truncated sampling: stop the low-resolution sampler at s
  (``truncation_stop_index``) and feed z_s as it is.

Blur augmentation (CDM Sec. 3.1, for 128 and 256 outputs) blurs z with a 3x3
Gaussian of sigma ~ U(0.4, 0.6) on half of the training examples and does
nothing at inference.
"""

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import samplers


class GaussianConditioningAugmentation:
  """Forward-process noise on z, at levels of ``diffusion``'s schedule.

  Args:
    diffusion: the process whose q(z_s | z_0) defines the levels (CDM uses
      the super-resolution model's own training process).
    training_range: (low, high) of the uniform training level; (x, x) trains
      a single fixed level.
  """

  def __init__(self, diffusion, training_range=(0.0, 1.0)):
    low, high = (float(v) for v in training_range)
    if not 0.0 <= low <= high <= 1.0:
      raise ValueError(f"training_range must satisfy 0 <= low <= high <= 1, "
                       f"got {training_range}")
    self.training_range = (low, high)
    self.num_timesteps = diffusion.num_timesteps
    # Level k / T has alpha-bar_k (alpha-bar_0 = 1), i.e. index k - 1.
    self.alpha_bar_grid = np.append(1.0, diffusion.alphas_cumprod)
    self.one_minus_alpha_bar_grid = np.append(
        0.0, diffusion.one_minus_alphas_cumprod)

  def _interpolate(self, grid, level):
    position = tf.cast(level, tf.float32) * self.num_timesteps
    lower = tf.clip_by_value(tf.cast(tf.floor(position), tf.int32), 0,
                             self.num_timesteps - 1)
    frac = position - tf.cast(lower, tf.float32)
    grid = tf.constant(grid, tf.float32)
    lo_vals = tf.gather(grid, lower)
    return lo_vals + frac * (tf.gather(grid, lower + 1) - lo_vals)

  def alpha_bar(self, level):
    """(alpha_bar_s, 1 - alpha_bar_s) for float levels [B] in [0, 1]."""
    tf.debugging.assert_greater_equal(level, 0.0, "augmentation level < 0")
    tf.debugging.assert_less_equal(level, 1.0, "augmentation level > 1")
    return (self._interpolate(self.alpha_bar_grid, level),
            self._interpolate(self.one_minus_alpha_bar_grid, level))

  def augment(self, z_start, level, noise):
    """z_s ~ q(z_s | z_0) at per-example levels."""
    level = tf.convert_to_tensor(level, tf.float32)
    alpha_bar, one_minus = self.alpha_bar(level)
    shape = [-1] + [1] * (len(z_start.shape) - 1)
    return (tf.reshape(tf.sqrt(alpha_bar), shape) * z_start +
            tf.reshape(tf.sqrt(one_minus), shape) * noise)

  @staticmethod
  def model_input(level):
    """The network's augmentation-level input, in [0, 1000]."""
    return (noise_conditioning.TIME_INPUT_SCALE * tf.cast(level, tf.float32))

  def training_levels(self, u):
    """Levels for training from uniforms u in [0, 1)."""
    low, high = self.training_range
    return low + (high - low) * tf.cast(u, tf.float32)

  def truncation_alpha_bar(self, level):
    """alpha-bar_s of a level, where a truncated low-resolution chain stops
    (1.0 for level 0: no truncation)."""
    return float(
        np.interp(level * self.num_timesteps, np.arange(self.num_timesteps + 1),
                  self.alpha_bar_grid))

  def truncation_stop_index(self, low_res_diffusion, level):
    """``stop_at`` for an ancestral low-resolution chain to return z_s.

    The low-resolution process (possibly respaced) must have a step whose
    alpha-bar equals this augmentation's alpha_bar_s.
    """
    return samplers.stop_index(low_res_diffusion,
                               self.truncation_alpha_bar(level))


def gaussian_blur(images, sigma, kernel_size=3):
  """Blurs each image of [B, H, W, C] with its own Gaussian sigma [B].

  Separable kernel of ``kernel_size`` taps, normalized to sum 1, with
  symmetric edge padding (as scipy.ndimage's default ``reflect`` mode).
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  radius = kernel_size // 2
  images = tf.convert_to_tensor(images)
  dtype = images.dtype
  x = tf.cast(images, tf.float32)
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
  sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
  taps = tf.exp(-tf.square(offsets)[None, :] / (2.0 * tf.square(sigma)))
  taps = taps / tf.reduce_sum(taps, axis=1, keepdims=True)  # [B, k]
  height, width = tf.shape(x)[1], tf.shape(x)[2]
  x = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]],
             mode="SYMMETRIC")
  # Rows, then columns: sum over taps of weight * shifted image.
  rows = tf.add_n([
      taps[:, k, None, None, None] * x[:, k:k + height, :, :]
      for k in range(kernel_size)
  ])
  out = tf.add_n([
      taps[:, k, None, None, None] * rows[:, :, k:k + width, :]
      for k in range(kernel_size)
  ])
  return tf.cast(out, dtype)


class BlurConditioningAugmentation:
  """Random Gaussian blur of z for training; the identity at inference."""

  def __init__(self, kernel_size=3, sigma_range=(0.4, 0.6), probability=0.5):
    if not 0.0 < sigma_range[0] <= sigma_range[1]:
      raise ValueError(f"bad sigma_range {sigma_range}")
    if not 0.0 <= probability <= 1.0:
      raise ValueError(f"probability must be in [0, 1], got {probability}")
    self.kernel_size = kernel_size
    self.sigma_range = tuple(float(v) for v in sigma_range)
    self.probability = float(probability)

  def augment(self, z, sigma_u, apply_u):
    """Blurs example b iff apply_u[b] < probability, with sigma from sigma_u.

    sigma_u and apply_u are uniforms in [0, 1) of shape [B].
    """
    low, high = self.sigma_range
    sigma = low + (high - low) * tf.cast(sigma_u, tf.float32)
    blurred = gaussian_blur(z, sigma, self.kernel_size)
    apply = tf.reshape(
        tf.cast(apply_u, tf.float32) < self.probability, [-1, 1, 1, 1])
    return tf.where(apply, blurred, z)
