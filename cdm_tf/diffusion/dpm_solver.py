"""DPM-Solver++ (Lu et al. 2022b): few-step solvers of the diffusion ODE/SDE.

With alpha_t = sqrt(alpha-bar), sigma_t = sqrt(1 - alpha-bar) and the
half log-SNR lambda_t = log(alpha_t / sigma_t), the probability-flow ODE in
terms of the data prediction x_theta (the network's x_0) has the exact
solution (DPM-Solver++ Eq. 9)

  x_t = sigma_t / sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t}
        e^lambda x_theta(lambda) d lambda.

The solvers approximate x_theta by a polynomial in lambda through the last
predictions, with h = lambda_t - lambda_s and r = h_prev / h:

* 1st order (= DDIM, eta 0): x_t = sigma_t/sigma_s x_s + alpha_t (1 - e^-h) m0.
* ``dpmpp_2m`` (Algorithm 2): m0 replaced by D = (1 + 1/2r) m0 - 1/2r m1.
* ``dpmpp_3m``: the integral of the quadratic through m0, m1, m2,
  alpha_t [phi1 m0 + phi2 D1 + 2 phi3 D2] with phi1 = 1 - e^-h,
  phi2 = (h - phi1) / h, phi3 = (h^2 / 2 - h + phi1) / h^2,
  D1 = h x_theta'(lambda_s) and D2 = h^2 x_theta'' / 2 from divided
  differences; exact when x_theta is quadratic in lambda.
* ``dpmpp_2m_sde`` (SDE-DPM-Solver++(2M)): the reverse SDE's solution,
  x_t = sigma_t/sigma_s e^-h x_s + alpha_t (1 - e^-2h) D + sigma_t
  sqrt(1 - e^-2h) z, with D as in 2M.

Every step is linear in (x, m0, m1, m2, z), so ``DPMSolver`` precomputes one
row of coefficients per step, in float64, from the chosen noise levels, and
a step is one fused expression over them. The first steps use the orders
their history allows; a step to the clean data (sigma = 0, h = inf) is
first order, x_0 = m0.

Noise levels (``timestep_spacing``): ``logsnr_uniform`` (uniform in
lambda, the DPM-Solver default), ``time_uniform`` (uniform in the training
step index) or ``karras`` (Karras et al. 2022: sigma / alpha spaced with
rho = 7). Continuous-noise models are told each level's log-SNR; a
timestep model is told the fractional training step of the level, with
log alpha-bar linear between steps (as DPM-Solver does for discrete-time
models). The chain starts at the noisiest training step and ends at the
clean data, or at ``end_alpha_bar`` (truncated conditioning augmentation
hands z_s over to the next stage).

Thresholding (static or dynamic) is applied to every data prediction, as
DPM-Solver++ was designed for guided sampling.
"""

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import thresholding

# sampler name -> (order, stochastic)
SOLVERS = {
    "dpmpp_2m": (2, False), "dpmpp_3m": (3, False), "dpmpp_2m_sde": (2, True)
}
TIMESTEP_SPACINGS = ("logsnr_uniform", "time_uniform", "karras")
KARRAS_RHO = 7.0


def _half_log_snr(alpha_bar, one_minus_alpha_bar):
  return 0.5 * (np.log(alpha_bar) - np.log(one_minus_alpha_bar))


def _alpha_bar_from_half_log_snr(lam):
  """(alpha-bar, 1 - alpha-bar) = (sigmoid(2 lambda), sigmoid(-2 lambda))."""
  lam = np.asarray(lam, np.float64)
  return 1.0 / (1.0 + np.exp(-2.0 * lam)), 1.0 / (1.0 + np.exp(2.0 * lam))


def _spaced_half_log_snrs(spacing, count, lam_start, lam_end,
                          lambda_at_fraction):
  """``count`` levels in lambda, from lam_start to lam_end inclusive.

  ``lambda_at_fraction(f)`` is lambda a fraction f in [0, 1] of the way from
  the first to the last level in training time (time-uniform spacing).
  """
  if count == 1:
    return np.array([lam_start])
  if spacing == "logsnr_uniform":
    return np.linspace(lam_start, lam_end, count)
  if spacing == "karras":
    # sigma_edm = sigma / alpha = e^-lambda, spaced uniformly in its 1/rho
    # power.
    inv_rho = 1.0 / KARRAS_RHO
    ramp = np.linspace(0.0, 1.0, count)
    root = (np.exp(-lam_start)**inv_rho + ramp *
            (np.exp(-lam_end)**inv_rho - np.exp(-lam_start)**inv_rho))
    return -KARRAS_RHO * np.log(root)
  if spacing == "time_uniform":
    return lambda_at_fraction(np.linspace(0.0, 1.0, count))
  raise ValueError(f"unknown timestep_spacing {spacing!r}; expected one of "
                   f"{TIMESTEP_SPACINGS}")


class DPMSolver:
  """One DPM-Solver++ chain over a model's noise levels.

  Args:
    diffusion: the ``GaussianDiffusion`` the model was trained with (its
      steps are the levels a timestep model knows).
    num_steps: network evaluations (per guidance branch) of the chain.
    sampler: one of ``SOLVERS``.
    timestep_spacing: one of ``TIMESTEP_SPACINGS``.
    end_alpha_bar: stop at this noise level and return x there (truncated
      conditioning augmentation); None: the clean data.
    clip_denoised, dynamic_threshold_percentile: thresholding of every data
      prediction (``thresholding.apply_threshold``).
    order: override the sampler's order (1 gives DDIM with eta = 0).

  Attributes (float64 arrays, one row per step k = 0 .. num_steps - 1,
  level k -> level k + 1): ``alphas_cumprod`` / ``one_minus_alphas_cumprod``
  [num_steps + 1] of the levels, ``half_log_snrs`` lambda_k, ``orders``, the
  step coefficients ``coef_x``, ``coef_m0``, ``coef_m1``, ``coef_m2``,
  ``noise_std``, and per evaluated level ``time_inputs`` (the network's),
  ``recip_alphas`` 1/alpha_k and ``sigmas_over_alphas`` sigma_k/alpha_k;
  ``positions``, the fractional training step of each level of a timestep
  model (None for continuous-noise models).
  """

  def __init__(self, diffusion, num_steps, sampler="dpmpp_2m",
               timestep_spacing="logsnr_uniform", end_alpha_bar=None,
               clip_denoised=True, dynamic_threshold_percentile=None,
               order=None):
    if sampler not in SOLVERS:
      raise ValueError(f"unknown solver {sampler!r}; expected one of "
                       f"{sorted(SOLVERS)}")
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
      raise ValueError(f"a solver needs num_steps >= 1, got {num_steps!r}")
    if timestep_spacing not in TIMESTEP_SPACINGS:
      raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; "
                       f"expected one of {TIMESTEP_SPACINGS}")
    self.sampler = sampler
    self.max_order, self.stochastic = SOLVERS[sampler]
    if order is not None:
      if self.stochastic or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3 for an ODE solver, got "
                         f"{order!r}")
      self.max_order = int(order)
    self.num_steps = int(num_steps)
    self.timestep_spacing = timestep_spacing
    self.clip_denoised = clip_denoised
    self.dynamic_threshold_percentile = dynamic_threshold_percentile
    self.learned_variance = diffusion.model_var_type == "learned_range"
    self._choose_levels(diffusion, end_alpha_bar)
    self._step_coefficients()

  # -- noise levels -------------------------------------------------------

  def _choose_levels(self, diffusion, end_alpha_bar):
    last = diffusion.num_timesteps - 1
    steps = np.arange(last + 1)
    log_ab = np.log(diffusion.alphas_cumprod)
    lams = _half_log_snr(diffusion.alphas_cumprod,
                         diffusion.one_minus_alphas_cumprod)
    to_clean = end_alpha_bar is None or end_alpha_bar >= 1.0
    if to_clean:
      lam_end = lams[0]
      count = self.num_steps  # evaluated levels; the clean data follows
    else:
      if not 0.0 < end_alpha_bar < 1.0:
        raise ValueError(f"end_alpha_bar must be in (0, 1], got "
                         f"{end_alpha_bar}")
      lam_end = float(_half_log_snr(end_alpha_bar, 1.0 - end_alpha_bar))
      count = self.num_steps + 1  # the end level is not evaluated
    if lam_end <= lams[last]:
      raise ValueError("the chain's end level is as noisy as its start")
    # Fractional training positions p in [0, T - 1] (log alpha-bar linear in
    # p between steps) relate lambda, time-uniform spacing and the time input
    # of timestep models.
    end_position = float(np.interp(-lam_end, -lams, steps))

    def position_to_lambda(p):
      log_a = np.interp(p, steps, log_ab)
      return _half_log_snr(np.exp(log_a), -np.expm1(log_a))

    targets = _spaced_half_log_snrs(
        self.timestep_spacing, count, lams[last], lam_end,
        lambda f: position_to_lambda(last + f * (end_position - last)))
    alpha_bar, one_minus = _alpha_bar_from_half_log_snr(targets)
    if not to_clean:  # the hand-over level exactly, not via lambda
      alpha_bar[-1], one_minus[-1] = end_alpha_bar, 1.0 - end_alpha_bar
    evaluated = slice(0, self.num_steps)
    if diffusion.noise_conditioning == "continuous":
      self.positions = None
      time_inputs = noise_conditioning.noise_level_input(
          tf.constant(alpha_bar[evaluated], tf.float32),
          tf.constant(one_minus[evaluated], tf.float32))
    else:
      # Between two training steps the network is told the fractional step
      # (as DPM-Solver does for discrete-time models); respaced processes
      # map positions to their original steps.
      self.positions = np.interp(-np.log(alpha_bar), -log_ab, steps)
      original = np.interp(self.positions, steps, diffusion.timestep_map)
      time_inputs = noise_conditioning.timestep_input(
          tf.constant(original[evaluated], tf.float32),
          diffusion.original_num_timesteps)
    if to_clean:
      alpha_bar = np.append(alpha_bar, 1.0)
      one_minus = np.append(one_minus, 0.0)
    self.alphas_cumprod = alpha_bar
    self.one_minus_alphas_cumprod = one_minus
    self.time_inputs = np.asarray(time_inputs, np.float32)
    self.ends_clean = to_clean

  # -- step coefficients --------------------------------------------------

  def _step_coefficients(self):
    n = self.num_steps
    alphas = np.sqrt(self.alphas_cumprod)
    sigmas = np.sqrt(self.one_minus_alphas_cumprod)
    with np.errstate(divide="ignore"):
      lams = _half_log_snr(self.alphas_cumprod, self.one_minus_alphas_cumprod)
    self.half_log_snrs = lams
    self.recip_alphas = 1.0 / alphas[:n]
    self.sigmas_over_alphas = sigmas[:n] / alphas[:n]
    self.orders = np.zeros(n, np.int64)
    coefs = np.zeros((n, 5))  # x, m0, m1, m2, noise std
    h = np.diff(lams)
    for k in range(n):
      if sigmas[k + 1] == 0.0:  # to the clean data: x_0 = m0
        self.orders[k] = 1
        coefs[k] = (0.0, 1.0, 0.0, 0.0, 0.0)
        continue
      order = min(self.max_order, k + 1)
      self.orders[k] = order
      alpha_t, hk = alphas[k + 1], h[k]
      if self.stochastic:
        coef_x = sigmas[k + 1] / sigmas[k] * np.exp(-hk)
        phi1 = -np.expm1(-2.0 * hk)
        noise = sigmas[k + 1] * np.sqrt(phi1)
      else:
        coef_x = sigmas[k + 1] / sigmas[k]
        phi1 = -np.expm1(-hk)
        noise = 0.0
      if order == 1:
        m = (phi1, 0.0, 0.0)
      elif order == 2:
        r = h[k - 1] / hk
        m = (phi1 * (1.0 + 0.5 / r), -phi1 * 0.5 / r, 0.0)
      else:
        r0, r1 = h[k - 1] / hk, h[k - 2] / hk
        phi2 = (hk - phi1) / hk
        phi3 = (0.5 * hk * hk - hk + phi1) / (hk * hk)
        d1_0 = np.array([1.0, -1.0, 0.0]) / r0
        d1_1 = np.array([0.0, 1.0, -1.0]) / r1
        d2 = (d1_0 - d1_1) / (r0 + r1)
        d1 = d1_0 + r0 * d2
        m = tuple(phi1 * np.array([1.0, 0.0, 0.0]) + phi2 * d1 +
                  2.0 * phi3 * d2)
      coefs[k] = (coef_x, alpha_t * m[0], alpha_t * m[1], alpha_t * m[2], noise)
    (self.coef_x, self.coef_m0, self.coef_m1, self.coef_m2,
     self.noise_std) = (coefs[:, j] for j in range(5))

  # -- the chain ----------------------------------------------------------

  def initial_state(self, x_T):
    """State at the first (noisiest) level: x and the prediction history."""
    x_T = tf.convert_to_tensor(x_T, tf.float32)
    zeros = tf.zeros_like(x_T)
    return {"x": x_T, "m1": zeros, "m2": zeros}

  def step(self, model_fn, state, k, seeds):
    """Step k (an int32 scalar tensor): level k -> level k + 1."""
    x = state["x"]

    def at(values):
      return tf.gather(tf.constant(values, tf.float32), k)

    time_input = tf.fill([tf.shape(x)[0]], at(self.time_inputs))
    output = tf.cast(model_fn(x, time_input), tf.float32)
    eps = tf.split(output, 2, axis=-1)[0] if self.learned_variance else output
    m0 = thresholding.apply_threshold(
        at(self.recip_alphas) * x - at(self.sigmas_over_alphas) * eps,
        self.clip_denoised, self.dynamic_threshold_percentile)
    x_next = (at(self.coef_x) * x + at(self.coef_m0) * m0 +
              at(self.coef_m1) * state["m1"] + at(self.coef_m2) * state["m2"])
    if self.stochastic:
      noise = per_example_noise.per_example_normal(
          seeds, x.shape[1:], per_example_noise.STREAM_STEP_NOISE, k)
      x_next += at(self.noise_std) * noise
    return {"x": x_next, "m1": m0, "m2": state["m1"]}

  @staticmethod
  def result(state):
    return state["x"]
