"""A data distribution whose optimal denoiser is known in closed form.

For x_0 ~ N(mu, sigma^2) (independent dimensions) and
x_t = sqrt(a) x_0 + sqrt(1 - a) eps, with a = alpha-bar, the minimum-MSE
epsilon prediction is

  E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a sigma^2 + 1 - a).

A sampler driven by this "perfect network" must return samples with mean mu
and standard deviation sigma, which checks the sampling arithmetic end to end
without training anything.
"""

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers
from cdm_tf.diffusion.factory import create_diffusion


class GaussianData:

  def __init__(self, mean, std):
    self.mean = float(mean)
    self.std = float(std)

  def optimal_eps(self, x_t, alpha_bar, one_minus_alpha_bar):
    return (tf.sqrt(one_minus_alpha_bar) * (x_t - tf.sqrt(alpha_bar) * self.mean)
            / (alpha_bar * self.std**2 + one_minus_alpha_bar))

  def model_fn(self, diffusion):
    """A ``model_fn(x_t, time_input)`` returning the optimal epsilon.

    Like a network, it only sees the time input; it recovers alpha-bar by
    looking the input up among the process's steps.
    """
    time_inputs = diffusion.model_time_input(
        tf.range(diffusion.num_timesteps)).numpy()
    order = np.argsort(time_inputs)
    sorted_inputs = tf.constant(time_inputs[order], tf.float32)
    order = tf.constant(order, tf.int32)
    alpha_bar = tf.constant(diffusion.alphas_cumprod, tf.float32)
    one_minus = tf.constant(diffusion.one_minus_alphas_cumprod, tf.float32)

    def fn(x_t, time_input):
      pos = tf.searchsorted(sorted_inputs, time_input)
      pos = tf.clip_by_value(pos, 0, len(time_inputs) - 1)
      t = tf.gather(order, pos)
      shape = [-1] + [1] * (len(x_t.shape) - 1)
      eps = self.optimal_eps(x_t, tf.reshape(tf.gather(alpha_bar, t), shape),
                             tf.reshape(tf.gather(one_minus, t), shape))
      if diffusion.model_var_type == "learned_range":
        # v = -1: the lower variance bound.
        eps = tf.concat([eps, -tf.ones_like(eps)], axis=-1)
      return eps

    return fn


def sample_moments(diffusion, data, num_samples=4096, dims=4, seed=0,
                   sampler="ddpm", **sampler_kwargs):
  """Samples ``num_samples x dims`` values with the optimal model.

  Returns (mean, std) of the samples as floats. Thresholding is off unless
  asked for, since it would truncate the Gaussian.
  """
  sampler_kwargs.setdefault("clip_denoised", False)
  seeds = per_example_noise.example_seeds(tf.range(num_samples), seed)
  x = samplers.sample(diffusion, data.model_fn(diffusion), (dims,), seeds,
                      sampler=sampler, **sampler_kwargs).numpy()
  return float(x.mean()), float(x.std())


def moment_report(settings, data_mean=0.3, data_std=0.5, num_samples=64,
                  dims=256, seed=0, tolerance=0.03, progress=None):
  """Runs each sampler setting against the optimal model of GaussianData.

  Args:
    settings: list of dicts; keys ``schedule``, ``num_timesteps``,
      ``timestep_respacing``, ``model_var_type``, ``noise_conditioning`` go to
      ``create_diffusion``; ``sampler``, ``eta``, ``logvar_coeff`` to the
      sampler.
    progress: optional callable(row_dict) called after each setting.
  Returns:
    A list of row dicts: the setting plus ``steps``, ``mean``, ``std``,
    their errors against the data distribution, and ``ok`` (both errors
    within ``tolerance``).
  """
  for name, value in (("num_samples", num_samples), ("dims", dims)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  diffusion_keys = ("schedule", "num_timesteps", "timestep_respacing",
                    "model_var_type", "noise_conditioning")
  data = GaussianData(data_mean, data_std)
  rows = []
  for setting in settings:
    setting = dict(setting)
    unknown = set(setting) - set(diffusion_keys) - {"sampler", "eta",
                                                    "logvar_coeff"}
    if unknown:
      raise ValueError(f"unknown sampler-check setting keys {sorted(unknown)}")
    diffusion = create_diffusion(
        **{k: setting[k] for k in diffusion_keys if k in setting})
    sampler_kwargs = {k: setting[k] for k in ("sampler", "eta", "logvar_coeff")
                      if k in setting}
    mean, std = sample_moments(diffusion, data, num_samples, dims, seed,
                               **sampler_kwargs)
    row = dict(setting, steps=diffusion.num_timesteps, mean=mean, std=std,
               mean_error=mean - data.mean, std_error=std - data.std)
    row["ok"] = bool(abs(row["mean_error"]) <= tolerance
                     and abs(row["std_error"]) <= tolerance)
    rows.append(row)
    if progress is not None:
      progress(row)
  return rows
