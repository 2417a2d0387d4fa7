"""What the network is told about the noise in its input.

Two kinds of model (CDM Appendix B):

* ``"timestep"``: conditioned on the step index of the process it was trained
  with. The index is rescaled to [0, 1000) so models with 4000 and 1000 steps
  share an embedding range (Improved DDPM's ``rescale_timesteps``). Sampling
  must use that process or a respacing of it.
* ``"continuous"``: conditioned on the noise level itself (WaveGrad, SR3),
  trained with alpha-bar drawn piecewise uniformly between adjacent steps of
  the training schedule. Any inference schedule (100 steps, 4 steps, another
  shape) works after training, since only alpha-bar reaches the network.

The noise level is passed as the log signal-to-noise ratio
``log(alpha_bar / (1 - alpha_bar))``, clipped to [LOG_SNR_MIN, LOG_SNR_MAX] and
mapped affinely to [0, 1000] (1000 = pure noise), so that both kinds of model
feed the same range, increasing with noise, to the same time embedding. The
clip range covers every schedule used here: linear and cosine schedules of
1000-4000 steps stay within about +-12 except for the last few cosine steps,
which are pure noise to any network.
"""

import numpy as np
import tensorflow as tf

NOISE_CONDITIONING_TYPES = ("timestep", "continuous")
LOG_SNR_MIN = -20.0
LOG_SNR_MAX = 20.0
TIME_INPUT_SCALE = 1000.0


def log_snr(alpha_bar, one_minus_alpha_bar):
  """log(alpha_bar / (1 - alpha_bar)); takes 1 - alpha_bar separately because
  in float32 it cannot be recovered from alpha_bar near 1."""
  return tf.math.log(alpha_bar) - tf.math.log(one_minus_alpha_bar)


def noise_level_input(alpha_bar, one_minus_alpha_bar):
  """The network's time input for a continuous-noise model, in [0, 1000]."""
  snr = tf.clip_by_value(log_snr(alpha_bar, one_minus_alpha_bar), LOG_SNR_MIN,
                         LOG_SNR_MAX)
  return TIME_INPUT_SCALE * (LOG_SNR_MAX - snr) / (LOG_SNR_MAX - LOG_SNR_MIN)


def timestep_input(original_timesteps, original_num_timesteps):
  """The network's time input for a timestep model, in [0, 1000)."""
  return (tf.cast(original_timesteps, tf.float32) *
          (TIME_INPUT_SCALE / float(original_num_timesteps)))


def piecewise_uniform_alpha_bar(alphas_cumprod, t, u):
  """SR3's continuous noise levels: alpha-bar ~ U(alpha_bar_t, alpha_bar_{t-1}).

  Args:
    alphas_cumprod: float64 array [T] of the training schedule.
    t: int tensor [B] of step indices (0-based: index i is step i + 1).
    u: float tensor [B] in [0, 1), the position inside the step.
  Returns:
    (alpha_bar, one_minus_alpha_bar), float32 tensors [B].
  """
  alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
  upper = np.concatenate([[1.0], alphas_cumprod[:-1]])  # alpha_bar_{t-1}
  lower = alphas_cumprod
  upper_t = tf.gather(tf.constant(upper, tf.float32), t)
  width_t = tf.gather(tf.constant(upper - lower, tf.float32), t)
  one_minus_upper_t = tf.gather(tf.constant(1.0 - upper, tf.float32), t)
  u = tf.cast(u, tf.float32)
  return upper_t - u * width_t, one_minus_upper_t + u * width_t
