"""Sampling loops over a ``GaussianDiffusion``.

``model_fn(x_t, time_input)`` returns the network output for a batch (wrap a
conditional model with ``guidance.guided_model_fn`` to bind labels, the
low-resolution image and the guidance weight). ``seeds`` is an int [B, 2]
tensor of per-example seeds (``per_example_noise.example_seeds``); all noise
is drawn per example from them, so a sample does not depend on its batch.

To sample with fewer steps, pass a respaced process
(``factory.create_diffusion(..., timestep_respacing="ddim32")``).
"""

import tensorflow as tf

from cdm_tf.diffusion import per_example_noise

SAMPLERS = ("ddpm", "ddim")


def _run(step_fn, x, num_timesteps, stop_at, progress):
  """Applies step_fn for indices T-1 .. stop_at; returns the final x."""
  if not 0 <= stop_at < num_timesteps:
    raise ValueError(f"stop_at must be in [0, {num_timesteps}), got {stop_at}")
  total = num_timesteps - stop_at
  for done, i in enumerate(range(num_timesteps - 1, stop_at - 1, -1), 1):
    x = step_fn(x, tf.constant(i, tf.int32))
    if progress is not None:
      progress(done, total)
  return x


def initial_noise(seeds, shape):
  """x_T ~ N(0, I) of per-example shape ``shape``, drawn from each seed."""
  return per_example_noise.per_example_normal(
      seeds, shape, per_example_noise.STREAM_INITIAL_NOISE)


def _initial_noise(seeds, shape, x_T):
  if x_T is not None:
    return tf.convert_to_tensor(x_T, tf.float32)
  return initial_noise(seeds, shape)


def ddpm_step(diffusion, model_fn, x, i, seeds, *, clip_denoised=True,
              dynamic_threshold_percentile=None, logvar_coeff=None):
  """One ancestral step from index ``i`` (a scalar int32 tensor) to i - 1.

  A plain function, so callers compile it once with their own arguments
  (``tf.function``, ``strategy.run``).
  """
  t = tf.fill([tf.shape(x)[0]], i)
  output = model_fn(x, diffusion.model_time_input(t))
  noise = per_example_noise.per_example_normal(
      seeds, x.shape[1:], per_example_noise.STREAM_STEP_NOISE, i)
  x_prev, _ = diffusion.p_sample(
      output, x, t, noise, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile,
      logvar_coeff=logvar_coeff)
  return x_prev


def ddim_step(diffusion, model_fn, x, i, seeds, *, eta=0.0,
              clip_denoised=True, dynamic_threshold_percentile=None):
  """One DDIM step from index ``i`` to i - 1 (see ``ddpm_step``)."""
  t = tf.fill([tf.shape(x)[0]], i)
  output = model_fn(x, diffusion.model_time_input(t))
  noise = (per_example_noise.per_example_normal(
      seeds, x.shape[1:], per_example_noise.STREAM_STEP_NOISE, i)
           if eta > 0 else None)
  return diffusion.ddim_step(
      output, x, t, t - 1, eta=eta, noise=noise, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile)


def ddpm_sample(diffusion, model_fn, shape, seeds, *, x_T=None,
                clip_denoised=True, dynamic_threshold_percentile=None,
                logvar_coeff=None, stop_at=0, progress=None):
  """Ancestral sampling (DDPM Algorithm 2) with the model's variance type.

  ``logvar_coeff`` mixes log beta_t and log beta-tilde_t for models without
  learned variances. ``stop_at = k > 0`` stops after step index k and
  returns x at the noise level of index k - 1 (truncated conditioning
  augmentation). ``shape`` is the per-example shape, e.g. (64, 64, 3).
  """
  seeds = tf.convert_to_tensor(seeds)
  step = tf.function(lambda x, i: ddpm_step(
      diffusion, model_fn, x, i, seeds, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile,
      logvar_coeff=logvar_coeff))
  return _run(step, _initial_noise(seeds, shape, x_T),
              diffusion.num_timesteps, stop_at, progress)


def ddim_sample(diffusion, model_fn, shape, seeds, *, eta=0.0, x_T=None,
                clip_denoised=True, dynamic_threshold_percentile=None,
                stop_at=0, progress=None):
  """DDIM sampling over every step of ``diffusion`` (Song et al. 2021)."""
  seeds = tf.convert_to_tensor(seeds)
  step = tf.function(lambda x, i: ddim_step(
      diffusion, model_fn, x, i, seeds, eta=eta, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile))
  return _run(step, _initial_noise(seeds, shape, x_T),
              diffusion.num_timesteps, stop_at, progress)


def sample(diffusion, model_fn, shape, seeds, sampler="ddpm", eta=0.0,
           logvar_coeff=None, **kwargs):
  """Dispatches on ``sampler``: ``ddpm`` (uses logvar_coeff) or ``ddim``."""
  if sampler == "ddpm":
    if eta:
      raise ValueError("eta is a DDIM parameter")
    return ddpm_sample(diffusion, model_fn, shape, seeds,
                       logvar_coeff=logvar_coeff, **kwargs)
  if sampler == "ddim":
    if logvar_coeff is not None:
      raise ValueError("logvar_coeff is a DDPM parameter")
    return ddim_sample(diffusion, model_fn, shape, seeds, eta=eta, **kwargs)
  raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
