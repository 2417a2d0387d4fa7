import math

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from cdm_tf.diffusion import GaussianDiffusion
from cdm_tf.diffusion import likelihood
from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import schedules

# A 4-step process small enough to check by hand:
# alpha = 0.9, 0.8, 0.7, 0.6; alpha-bar = 0.9, 0.72, 0.504, 0.3024.
BETAS4 = np.array([0.1, 0.2, 0.3, 0.4])
ALPHA_BAR4 = np.array([0.9, 0.72, 0.504, 0.3024])


def _t(values):
  return tf.constant(values, tf.int32)


def _f32(x):
  return tf.constant(np.asarray(x, np.float32))


def test_schedule_quantities_by_hand():
  d = GaussianDiffusion(BETAS4)
  np.testing.assert_allclose(d.alphas_cumprod, ALPHA_BAR4, rtol=1e-12)
  np.testing.assert_allclose(d.alphas_cumprod_prev, [1, 0.9, 0.72, 0.504],
                             rtol=1e-12)
  np.testing.assert_allclose(d.one_minus_alphas_cumprod, 1 - ALPHA_BAR4,
                             rtol=1e-12)
  # beta-tilde_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t).
  np.testing.assert_allclose(
      d.posterior_variance,
      [0.0, 0.2 * 0.1 / 0.28, 0.3 * 0.28 / 0.496, 0.4 * 0.496 / 0.6976],
      rtol=1e-12)
  # beta-tilde_1 = 0: its log is clipped to log beta-tilde_2.
  assert d.posterior_log_variance_clipped[0] == pytest.approx(
      math.log(0.2 * 0.1 / 0.28))
  assert d.posterior_log_variance_clipped[2] == pytest.approx(
      math.log(0.3 * 0.28 / 0.496))


def test_posterior_of_the_1000_step_linear_schedule():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("linear", 1000))
  # Worked by hand from beta_1 = 1e-4, beta_2 = 1.1991992e-4.
  assert d.alphas_cumprod[1] == pytest.approx(0.9997800920720721, rel=1e-12)
  assert d.posterior_variance[1] == pytest.approx(5.4531876613021935e-05,
                                                  rel=1e-9)
  assert d.posterior_mean_coef1[1] == pytest.approx(0.5452914995102903,
                                                    rel=1e-9)
  assert d.posterior_mean_coef2[1] == pytest.approx(0.4547084989905303,
                                                    rel=1e-9)


def test_posterior_matches_bayes_rule_for_the_gaussian_forward_process():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("cosine", 50))
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(50, 3)).astype(np.float32)
  xt = rng.normal(size=(50, 3)).astype(np.float32)
  t = np.arange(1, 50)
  mean, var, _ = d.q_posterior_mean_variance(_f32(x0[1:]), _f32(xt[1:]), _t(t))
  # Prior q(x_{t-1} | x_0) times likelihood q(x_t | x_{t-1}), completed square.
  ab_prev = d.alphas_cumprod_prev[t][:, None]
  alpha, beta = d.alphas[t][:, None], d.betas[t][:, None]
  precision = 1 / (1 - ab_prev) + alpha / beta
  expected_mean = (np.sqrt(ab_prev) * x0[1:] /
                   (1 - ab_prev) + np.sqrt(alpha) * xt[1:] / beta) / precision
  np.testing.assert_allclose(var.numpy()[:, 0], 1 / precision[:, 0], rtol=1e-5)
  np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-4, atol=1e-5)


def test_q_sample_and_q_mean_variance():
  d = GaussianDiffusion(BETAS4)
  x0, noise = _f32([[0.5, -1.0]]), _f32([[1.0, 2.0]])
  xt = d.q_sample(x0, _t([2]), noise).numpy()
  np.testing.assert_allclose(xt, [[
      math.sqrt(0.504) * 0.5 + math.sqrt(0.496),
      -math.sqrt(0.504) + 2 * math.sqrt(0.496)
  ]], rtol=1e-6)
  mean, var, log_var = d.q_mean_variance(x0, _t([2]))
  np.testing.assert_allclose(mean.numpy(),
                             math.sqrt(0.504) * x0.numpy(), rtol=1e-6)
  assert var.numpy().item() == pytest.approx(0.496, rel=1e-6)
  assert log_var.numpy().item() == pytest.approx(math.log(0.496), rel=1e-6)


def test_p_mean_is_cdm_mu_theta_without_clipping():
  d = GaussianDiffusion(BETAS4)
  xt, eps = _f32([[0.3, -2.0, 1.5]]), _f32([[0.1, -0.4, 0.8]])
  out = d.p_mean_variance(eps, xt, _t([2]), clip_denoised=False)
  # mu = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) / sqrt(alpha_t).
  expected = (xt.numpy() -
              0.3 / math.sqrt(0.496) * eps.numpy()) / math.sqrt(0.7)
  np.testing.assert_allclose(out["mean"].numpy(), expected, rtol=1e-5)
  np.testing.assert_allclose(out["pred_xstart"].numpy(),
                             (xt.numpy() - math.sqrt(0.496) * eps.numpy()) /
                             math.sqrt(0.504), rtol=1e-5)


def test_static_clipping_bounds_pred_xstart_and_moves_the_mean():
  d = GaussianDiffusion(BETAS4)
  xt, eps = _f32([[3.0]]), _f32([[0.0]])
  out = d.p_mean_variance(eps, xt, _t([1]), clip_denoised=True)
  assert out["pred_xstart"].numpy().item() == pytest.approx(1.0)
  expected = d.posterior_mean_coef1[1] * 1.0 + d.posterior_mean_coef2[1] * 3.0
  assert out["mean"].numpy().item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("v,frac", [(-1.0, 0.0), (0.5, 0.75), (1.0, 1.0)])
def test_learned_range_interpolates_the_log_variance_bounds(v, frac):
  d = GaussianDiffusion(BETAS4, model_var_type="learned_range",
                        loss_type="hybrid")
  output = _f32([[0.0, v]])  # epsilon channel, then v channel
  out = d.p_mean_variance(output, _f32([[0.0]]), _t([2]))
  lower = math.log(0.3 * 0.28 / 0.496)
  upper = math.log(0.3)
  assert out["log_variance"].numpy().item() == pytest.approx(
      frac * upper + (1 - frac) * lower, rel=1e-6)
  assert out["variance"].numpy().item() == pytest.approx(
      math.exp(frac * upper + (1 - frac) * lower), rel=1e-5)


@pytest.mark.parametrize("coeff", [0.0, 0.1, 0.3, 1.0])
def test_logvar_coeff_mixes_log_bounds_for_fixed_variance_models(coeff):
  for var_type in ("fixed_small", "fixed_large"):
    d = GaussianDiffusion(BETAS4, model_var_type=var_type)
    out = d.p_mean_variance(_f32([[0.0]]), _f32([[0.0]]), _t([3]),
                            logvar_coeff=coeff)
    lower, upper = math.log(0.4 * 0.496 / 0.6976), math.log(0.4)
    assert out["log_variance"].numpy().item() == pytest.approx(
        coeff * upper + (1 - coeff) * lower, rel=1e-6)


def test_fixed_variances_without_mixing():
  small = GaussianDiffusion(BETAS4, model_var_type="fixed_small")
  large = GaussianDiffusion(BETAS4, model_var_type="fixed_large")
  t = _t([0, 1, 3])
  zeros = tf.zeros([3, 1])
  ls = small.p_mean_variance(zeros, zeros, t)["log_variance"].numpy()[:, 0]
  ll = large.p_mean_variance(zeros, zeros, t)["log_variance"].numpy()[:, 0]
  beta_tilde_2 = 0.2 * 0.1 / 0.28
  np.testing.assert_allclose(
      ls, np.log([beta_tilde_2, beta_tilde_2, 0.4 * 0.496 / 0.6976]), rtol=1e-6)
  # fixed_large is beta_t, except beta-tilde_2 at the first step.
  np.testing.assert_allclose(ll, np.log([beta_tilde_2, 0.2, 0.4]), rtol=1e-6)


def test_bad_variance_arguments_raise():
  learned = GaussianDiffusion(BETAS4, model_var_type="learned_range",
                              loss_type="hybrid")
  with pytest.raises(ValueError, match="learned variances"):
    learned.p_mean_variance(_f32([[0.0, 0.0]]), _f32([[0.0]]), _t([1]),
                            logvar_coeff=0.5)
  with pytest.raises(ValueError, match="logvar_coeff"):
    GaussianDiffusion(BETAS4).p_mean_variance(_f32([[0.0]]), _f32([[0.0]]),
                                              _t([1]), logvar_coeff=1.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(model_var_type="learned"), "model_var_type"),
    (dict(loss_type="kl"), "loss_type"),
    (dict(loss_type="hybrid"), "learned_range"),
    (dict(noise_conditioning="sigma"), "noise_conditioning"),
    (dict(loss_type="hybrid", model_var_type="learned_range",
          noise_conditioning="continuous"), "continuous"),
])
def test_bad_constructor_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    GaussianDiffusion(BETAS4, **kwargs)


def test_bad_betas_raise():
  with pytest.raises(ValueError):
    GaussianDiffusion([0.1, 1.5])
  with pytest.raises(ValueError):
    GaussianDiffusion(np.zeros((2, 2)) + 0.1)


def test_ddim_step_by_hand():
  d = GaussianDiffusion(BETAS4)
  xt, eps = _f32([[0.4, -0.2]]), _f32([[0.5, 1.0]])
  # From index 3 (alpha-bar 0.3024) to index 1 (alpha-bar 0.72), eta = 0.
  x0 = (xt.numpy() - math.sqrt(1 - 0.3024) * eps.numpy()) / math.sqrt(0.3024)
  expected = math.sqrt(0.72) * x0 + math.sqrt(1 - 0.72) * eps.numpy()
  got = d.ddim_step(eps, xt, _t([3]), _t([1]), clip_denoised=False)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
  # eta = 0.5: sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab').
  noise = _f32([[1.0, -1.0]])
  sigma = 0.5 * math.sqrt(0.28 / 0.6976) * math.sqrt(1 - 0.3024 / 0.72)
  expected = (math.sqrt(0.72) * x0 + math.sqrt(0.28 - sigma**2) * eps.numpy() +
              sigma * noise.numpy())
  got = d.ddim_step(eps, xt, _t([3]), _t([1]), eta=0.5, noise=noise,
                    clip_denoised=False)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
  # To t_prev = -1 the step returns the predicted x_0.
  got = d.ddim_step(eps, xt, _t([3]), _t([-1]), clip_denoised=False)
  np.testing.assert_allclose(got.numpy(), x0, rtol=1e-5)


def test_ddim_with_eta_one_is_the_ancestral_step_with_fixed_small():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("cosine", 20))
  rng = np.random.default_rng(1)
  xt, eps, noise = (_f32(rng.normal(size=(5, 4))) for _ in range(3))
  t = _t([19, 10, 5, 2, 1])
  ddim = d.ddim_step(eps, xt, t, t - 1, eta=1.0, noise=noise,
                     clip_denoised=False)
  ddpm, _ = d.p_sample(eps, xt, t, noise, clip_denoised=False)
  np.testing.assert_allclose(ddim.numpy(), ddpm.numpy(), rtol=1e-4, atol=1e-5)


def test_ddim_with_eta_needs_noise():
  d = GaussianDiffusion(BETAS4)
  with pytest.raises(ValueError, match="noise"):
    d.ddim_step(_f32([[0.0]]), _f32([[0.0]]), _t([2]), _t([1]), eta=1.0)


def test_p_sample_adds_no_noise_at_the_last_step():
  d = GaussianDiffusion(BETAS4)
  xt, eps, noise = _f32([[0.2], [0.2]]), _f32([[0.1], [0.1]]), _f32([[3.],
                                                                     [3.]])
  sample, _ = d.p_sample(eps, xt, _t([0, 1]), noise, clip_denoised=False)
  out = d.p_mean_variance(eps, xt, _t([0, 1]), clip_denoised=False)
  assert sample.numpy()[0, 0] == pytest.approx(out["mean"].numpy()[0, 0])
  assert sample.numpy()[1, 0] == pytest.approx(
      out["mean"].numpy()[1, 0] + 3 * math.sqrt(out["variance"].numpy()[1, 0]),
      rel=1e-5)


def _numpy_hybrid_reference(x0, xt, t, noise, eps, v):
  """Hybrid loss by hand for BETAS4, in numpy."""
  ab, ab_prev = ALPHA_BAR4[t], np.append(1.0, ALPHA_BAR4)[t]
  beta, alpha = BETAS4[t], 1 - BETAS4[t]
  post_var = np.array([
      0.2 * 0.1 / 0.28, 0.2 * 0.1 / 0.28, 0.3 * 0.28 / 0.496,
      0.4 * 0.496 / 0.6976
  ])[t]
  c1 = beta * np.sqrt(ab_prev) / (1 - ab)
  c2 = (1 - ab_prev) * np.sqrt(alpha) / (1 - ab)
  pred_x0 = (xt - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
  model_mean = c1 * pred_x0 + c2 * xt
  frac = (v + 1) / 2
  model_logvar = frac * np.log(beta) + (1 - frac) * np.log(post_var)
  if t > 0:
    true_mean = c1 * x0 + c2 * xt
    true_logvar = np.log(post_var)
    kl = 0.5 * (-1 + model_logvar - true_logvar +
                np.exp(true_logvar - model_logvar) +
                (true_mean - model_mean)**2 * np.exp(-model_logvar))
    vb = kl.mean() / np.log(2)
  else:
    sd = np.exp(0.5 * model_logvar)
    upper = stats.norm.cdf((x0 + 1 / 255 - model_mean) / sd)
    lower = stats.norm.cdf((x0 - 1 / 255 - model_mean) / sd)
    prob = np.where(x0 < -0.999, upper,
                    np.where(x0 > 0.999, 1 - lower, upper - lower))
    vb = -np.log(prob).mean() / np.log(2)
  mse = ((noise - eps)**2).mean()
  return mse, vb, mse + 0.001 * 4 * vb


def test_hybrid_loss_value_matches_the_equations():
  d = GaussianDiffusion(BETAS4, model_var_type="learned_range",
                        loss_type="hybrid")
  rng = np.random.default_rng(2)
  x0 = np.array([[-1.0, 0.2, 1.0], [0.5, -0.3, 0.9]])
  noise = rng.normal(size=(2, 3))
  eps = noise + 0.3 * rng.normal(size=(2, 3))
  v = np.array([[0.3, -0.5, 0.9], [0.0, 0.4, -0.8]])
  t = np.array([0, 2])
  xt = d.q_sample(_f32(x0), _t(t), _f32(noise)).numpy()
  terms = d.training_losses(_f32(np.concatenate([eps, v], axis=1)), _f32(x0),
                            _f32(xt), _t(t), _f32(noise))
  for b in range(2):
    mse, vb, loss = _numpy_hybrid_reference(x0[b], xt[b], t[b], noise[b],
                                            eps[b], v[b])
    assert terms["mse"].numpy()[b] == pytest.approx(mse, rel=1e-5)
    # The decoder term uses the tanh approximation of the normal CDF.
    assert terms["vb"].numpy()[b] == pytest.approx(vb, rel=2e-3)
    assert terms["loss"].numpy()[b] == pytest.approx(loss, rel=1e-4)


def test_hybrid_loss_variational_part_does_not_train_the_mean():
  d = GaussianDiffusion(BETAS4, model_var_type="learned_range",
                        loss_type="hybrid")
  rng = np.random.default_rng(3)
  x0 = _f32(rng.uniform(-1, 1, size=(4, 2)))
  noise = _f32(rng.normal(size=(4, 2)))
  t = _t([0, 1, 2, 3])
  xt = d.q_sample(x0, t, noise)
  output = tf.Variable(rng.normal(size=(4, 4)).astype(np.float32))
  with tf.GradientTape(persistent=True) as tape:
    terms = d.training_losses(output, x0, xt, t, noise)
    vb_part = tf.reduce_sum(terms["loss"] - terms["mse"])
    mse_part = tf.reduce_sum(terms["mse"])
  vb_grad = tape.gradient(vb_part, output).numpy()
  mse_grad = tape.gradient(mse_part, output).numpy()
  assert np.all(vb_grad[:, :2] == 0.0)  # epsilon channels: stop-gradient
  assert np.all(np.abs(vb_grad[:, 2:]) > 0.0)  # variance channels: trained
  assert np.all(mse_grad[:, 2:] == 0.0)
  assert np.all(np.abs(mse_grad[:, :2]) > 0.0)


def test_simple_loss_is_epsilon_mse():
  d = GaussianDiffusion(BETAS4)
  terms = d.training_losses(_f32([[1.0, 2.0]]), _f32([[0.0, 0.0]]),
                            _f32([[0.0, 0.0]]), _t([1]), _f32([[0.0, 0.0]]))
  assert terms["loss"].numpy().item() == pytest.approx(2.5)
  assert "vb" not in terms


def test_learned_range_needs_the_hybrid_loss_to_train():
  d = GaussianDiffusion(BETAS4, model_var_type="learned_range")
  with pytest.raises(ValueError, match="hybrid"):
    d.training_losses(_f32([[0.0, 0.0]]), _f32([[0.0]]), _f32([[0.0]]), _t([1]),
                      _f32([[0.0]]))


def test_tanh_normal_cdf_is_close_to_the_exact_cdf():
  x = np.linspace(-6, 6, 241)
  approx = likelihood.approx_standard_normal_cdf(_f32(x)).numpy()
  np.testing.assert_allclose(approx, stats.norm.cdf(x), atol=2e-4)


def test_prior_bpd_is_the_kl_to_the_standard_normal():
  d = GaussianDiffusion(BETAS4)
  x0 = np.array([[0.5, -1.0]])
  mean, var = np.sqrt(0.3024) * x0, 1 - 0.3024
  kl = 0.5 * (-1 - np.log(var) + var + mean**2)
  assert d.prior_bpd(_f32(x0)).numpy().item() == pytest.approx(
      kl.mean() / np.log(2), rel=1e-5)


def test_timestep_models_see_the_rescaled_step_index():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("cosine", 4000))
  np.testing.assert_allclose(
      d.model_time_input(_t([0, 1000, 3999])).numpy(), [0.0, 250.0, 999.75],
      rtol=1e-6)


def test_continuous_models_see_the_noise_level():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("linear", 2000),
                        noise_conditioning="continuous")
  t = np.array([0, 500, 1999])
  got = d.model_time_input(_t(t)).numpy()
  ab = d.alphas_cumprod[t]
  log_snr = np.log(ab) - np.log(d.one_minus_alphas_cumprod[t])
  np.testing.assert_allclose(got, 1000 * (20 - log_snr) / 40, rtol=1e-4)
  assert np.all(np.diff(got) > 0)  # more noise, larger input


def test_continuous_training_draws_alpha_bar_inside_the_step():
  d = GaussianDiffusion(schedules.get_named_beta_schedule("linear", 2000),
                        noise_conditioning="continuous")
  t = _t([0, 10, 10, 1999])
  u = tf.constant([0.0, 0.0, 0.5, 0.999])
  x0 = tf.ones([4, 1])
  xt, time_input = d.training_inputs(x0, t, tf.zeros([4, 1]), u)
  # With zero noise, x_t = sqrt(alpha-bar) x_0.
  ab = xt.numpy()[:, 0]**2
  ab_prev = np.append(1.0, d.alphas_cumprod)
  assert ab[0] == pytest.approx(1.0, abs=1e-6)
  assert ab[1] == pytest.approx(ab_prev[10], rel=1e-6)
  assert ab[2] == pytest.approx(0.5 * (ab_prev[10] + ab_prev[11]), rel=1e-6)
  assert d.alphas_cumprod[1999] <= ab[3] <= ab_prev[1999]
  expected = noise_conditioning.noise_level_input(
      tf.constant(ab[1:], tf.float32), tf.constant(1 - ab[1:],
                                                   tf.float32)).numpy()
  np.testing.assert_allclose(time_input.numpy()[1:], expected, rtol=2e-3)
  with pytest.raises(ValueError, match="u"):
    d.training_inputs(x0, t, tf.zeros([4, 1]))


def test_bfloat16_network_outputs_are_computed_in_float32():
  d = GaussianDiffusion(BETAS4, model_var_type="learned_range",
                        loss_type="hybrid")
  output = tf.constant([[0.25, 0.5]], tf.bfloat16)
  out = d.p_mean_variance(output, _f32([[0.3]]), _t([2]), clip_denoised=False)
  reference = d.p_mean_variance(_f32([[0.25, 0.5]]), _f32([[0.3]]), _t([2]),
                                clip_denoised=False)
  assert out["mean"].dtype == tf.float32
  np.testing.assert_allclose(out["mean"].numpy(), reference["mean"].numpy(),
                             rtol=1e-6)
  terms = d.training_losses(output, _f32([[0.1]]), _f32([[0.3]]), _t([2]),
                            _f32([[0.2]]))
  assert terms["loss"].dtype == tf.float32
