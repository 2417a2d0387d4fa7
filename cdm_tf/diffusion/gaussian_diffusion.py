"""The Gaussian diffusion process: schedule arithmetic, posteriors, losses.

Notation follows CDM Section 2 (and DDPM / Improved DDPM). Arrays are indexed
by ``t`` in 0..T-1, where index ``t`` holds the paper's step ``t + 1``; so
``alphas_cumprod[t]`` is alpha-bar_{t+1} and ``alphas_cumprod_prev[t]`` is
alpha-bar_t (1 at index 0). All schedule quantities are computed once, in
float64, at construction; the tensor methods gather them as float32.

Model outputs are channels-last. ``model_output`` has C channels (epsilon) for
``fixed_small`` / ``fixed_large`` and 2C channels (epsilon, then the variance
interpolation value v in [-1, 1]) for ``learned_range``.
"""

import math

import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import likelihood
from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import thresholding
from cdm_tf.diffusion.noise_conditioning import NOISE_CONDITIONING_TYPES

MODEL_VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("simple", "hybrid")
# Improved DDPM's lambda: weights the variational bound inside the hybrid loss.
HYBRID_VB_WEIGHT = 0.001


class GaussianDiffusion:
  """Owns a beta schedule and everything derived from it.

  Args:
    betas: 1-D array of betas in (0, 1], one per step.
    model_var_type: ``fixed_small`` (posterior variance beta-tilde_t, the
      lower bound), ``fixed_large`` (beta_t, the upper bound) or
      ``learned_range`` (network interpolates log beta_t and log beta-tilde_t).
    loss_type: ``simple`` (epsilon MSE) or ``hybrid`` (simple + lambda * VB,
      needs ``learned_range``).
    noise_conditioning: ``timestep`` or ``continuous``; see
      ``noise_conditioning.py``.
    timestep_map: for a respaced process, the original step index of each
      step (set by ``respace.SpacedDiffusion``).
    original_num_timesteps: number of steps of the process the model was
      trained with (defaults to ``len(betas)``).
    hybrid_vb_weight: lambda of the hybrid loss.
  """

  def __init__(self, betas, model_var_type="fixed_small", loss_type="simple",
               noise_conditioning="timestep", timestep_map=None,
               original_num_timesteps=None, hybrid_vb_weight=HYBRID_VB_WEIGHT):
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
      raise ValueError(f"betas must be a non-empty 1-D array, got shape "
                       f"{betas.shape}")
    if not np.all((betas > 0) & (betas <= 1)):
      raise ValueError("betas must lie in (0, 1]")
    if model_var_type not in MODEL_VAR_TYPES:
      raise ValueError(f"unknown model_var_type {model_var_type!r}; expected "
                       f"one of {MODEL_VAR_TYPES}")
    if loss_type not in LOSS_TYPES:
      raise ValueError(f"unknown loss_type {loss_type!r}; expected one of "
                       f"{LOSS_TYPES}")
    if noise_conditioning not in NOISE_CONDITIONING_TYPES:
      raise ValueError(f"unknown noise_conditioning {noise_conditioning!r}; "
                       f"expected one of {NOISE_CONDITIONING_TYPES}")
    if loss_type == "hybrid" and model_var_type != "learned_range":
      raise ValueError(
          "the hybrid loss trains learned variances; it needs "
          f"model_var_type='learned_range', got {model_var_type!r}")
    if loss_type == "hybrid" and noise_conditioning == "continuous":
      raise ValueError("the hybrid loss's variational bound is defined on the "
                       "discrete steps; use loss_type='simple' with continuous "
                       "noise conditioning (as CDM's continuous models do)")

    self.model_var_type = model_var_type
    self.loss_type = loss_type
    self.noise_conditioning = noise_conditioning
    self.hybrid_vb_weight = float(hybrid_vb_weight)
    self.num_timesteps = int(betas.shape[0])
    self.timestep_map = (np.arange(self.num_timesteps) if timestep_map is None
                         else np.asarray(timestep_map, dtype=np.int64))
    if self.timestep_map.shape != (self.num_timesteps,):
      raise ValueError("timestep_map needs one entry per step")
    self.original_num_timesteps = int(original_num_timesteps or
                                      self.num_timesteps)

    # Forward process
    # q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
    self.betas = betas
    self.log_betas = np.log(betas)
    self.alphas = 1.0 - betas
    self.alphas_cumprod = np.cumprod(self.alphas)
    self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
    self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
    self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
    # 1 - alpha_bar accumulated as 1 - prod(1 - beta) loses digits when
    # alpha_bar ~ 1; expm1(sum(log1p(-beta))) keeps them.
    self.one_minus_alphas_cumprod = -np.expm1(np.cumsum(np.log1p(-betas)))
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod)
    self.log_one_minus_alphas_cumprod = np.log(self.one_minus_alphas_cumprod)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod /
                                               self.alphas_cumprod)

    # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta-tilde_t).
    one_minus_prev = np.append(0.0, self.one_minus_alphas_cumprod[:-1])
    self.posterior_variance = (betas * one_minus_prev /
                               self.one_minus_alphas_cumprod)
    # beta-tilde_1 = 0; its log is clipped to beta-tilde_2 (Improved DDPM).
    self.posterior_log_variance_clipped = np.log(
        np.append(
            self.posterior_variance[1] if self.num_timesteps > 1 else betas[0],
            self.posterior_variance[1:]))
    self.posterior_mean_coef1 = (betas * np.sqrt(self.alphas_cumprod_prev) /
                                 self.one_minus_alphas_cumprod)
    self.posterior_mean_coef2 = (one_minus_prev * np.sqrt(self.alphas) /
                                 self.one_minus_alphas_cumprod)
    # fixed_large: beta_t, except beta-tilde_2 at t = 1 for a usable decoder.
    self.fixed_large_log_variance = np.log(
        np.append(
            self.posterior_variance[1] if self.num_timesteps > 1 else betas[0],
            betas[1:]))

  # -- gathering ----------------------------------------------------------

  @staticmethod
  def _gather(array, t, ndim):
    """array[t] as float32, shaped [B, 1, ..., 1] to broadcast over x."""
    values = tf.gather(tf.constant(array, dtype=tf.float32), t)
    return tf.reshape(values, [-1] + [1] * (ndim - 1))

  # -- forward process ----------------------------------------------------

  def q_mean_variance(self, x_start, t):
    nd = len(x_start.shape)
    mean = self._gather(self.sqrt_alphas_cumprod, t, nd) * x_start
    variance = self._gather(self.one_minus_alphas_cumprod, t, nd)
    log_variance = self._gather(self.log_one_minus_alphas_cumprod, t, nd)
    return mean, variance, log_variance

  def q_sample(self, x_start, t, noise):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    nd = len(x_start.shape)
    return (self._gather(self.sqrt_alphas_cumprod, t, nd) * x_start +
            self._gather(self.sqrt_one_minus_alphas_cumprod, t, nd) * noise)

  def q_posterior_mean_variance(self, x_start, x_t, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
    nd = len(x_t.shape)
    mean = (self._gather(self.posterior_mean_coef1, t, nd) * x_start +
            self._gather(self.posterior_mean_coef2, t, nd) * x_t)
    variance = self._gather(self.posterior_variance, t, nd)
    log_variance = self._gather(self.posterior_log_variance_clipped, t, nd)
    return mean, variance, log_variance

  # -- epsilon <-> x_0 ----------------------------------------------------

  def predict_xstart_from_eps(self, x_t, t, eps):
    nd = len(x_t.shape)
    return (self._gather(self.sqrt_recip_alphas_cumprod, t, nd) * x_t -
            self._gather(self.sqrt_recipm1_alphas_cumprod, t, nd) * eps)

  def predict_eps_from_xstart(self, x_t, t, pred_xstart):
    nd = len(x_t.shape)
    return ((self._gather(self.sqrt_recip_alphas_cumprod, t, nd) * x_t -
             pred_xstart) /
            self._gather(self.sqrt_recipm1_alphas_cumprod, t, nd))

  # -- what the network sees ----------------------------------------------

  def model_time_input(self, t):
    """Float32 [B] time input for the network at step indices t."""
    if self.noise_conditioning == "continuous":
      return noise_conditioning.noise_level_input(
          tf.gather(tf.constant(self.alphas_cumprod, tf.float32), t),
          tf.gather(tf.constant(self.one_minus_alphas_cumprod, tf.float32), t))
    original = tf.gather(tf.constant(self.timestep_map, tf.int64), t)
    return noise_conditioning.timestep_input(original,
                                             self.original_num_timesteps)

  def training_inputs(self, x_start, t, noise, u=None):
    """Noisy input and network time input for a training example.

    For continuous noise conditioning, ``u`` in [0, 1) places alpha-bar
    uniformly inside step t (SR3); otherwise it is ignored.
    Returns (x_t, time_input).
    """
    if self.noise_conditioning != "continuous":
      return self.q_sample(x_start, t, noise), self.model_time_input(t)
    if u is None:
      raise ValueError("continuous noise conditioning needs u ~ U[0, 1)")
    alpha_bar, one_minus = noise_conditioning.piecewise_uniform_alpha_bar(
        self.alphas_cumprod, t, u)
    shape = [-1] + [1] * (len(x_start.shape) - 1)
    x_t = (tf.reshape(tf.sqrt(alpha_bar), shape) * x_start +
           tf.reshape(tf.sqrt(one_minus), shape) * noise)
    return x_t, noise_conditioning.noise_level_input(alpha_bar, one_minus)

  # -- reverse process ----------------------------------------------------

  def _split_output(self, model_output):
    model_output = tf.cast(model_output, tf.float32)
    if self.model_var_type == "learned_range":
      eps, var_values = tf.split(model_output, 2, axis=-1)
      return eps, var_values
    return model_output, None

  def model_log_variance(self, t, ndim, var_values=None, logvar_coeff=None):
    """log Sigma_theta(x_t, t) for the configured variance type.

    With ``learned_range`` the network's v in [-1, 1] gives
    frac = (v + 1) / 2 and log Sigma = frac log beta_t + (1 - frac) log
    beta-tilde_t (Improved DDPM Eq. 15). ``logvar_coeff`` applies the same
    interpolation with a fixed frac (Azizi et al.'s log-variance mixing
    coefficient; 0.0 is the lower bound beta-tilde_t, 1.0 the upper beta_t)
    to models without learned variances.
    """
    min_log = self._gather(self.posterior_log_variance_clipped, t, ndim)
    max_log = self._gather(self.log_betas, t, ndim)
    if self.model_var_type == "learned_range":
      if logvar_coeff is not None:
        raise ValueError("logvar_coeff is for models without learned "
                         "variances; this model predicts its own")
      frac = (var_values + 1.0) / 2.0
      return frac * max_log + (1.0 - frac) * min_log
    if logvar_coeff is not None:
      if not 0.0 <= logvar_coeff <= 1.0:
        raise ValueError(f"logvar_coeff must be in [0, 1], got {logvar_coeff}")
      return logvar_coeff * max_log + (1.0 - logvar_coeff) * min_log
    if self.model_var_type == "fixed_small":
      return min_log
    return self._gather(self.fixed_large_log_variance, t, ndim)

  def p_mean_variance(self, model_output, x_t, t, clip_denoised=True,
                      logvar_coeff=None, dynamic_threshold_percentile=None):
    """Parameters of p(x_{t-1} | x_t) from an epsilon-prediction output.

    The predicted x_0 is thresholded (static clip to [-1, 1] if
    ``clip_denoised``, or Imagen's dynamic thresholding if a percentile is
    given) and the mean is the posterior mean given that x_0; without
    thresholding this equals CDM's mu_theta = (x_t - beta_t / sqrt(1 -
    alpha_bar_t) eps) / sqrt(alpha_t).

    Returns a dict with ``mean``, ``variance``, ``log_variance``,
    ``pred_xstart`` and ``eps`` (the raw network epsilon).
    """
    nd = len(x_t.shape)
    eps, var_values = self._split_output(model_output)
    log_variance = self.model_log_variance(t, nd, var_values, logvar_coeff)
    pred_xstart = thresholding.apply_threshold(
        self.predict_xstart_from_eps(x_t, t, eps), clip_denoised,
        dynamic_threshold_percentile)
    mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
    return {
        "mean": mean,
        "variance": tf.exp(log_variance),
        "log_variance": log_variance,
        "pred_xstart": pred_xstart,
        "eps": eps,
    }

  def p_sample(self, model_output, x_t, t, noise, **threshold_and_var_kwargs):
    """One ancestral step x_t -> x_{t-1}; no noise is added at the last step."""
    out = self.p_mean_variance(model_output, x_t, t, **threshold_and_var_kwargs)
    nonzero = tf.reshape(tf.cast(t > 0, tf.float32),
                         [-1] + [1] * (len(x_t.shape) - 1))
    sample = out["mean"] + nonzero * tf.exp(0.5 * out["log_variance"]) * noise
    return sample, out["pred_xstart"]

  def ddim_step(self, model_output, x_t, t, t_prev, eta=0.0, noise=None,
                clip_denoised=True, dynamic_threshold_percentile=None):
    """One DDIM step (Song et al. 2021, Eq. 12) from step t to step t_prev.

    ``t_prev`` may skip steps; ``t_prev = -1`` means the clean data, where
    alpha-bar is 1. ``eta = 0`` is deterministic; ``eta = 1`` with
    consecutive steps matches the ancestral sampler with fixed_small
    variances. Returns x_{t_prev}.
    """
    nd = len(x_t.shape)
    eps, _ = self._split_output(model_output)
    pred_xstart = thresholding.apply_threshold(
        self.predict_xstart_from_eps(x_t, t, eps), clip_denoised,
        dynamic_threshold_percentile)
    # Re-derive epsilon so that it agrees with the thresholded x_0.
    eps = self.predict_eps_from_xstart(x_t, t, pred_xstart)
    alpha_bar = self._gather(self.alphas_cumprod, t, nd)
    alpha_bar_prev = self._gather(np.append(1.0, self.alphas_cumprod),
                                  t_prev + 1, nd)
    sigma = (eta * tf.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) *
             tf.sqrt(1.0 - alpha_bar / alpha_bar_prev))
    x_prev = (tf.sqrt(alpha_bar_prev) * pred_xstart +
              tf.sqrt(tf.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps)
    if eta > 0:
      if noise is None:
        raise ValueError("ddim_step with eta > 0 needs noise")
      x_prev = x_prev + sigma * noise
    return x_prev

  # -- losses -------------------------------------------------------------

  def vb_terms_bpd(self, model_output, x_start, x_t, t):
    """Per-example term L_{t} of the variational bound, in bits per dim.

    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0 and the
    discretized Gaussian decoder NLL -log p(x_0 | x_1) at t = 0.
    """
    true_mean, _, true_log_variance = self.q_posterior_mean_variance(
        x_start, x_t, t)
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
    kl = likelihood.mean_over_nonbatch(
        likelihood.normal_kl(true_mean, true_log_variance, out["mean"],
                             out["log_variance"]))
    decoder_nll = -likelihood.mean_over_nonbatch(
        likelihood.discretized_gaussian_log_likelihood(
            x_start, out["mean"], 0.5 * out["log_variance"]))
    return tf.where(t == 0, decoder_nll, kl) / math.log(2.0)

  def prior_bpd(self, x_start):
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dim; no parameters."""
    t = tf.fill([tf.shape(x_start)[0]], self.num_timesteps - 1)
    mean, _, log_variance = self.q_mean_variance(x_start, t)
    kl = likelihood.normal_kl(mean, log_variance, 0.0, 0.0)
    return likelihood.mean_over_nonbatch(kl) / math.log(2.0)

  def training_losses(self, model_output, x_start, x_t, t, noise):
    """Per-example losses; ``loss`` is what to minimize.

    ``simple``: ||eps - eps_theta||^2 averaged over dimensions.
    ``hybrid``: simple + lambda * T * L_t, where T * L_t is the one-sample
    estimate of the full bound L_vb for uniform t; the epsilon entering L_t
    is behind a stop-gradient so the bound only trains the variance.
    """
    if self.model_var_type == "learned_range" and self.loss_type != "hybrid":
      raise ValueError("learned_range variances are trained only by the "
                       "hybrid loss; set loss_type='hybrid'")
    eps, _ = self._split_output(model_output)
    mse = likelihood.mean_over_nonbatch(tf.square(noise - eps))
    terms = {"mse": mse}
    if self.loss_type == "hybrid":
      model_output = tf.cast(model_output, tf.float32)
      eps_out, var_values = tf.split(model_output, 2, axis=-1)
      frozen = tf.concat([tf.stop_gradient(eps_out), var_values], axis=-1)
      vb = self.vb_terms_bpd(frozen, x_start, x_t, t)
      terms["vb"] = vb
      terms["loss"] = mse + self.hybrid_vb_weight * self.num_timesteps * vb
    else:
      terms["loss"] = mse
    return terms
