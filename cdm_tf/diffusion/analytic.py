"""A data distribution whose optimal denoiser is known in closed form.

For x_0 ~ N(mu, sigma^2) (independent dimensions) and
x_t = sqrt(a) x_0 + sqrt(1 - a) eps, with a = alpha-bar, the minimum-MSE
epsilon prediction is

  E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a sigma^2 + 1 - a).

A sampler driven by this "perfect network" must return samples with mean mu
and standard deviation sigma, which checks the sampling arithmetic end to end
without training anything. The probability-flow ODE is known exactly too
(``GaussianData.ode_solution``), so a deterministic solver's error can be
measured against it and must shrink as N^-order with N steps.
"""

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import dpm_solver
from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers
from cdm_tf.diffusion.factory import create_diffusion


class GaussianData:

  def __init__(self, mean, std):
    self.mean = float(mean)
    self.std = float(std)

  def optimal_eps(self, x_t, alpha_bar, one_minus_alpha_bar):
    return (tf.sqrt(one_minus_alpha_bar) *
            (x_t - tf.sqrt(alpha_bar) * self.mean) /
            (alpha_bar * self.std**2 + one_minus_alpha_bar))

  def model_fn(self, diffusion):
    """A ``model_fn(x_t, time_input)`` returning the optimal epsilon.

    Like a network, it only sees the time input: a timestep model's input
    is looked up among the process's steps; a continuous-noise model's is
    its (clipped) log-SNR, inverted exactly, so any noise level works.
    """
    alpha_bar_of = (_continuous_alpha_bar if diffusion.noise_conditioning
                    == "continuous" else _timestep_alpha_bar(diffusion))

    def fn(x_t, time_input):
      alpha_bar, one_minus = alpha_bar_of(time_input)
      shape = [-1] + [1] * (len(x_t.shape) - 1)
      eps = self.optimal_eps(x_t, tf.reshape(alpha_bar, shape),
                             tf.reshape(one_minus, shape))
      if diffusion.model_var_type == "learned_range":
        # v = -1: the lower variance bound.
        eps = tf.concat([eps, -tf.ones_like(eps)], axis=-1)
      return eps

    return fn

  def ode_solution(self, x_T, alpha_bar_T, alpha_bar):
    """Where the probability-flow ODE takes x_T (at alpha_bar_T) at level
    ``alpha_bar``: the marginals are N(sqrt(a) mu, a sigma^2 + 1 - a), and
    the ODE's map between two of them is the affine one that keeps each
    point's standard score."""

    def scale(a):
      return np.sqrt(a * self.std**2 + 1.0 - a)

    score = (np.asarray(x_T, np.float64) -
             np.sqrt(alpha_bar_T) * self.mean) / scale(alpha_bar_T)
    return np.sqrt(alpha_bar) * self.mean + scale(alpha_bar) * score


def _continuous_alpha_bar(time_input):
  snr = noise_conditioning.LOG_SNR_MAX - (
      tf.cast(time_input, tf.float32) / noise_conditioning.TIME_INPUT_SCALE *
      (noise_conditioning.LOG_SNR_MAX - noise_conditioning.LOG_SNR_MIN))
  return tf.sigmoid(snr), tf.sigmoid(-snr)


def _timestep_alpha_bar(diffusion):
  """Inverts a timestep model's input: the process's steps, and between two
  of them log alpha-bar linear in the (fractional) step, as solvers place
  their levels."""
  num = diffusion.num_timesteps
  inputs = tf.constant(
      diffusion.model_time_input(tf.range(num)).numpy(),
      tf.float32)  # increasing with the step
  log_ab = tf.constant(np.log(diffusion.alphas_cumprod), tf.float32)

  def lookup(time_input):
    time_input = tf.cast(time_input, tf.float32)
    low = tf.clip_by_value(
        tf.searchsorted(inputs, time_input, side="right") - 1, 0,
        max(num - 2, 0))
    high = tf.minimum(low + 1, num - 1)
    width = tf.gather(inputs, high) - tf.gather(inputs, low)
    frac = tf.clip_by_value(
        tf.math.divide_no_nan(time_input - tf.gather(inputs, low), width), 0.0,
        1.0)
    log_a = tf.gather(
        log_ab, low) + frac * (tf.gather(log_ab, high) - tf.gather(log_ab, low))
    return tf.exp(log_a), -tf.math.expm1(log_a)

  return lookup


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


_SAMPLER_KEYS = ("sampler", "eta", "logvar_coeff", "steps", "timestep_spacing")


def moment_report(settings, data_mean=0.3, data_std=0.5, num_samples=64,
                  dims=256, seed=0, tolerance=0.03, progress=None):
  """Runs each sampler setting against the optimal model of GaussianData.

  Args:
    settings: list of dicts; keys ``schedule``, ``num_timesteps``,
      ``timestep_respacing``, ``model_var_type``, ``noise_conditioning`` go to
      ``create_diffusion``; ``sampler``, ``eta``, ``logvar_coeff``,
      ``steps``, ``timestep_spacing`` to the sampler.
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
    unknown = set(setting) - set(diffusion_keys) - set(_SAMPLER_KEYS)
    if unknown:
      raise ValueError(f"unknown sampler-check setting keys {sorted(unknown)}")
    diffusion = create_diffusion(
        **{k: setting[k] for k in diffusion_keys if k in setting})
    sampler_kwargs = {k: setting[k] for k in _SAMPLER_KEYS if k in setting}
    mean, std = sample_moments(diffusion, data, num_samples, dims, seed,
                               **sampler_kwargs)
    row = dict(setting, steps=setting.get("steps",
                                          diffusion.num_timesteps), mean=mean,
               std=std, mean_error=mean - data.mean, std_error=std - data.std)
    row["ok"] = bool(
        abs(row["mean_error"]) <= tolerance and
        abs(row["std_error"]) <= tolerance)
    rows.append(row)
    if progress is not None:
      progress(row)
  return rows


def ode_errors(diffusion, data, sampler, steps, end_alpha_bar=0.9,
               num_samples=16, dims=64, seed=0, timestep_spacing=None,
               order=None):
  """Max |x - exact| of a deterministic solver at each of ``steps``.

  Every chain starts from the same x_T and stops at ``end_alpha_bar``,
  where the probability-flow ODE's exact value is known
  (``GaussianData.ode_solution``); stopping short of the clean data keeps
  the solver's own error apart from the final denoising step's.
  """
  seeds = per_example_noise.example_seeds(tf.range(num_samples), seed)
  x_T = samplers.initial_noise(seeds, (dims,))
  model_fn = data.model_fn(diffusion)
  errors = []
  for n in steps:
    chain = dpm_solver.DPMSolver(
        diffusion, int(n), sampler, timestep_spacing=timestep_spacing or
        "logsnr_uniform", end_alpha_bar=end_alpha_bar, clip_denoised=False,
        order=order)
    x = samplers.run_chain(chain, model_fn, seeds, x_T).numpy()
    exact = data.ode_solution(x_T.numpy(), chain.alphas_cumprod[0],
                              end_alpha_bar)
    errors.append(float(np.abs(x - exact).max()))
  return errors


def observed_orders(steps, errors):
  """log(e_i / e_{i+1}) / log(n_{i+1} / n_i) between successive step counts:
  p where the error shrinks as N^-p."""
  steps, errors = np.asarray(steps, np.float64), np.asarray(errors)
  return (np.log(errors[:-1] / errors[1:]) /
          np.log(steps[1:] / steps[:-1])).tolist()


# DDIM (the solver at order 1), DPM-Solver++(2M) and (3M), each with the
# order its update equation has.
DEFAULT_CONVERGENCE_SETTINGS = (
    {"sampler": "dpmpp_2m", "solver_order": 1, "order": 1},
    {"sampler": "dpmpp_2m", "order": 2},
    {"sampler": "dpmpp_3m", "order": 3},
)


def convergence_report(solvers=DEFAULT_CONVERGENCE_SETTINGS,
                       steps=(10, 20, 40, 80), schedule="linear",
                       num_timesteps=1000, data_mean=0.3, data_std=0.5,
                       end_alpha_bar=0.9, slack=0.3, progress=None):
  """The order at which each ODE solver's error shrinks with its steps.

  Args:
    solvers: list of dicts with ``sampler`` (an ODE solver of
      ``dpm_solver.SOLVERS``), the ``order`` it must reach and optionally
      ``timestep_spacing`` and ``solver_order`` (an order override: 1 is
      DDIM).
    steps: increasing step counts.
    slack: a solver passes when the order observed between its two largest
      step counts is at least ``order - slack``.
  Returns:
    One row per solver: the setting, ``steps``, ``errors``, ``orders``,
    ``ok``.
  """
  diffusion = create_diffusion(schedule, num_timesteps,
                               noise_conditioning="continuous")
  data = GaussianData(data_mean, data_std)
  rows = []
  for setting in solvers:
    setting = dict(setting)
    unknown = set(setting) - {
        "sampler", "order", "timestep_spacing", "solver_order"
    }
    if unknown or "sampler" not in setting or "order" not in setting:
      raise ValueError(f"a convergence setting needs sampler and order "
                       f"(optionally timestep_spacing, solver_order); got "
                       f"{sorted(setting)}")
    errors = ode_errors(diffusion, data, setting["sampler"], steps,
                        end_alpha_bar, order=setting.get("solver_order"),
                        timestep_spacing=setting.get("timestep_spacing"))
    orders = observed_orders(steps, errors)
    row = dict(setting, steps=list(steps), errors=errors, orders=orders,
               ok=bool(orders[-1] >= setting["order"] - slack))
    rows.append(row)
    if progress is not None:
      progress(row)
  return rows
