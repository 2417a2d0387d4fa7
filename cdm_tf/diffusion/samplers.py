"""Sampling chains over a ``GaussianDiffusion`` and the loop that runs them.

``model_fn(x_t, time_input)`` returns the network output for a batch (wrap a
conditional model with ``guidance.guided_model_fn`` to bind labels, the
low-resolution image and the guidance weight). ``seeds`` is an int [B, 2]
tensor of per-example seeds (``per_example_noise.example_seeds``); all noise
is drawn per example from them, so a sample does not depend on its batch.

A chain (``create_chain``) is a fixed number of steps, each a pure function
``step(model_fn, state, k, seeds) -> state`` of a step counter k = 0 .. n-1:

* ``ddpm`` (ancestral, DDPM Algorithm 2) and ``ddim`` (eta) over every step
  of a process; to sample with fewer steps, pass a respaced process
  (``factory.create_diffusion(..., timestep_respacing="ddim32")``).
* ``dpmpp_2m``, ``dpmpp_3m``, ``dpmpp_2m_sde`` (``dpm_solver.py``): a
  number of network evaluations over the model's own training process.

``run_chain`` executes ``steps_per_call`` steps per compiled call, as a
``tf.while_loop`` inside one ``tf.function``, so a TPU or GPU host does not
wait on Python between steps; progress is reported after each call. With
``jit_compile`` the network evaluations inside the loop are compiled with
XLA, not the noise draws: XLA's stateless random numbers differ from the
TF kernels' for the same seed, and a sample must not depend on whether it
was compiled (under TPUStrategy everything is XLA, so TPU samples differ
from CPU/GPU ones in their noise).
"""

import math

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import dpm_solver
from cdm_tf.diffusion import per_example_noise

ANCESTRAL_SAMPLERS = ("ddpm", "ddim")
SAMPLERS = ANCESTRAL_SAMPLERS + tuple(sorted(dpm_solver.SOLVERS))


def is_solver(sampler):
  return sampler in dpm_solver.SOLVERS


def initial_noise(seeds, shape):
  """x_T ~ N(0, I) of per-example shape ``shape``, drawn from each seed."""
  return per_example_noise.per_example_normal(
      seeds, shape, per_example_noise.STREAM_INITIAL_NOISE)


def stop_index(diffusion, alpha_bar):
  """``stop_at`` for an ancestral chain to return x at level ``alpha_bar``.

  The chain stops after step index k and returns x at index k - 1, so the
  process needs a step with exactly this alpha-bar.
  """
  if alpha_bar is None or alpha_bar >= 1.0:
    return 0
  cumprod = diffusion.alphas_cumprod
  k = int(np.argmin(np.abs(cumprod - alpha_bar)))
  if not math.isclose(cumprod[k], alpha_bar, rel_tol=1e-6, abs_tol=1e-9):
    raise ValueError(
        f"the truncation level (alpha-bar {alpha_bar:.6g}) is not a step of "
        "the low-resolution sampling process, so its chain cannot stop "
        "there; use a respacing that keeps it, a solver (dpmpp_*: they stop "
        "at any level), or non-truncated augmentation")
  return k + 1


def ddpm_step(diffusion, model_fn, x, i, seeds, *, clip_denoised=True,
              dynamic_threshold_percentile=None, logvar_coeff=None):
  """One ancestral step from index ``i`` (a scalar int32 tensor) to i - 1."""
  t = tf.fill([tf.shape(x)[0]], i)
  output = model_fn(x, diffusion.model_time_input(t))
  noise = per_example_noise.per_example_normal(
      seeds, x.shape[1:], per_example_noise.STREAM_STEP_NOISE, i)
  x_prev, _ = diffusion.p_sample(
      output, x, t, noise, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile,
      logvar_coeff=logvar_coeff)
  return x_prev


def ddim_step(diffusion, model_fn, x, i, seeds, *, eta=0.0, clip_denoised=True,
              dynamic_threshold_percentile=None):
  """One DDIM step from index ``i`` to i - 1 (see ``ddpm_step``)."""
  t = tf.fill([tf.shape(x)[0]], i)
  output = model_fn(x, diffusion.model_time_input(t))
  noise = (per_example_noise.per_example_normal(
      seeds, x.shape[1:], per_example_noise.STREAM_STEP_NOISE, i)
           if eta > 0 else None)
  return diffusion.ddim_step(
      output, x, t, t - 1, eta=eta, noise=noise, clip_denoised=clip_denoised,
      dynamic_threshold_percentile=dynamic_threshold_percentile)


class AncestralChain:
  """DDPM or DDIM over the steps T-1 .. stop_at of ``diffusion``.

  ``stop_at = k > 0`` stops after step index k and returns x at the noise
  level of index k - 1 (truncated conditioning augmentation).
  """

  def __init__(self, diffusion, sampler="ddpm", eta=0.0, logvar_coeff=None,
               clip_denoised=True, dynamic_threshold_percentile=None,
               stop_at=0):
    if sampler not in ANCESTRAL_SAMPLERS:
      raise ValueError(f"unknown sampler {sampler!r}; expected one of "
                       f"{SAMPLERS}")
    if sampler == "ddpm" and eta:
      raise ValueError("eta is a DDIM parameter")
    if sampler == "ddim" and logvar_coeff is not None:
      raise ValueError("logvar_coeff is a DDPM parameter")
    if not 0 <= stop_at < diffusion.num_timesteps:
      raise ValueError(f"stop_at must be in [0, {diffusion.num_timesteps}), "
                       f"got {stop_at}")
    self.diffusion = diffusion
    self.sampler = sampler
    self.stop_at = int(stop_at)
    self.num_steps = diffusion.num_timesteps - self.stop_at
    common = dict(clip_denoised=clip_denoised,
                  dynamic_threshold_percentile=dynamic_threshold_percentile)
    if sampler == "ddpm":
      self._kwargs = dict(common, logvar_coeff=logvar_coeff)
    else:
      self._kwargs = dict(common, eta=eta)

  def initial_state(self, x_T):
    return {"x": tf.convert_to_tensor(x_T, tf.float32)}

  def step(self, model_fn, state, k, seeds):
    i = self.diffusion.num_timesteps - 1 - k
    step = ddpm_step if self.sampler == "ddpm" else ddim_step
    return {
        "x": step(self.diffusion, model_fn, state["x"], i, seeds,
                  **self._kwargs)
    }

  @staticmethod
  def result(state):
    return state["x"]


def create_chain(diffusion, sampler="ddpm", *, steps=None,
                 timestep_spacing=None, eta=0.0, logvar_coeff=None,
                 clip_denoised=True, dynamic_threshold_percentile=None,
                 stop_alpha_bar=None, stop_at=0):
  """The chain of ``sampler`` over ``diffusion``.

  Args:
    diffusion: ancestral samplers: the process to step through (respaced
      for fewer steps); solvers: the model's training process.
    sampler: one of ``SAMPLERS``.
    steps, timestep_spacing: solvers only: network evaluations and the
      spacing of their noise levels (``dpm_solver.TIMESTEP_SPACINGS``,
      default ``logsnr_uniform``).
    eta: DDIM only. logvar_coeff: DDPM only.
    stop_alpha_bar: stop at this noise level and return x there (truncated
      conditioning augmentation); None runs to the clean data.
    stop_at: ancestral samplers: the step index to stop after instead
      (``AncestralChain``).
  """
  common = dict(clip_denoised=clip_denoised,
                dynamic_threshold_percentile=dynamic_threshold_percentile)
  if is_solver(sampler):
    if eta or logvar_coeff is not None:
      raise ValueError(f"eta and logvar_coeff are DDIM / DDPM parameters, "
                       f"not {sampler}'s")
    if steps is None:
      raise ValueError(f"{sampler} needs a number of steps")
    if stop_at:
      raise ValueError("solvers stop at a noise level: pass stop_alpha_bar")
    return dpm_solver.DPMSolver(
        diffusion, steps, sampler, timestep_spacing=timestep_spacing or
        "logsnr_uniform", end_alpha_bar=stop_alpha_bar, **common)
  if steps is not None or timestep_spacing is not None:
    raise ValueError(f"steps and timestep_spacing are solver settings; "
                     f"{sampler} takes a respaced process "
                     "(timestep_respacing)")
  if stop_at and stop_alpha_bar is not None:
    raise ValueError("give stop_at or stop_alpha_bar, not both")
  return AncestralChain(
      diffusion, sampler, eta=eta, logvar_coeff=logvar_coeff, stop_at=stop_at or
      stop_index(diffusion, stop_alpha_bar), **common)


def compile_network(model_fn):
  """``model_fn`` with its network evaluation compiled by XLA (see the
  module docstring for why only the network)."""
  return tf.function(model_fn, jit_compile=True)


def chain_segment(chain, model_fn, state, start, stop, seeds):
  """Steps start .. stop - 1 of ``chain`` as one ``tf.while_loop``.

  Call inside a ``tf.function`` (the loop then stays on the device);
  ``start`` and ``stop`` are int32 scalar tensors, so one compiled function
  serves every segment.
  """

  def body(k, state):
    return k + 1, chain.step(model_fn, state, k, seeds)

  _, state = tf.while_loop(lambda k, _: k < stop, body, (start, state))
  return state


def segments(num_steps, steps_per_call):
  """(start, stop) of each compiled call; None runs the chain in one call."""
  size = num_steps if steps_per_call is None else int(steps_per_call)
  if size < 1:
    raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
  return [(s, min(s + size, num_steps)) for s in range(0, num_steps, size)]


def run_chain(chain, model_fn, seeds, x_T, *, steps_per_call=None,
              jit_compile=False, progress=None):
  """Runs ``chain`` from x_T; ``progress(done, total)`` after each call."""
  seeds = tf.convert_to_tensor(seeds)
  if jit_compile:
    model_fn = compile_network(model_fn)
  segment = tf.function(lambda state, start, stop: chain_segment(
      chain, model_fn, state, start, stop, seeds))
  state = chain.initial_state(x_T)
  for start, stop in segments(chain.num_steps, steps_per_call):
    state = segment(state, tf.constant(start, tf.int32),
                    tf.constant(stop, tf.int32))
    if progress is not None:
      progress(stop, chain.num_steps)
  return chain.result(state)


def sample(diffusion, model_fn, shape, seeds, sampler="ddpm", *, x_T=None,
           steps_per_call=None, jit_compile=False, progress=None,
           **chain_kwargs):
  """Samples ``shape``-shaped examples (per example, e.g. (64, 64, 3)).

  ``chain_kwargs`` go to ``create_chain`` (steps, eta, logvar_coeff,
  clip_denoised, stop_at, ...).
  """
  seeds = tf.convert_to_tensor(seeds)
  chain = create_chain(diffusion, sampler, **chain_kwargs)
  if x_T is None:
    x_T = initial_noise(seeds, shape)
  return run_chain(chain, model_fn, seeds, x_T, steps_per_call=steps_per_call,
                   jit_compile=jit_compile, progress=progress)


def ddpm_sample(diffusion, model_fn, shape, seeds, **kwargs):
  """Ancestral sampling with the model's variance type (see ``sample``)."""
  return sample(diffusion, model_fn, shape, seeds, sampler="ddpm", **kwargs)


def ddim_sample(diffusion, model_fn, shape, seeds, **kwargs):
  """DDIM sampling over every step of ``diffusion`` (Song et al. 2021)."""
  return sample(diffusion, model_fn, shape, seeds, sampler="ddim", **kwargs)
