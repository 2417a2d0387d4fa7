"""DPM-Solver++ against hand-computed steps, the paper's algorithm written
out independently, and the exact ODE of Gaussian data."""

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import analytic
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import dpm_solver
from cdm_tf.diffusion import noise_conditioning
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import respace
from cdm_tf.diffusion import samplers

DATA = analytic.GaussianData(mean=0.3, std=0.5)


def _seeds(n, base=0):
  return per_example_noise.example_seeds(tf.range(n), base)


def _continuous(schedule="linear", steps=1000):
  return create_diffusion(schedule, steps, noise_conditioning="continuous")


# -- noise levels -----------------------------------------------------------


def test_logsnr_uniform_levels_on_a_continuous_model():
  d = _continuous()
  chain = dpm_solver.DPMSolver(d, 6, end_alpha_bar=0.9)
  lam = chain.half_log_snrs
  lam_start = 0.5 * np.log(
      d.alphas_cumprod[-1] / d.one_minus_alphas_cumprod[-1])
  assert len(lam) == 7  # 6 evaluated levels + the hand-over level
  assert lam[0] == pytest.approx(lam_start, rel=1e-12)
  assert lam[-1] == pytest.approx(0.5 * np.log(0.9 / 0.1), rel=1e-12)
  np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / 6, rtol=1e-9)
  assert chain.alphas_cumprod[-1] == 0.9  # exactly the level asked for
  # The network is told each level's (clipped) log-SNR.
  expected = noise_conditioning.noise_level_input(
      tf.constant(chain.alphas_cumprod[:6], tf.float32),
      tf.constant(chain.one_minus_alphas_cumprod[:6], tf.float32)).numpy()
  np.testing.assert_allclose(chain.time_inputs, expected, rtol=1e-6)


def test_karras_levels_by_hand():
  d = _continuous()
  chain = dpm_solver.DPMSolver(d, 3, timestep_spacing="karras",
                               end_alpha_bar=0.5)
  # sigma / alpha from s_max = sqrt((1 - ab_T) / ab_T) to s_min = 1 with
  # rho = 7: s_i = (s_max^(1/7) + i/3 (1 - s_max^(1/7)))^7.
  s_max = np.sqrt(d.one_minus_alphas_cumprod[-1] / d.alphas_cumprod[-1])
  hand = [(s_max**(1 / 7) + i / 3 * (1.0 - s_max**(1 / 7)))**7 for i in range(4)
         ]
  got = np.sqrt(chain.one_minus_alphas_cumprod / chain.alphas_cumprod)
  np.testing.assert_allclose(got, hand, rtol=1e-9)


def test_timestep_model_levels_lie_on_the_training_schedule():
  d = create_diffusion("cosine", 1000)
  log_ab = np.log(d.alphas_cumprod)
  for spacing in dpm_solver.TIMESTEP_SPACINGS:
    chain = dpm_solver.DPMSolver(d, 10, timestep_spacing=spacing)
    p = chain.positions
    assert p[0] == 999 and p[-1] == pytest.approx(0, abs=1e-9)
    assert len(p) == 10 and np.all(np.diff(p) < 0)
    # log alpha-bar linear in the step between training steps.
    np.testing.assert_allclose(np.log(chain.alphas_cumprod[:10]),
                               np.interp(p, np.arange(1000), log_ab), rtol=1e-9,
                               atol=1e-12)
    assert chain.alphas_cumprod[10] == 1.0
    # The network is told the fractional step (index * 1000 / T).
    np.testing.assert_allclose(chain.time_inputs, p, rtol=1e-6, atol=1e-4)
  time_uniform = dpm_solver.DPMSolver(d, 4, timestep_spacing="time_uniform")
  np.testing.assert_allclose(time_uniform.positions, [999, 666, 333, 0],
                             atol=1e-6)
  np.testing.assert_allclose(time_uniform.alphas_cumprod[:4],
                             d.alphas_cumprod[[999, 666, 333, 0]], rtol=1e-9)
  # A respaced process: its positions map to the original steps.
  spaced = respace.SpacedDiffusion(range(0, 1000, 10), betas=d.betas)
  chain = dpm_solver.DPMSolver(spaced, 4, timestep_spacing="time_uniform")
  np.testing.assert_allclose(chain.time_inputs, [990, 660, 330, 0], atol=1e-3)


# -- the update equations ---------------------------------------------------


def test_one_first_order_step_by_hand():
  # Levels alpha-bar 0.5 -> 0.8 (lambda 0 -> ln 2), x = 1, eps = 0.2:
  # m0 = (1 - sqrt(.5) .2) / sqrt(.5) = 1.2142136;
  # x' = sqrt(.2 / .5) + sqrt(.8) (1 - 1/2) m0 = 1.1754690.
  d = _continuous()
  chain = dpm_solver.DPMSolver(d, 2, order=1, end_alpha_bar=0.8,
                               clip_denoised=False)
  chain.alphas_cumprod[:] = (0.5, 0.5, 0.8)
  chain.one_minus_alphas_cumprod[:] = (0.5, 0.5, 0.2)
  chain._step_coefficients()  # pylint: disable=protected-access
  state = {"x": tf.ones([1, 1]), "m1": tf.zeros([1, 1]), "m2": tf.zeros([1, 1])}
  state = chain.step(lambda x, t: 0.2 * tf.ones_like(x), state, tf.constant(1),
                     _seeds(1))
  assert float(state["m1"][0, 0]) == pytest.approx(1.2142136, abs=1e-6)
  assert float(state["x"][0, 0]) == pytest.approx(1.1754690, abs=1e-6)


def test_first_order_is_ddim_on_the_same_steps():
  d = create_diffusion("cosine", 1000)
  # Time-uniform positions 999, 888, ..., 0 are training steps.
  chain = dpm_solver.DPMSolver(d, 10, order=1, timestep_spacing="time_uniform")
  kept = np.round(chain.positions).astype(int)
  spaced = respace.SpacedDiffusion(kept.tolist(), betas=d.betas)
  np.testing.assert_allclose(chain.positions, kept, atol=1e-6)
  seeds = _seeds(4, 3)
  x_T = samplers.initial_noise(seeds, (16,))
  solver = samplers.run_chain(chain, DATA.model_fn(d), seeds, x_T)
  ddim = samplers.sample(spaced, DATA.model_fn(spaced), (16,), seeds,
                         sampler="ddim", x_T=x_T)
  np.testing.assert_allclose(solver.numpy(), ddim.numpy(), atol=2e-5)


def _paper_algorithm_2(alpha_bars, x, data_prediction):
  """DPM-Solver++(2M), Lu et al. 2022b Algorithm 2, written out in float64:
  a first-order first step, then D_i = (1 + 1/2r_i) x0_{i-1} - 1/2r_i
  x0_{i-2}; the step to alpha-bar 1 returns the last data prediction."""
  ab = np.asarray(alpha_bars, np.float64)
  alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
  with np.errstate(divide="ignore"):
    lam = np.log(alpha) - np.log(sigma)
  previous, h_previous = None, None
  for i in range(len(ab) - 1):
    x0 = data_prediction(x, i)
    if sigma[i + 1] == 0.0:
      return x0
    h = lam[i + 1] - lam[i]
    if previous is None:
      d = x0
    else:
      r = h_previous / h
      d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * previous
    x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * np.expm1(-h) * d
    previous, h_previous = x0, h
  return x


def test_2m_matches_the_papers_algorithm_written_out():
  d = create_diffusion("cosine", 1000)
  chain = dpm_solver.DPMSolver(d, 6, clip_denoised=False)
  seeds = _seeds(3, 5)
  x_T = samplers.initial_noise(seeds, (8,))
  got = samplers.run_chain(chain, DATA.model_fn(d), seeds, x_T).numpy()

  ab, one_minus = chain.alphas_cumprod, chain.one_minus_alphas_cumprod

  def data_prediction(x, i):  # the optimal model's x_0, in float64
    eps = (np.sqrt(one_minus[i]) * (x - np.sqrt(ab[i]) * DATA.mean) /
           (ab[i] * DATA.std**2 + one_minus[i]))
    return (x - np.sqrt(one_minus[i]) * eps) / np.sqrt(ab[i])

  want = _paper_algorithm_2(ab, x_T.numpy().astype(np.float64), data_prediction)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_3m_step_is_exact_for_a_quadratic_data_prediction():
  # With x_theta(lambda) = q(lambda) quadratic, the exact solution
  # x_t = sigma_t/sigma_s x_s + alpha_t int_0^h e^-(h-u) q(lambda_s + u) du
  # is what the third-order step must return, given q at the two earlier
  # levels as its history.
  d = _continuous()
  chain = dpm_solver.DPMSolver(d, 5, "dpmpp_3m", end_alpha_bar=0.95,
                               clip_denoised=False)
  lam = chain.half_log_snrs
  ab, one_minus = chain.alphas_cumprod, chain.one_minus_alphas_cumprod

  def q(lam_t):
    return 0.4 - 0.3 * lam_t + 0.05 * lam_t * lam_t

  k = 3
  assert chain.orders[k] == 3
  x = np.array([[0.7, -1.2]])
  m0 = q(lam[k])
  eps = (x - np.sqrt(ab[k]) * m0) / np.sqrt(one_minus[k])
  state = {
      "x": tf.constant(x, tf.float32), "m1": tf.fill([1, 2],
                                                     float(q(lam[k - 1]))),
      "m2": tf.fill([1, 2], float(q(lam[k - 2])))
  }
  out = chain.step(lambda *_: tf.constant(eps, tf.float32), state,
                   tf.constant(k), _seeds(1))
  h = lam[k + 1] - lam[k]
  u = np.linspace(0.0, h, 20001)
  integral = np.trapezoid(np.exp(-(h - u)) * q(lam[k] + u), u)
  exact = (np.sqrt(one_minus[k + 1] / one_minus[k]) * x +
           np.sqrt(ab[k + 1]) * integral)
  np.testing.assert_allclose(out["x"].numpy(), exact, rtol=2e-5)


def test_errors_shrink_at_each_solvers_order():
  steps = (10, 20, 40, 80)
  d = _continuous()
  first, second, third = (analytic.ode_errors(d, DATA, sampler, steps,
                                              order=order)
                          for sampler, order in (("dpmpp_2m", 1), ("dpmpp_2m",
                                                                   None),
                                                 ("dpmpp_3m", None)))
  for errors, order in ((first, 1), (second, 2), (third, 3)):
    observed = analytic.observed_orders(steps, errors)
    assert observed[-1] == pytest.approx(order, abs=0.3), (order, observed)
  # At every step count the higher order is the more accurate.
  assert all(a > b > c for a, b, c in zip(first, second, third))


# -- sampling ---------------------------------------------------------------


@pytest.mark.parametrize("diffusion_kwargs,solver_kwargs", [
    (dict(schedule="cosine",
          num_timesteps=1000), dict(sampler="dpmpp_2m", steps=20)),
    (dict(schedule="cosine", num_timesteps=1000,
          model_var_type="learned_range"), dict(sampler="dpmpp_3m", steps=25)),
    (dict(schedule="linear", num_timesteps=1000),
     dict(sampler="dpmpp_2m", steps=25, timestep_spacing="karras")),
    (dict(schedule="cosine", num_timesteps=1000),
     dict(sampler="dpmpp_2m", steps=50, timestep_spacing="time_uniform")),
    (dict(schedule="cosine",
          num_timesteps=1000), dict(sampler="dpmpp_2m_sde", steps=50)),
    (dict(schedule="linear", num_timesteps=2000,
          noise_conditioning="continuous"), dict(sampler="dpmpp_2m", steps=15)),
])
def test_few_steps_recover_the_data_distribution(diffusion_kwargs,
                                                 solver_kwargs):
  d = create_diffusion(**diffusion_kwargs)
  mean, std = analytic.sample_moments(d, DATA, num_samples=64, dims=256,
                                      seed=11, **solver_kwargs)
  assert mean == pytest.approx(DATA.mean, abs=0.02)
  assert std == pytest.approx(DATA.std, abs=0.02)


def test_stochastic_solver_samples_do_not_depend_on_their_batch():
  d = create_diffusion("cosine", 100)
  fn = DATA.model_fn(d)
  ids = tf.constant([5, 17, 42, 99])
  kwargs = dict(sampler="dpmpp_2m_sde", steps=8)
  batch = samplers.sample(d, fn, (3, 2),
                          per_example_noise.example_seeds(ids,
                                                          1), **kwargs).numpy()
  alone = samplers.sample(d, fn, (3, 2),
                          per_example_noise.example_seeds(ids[2:3], 1),
                          **kwargs).numpy()
  np.testing.assert_allclose(alone[0], batch[2], atol=1e-6)
  # Its noise matters: the ODE solver from the same x_T lands elsewhere.
  ode = samplers.sample(d, fn, (3, 2), per_example_noise.example_seeds(ids, 1),
                        sampler="dpmpp_2m", steps=8).numpy()
  assert np.abs(ode - batch).max() > 0.05


def test_solver_thresholds_every_data_prediction():
  d = create_diffusion("cosine", 100)
  wide = analytic.GaussianData(mean=0.0, std=3.0)
  for kwargs in (dict(clip_denoised=True),
                 dict(dynamic_threshold_percentile=99.5)):
    x = samplers.sample(d, wide.model_fn(d), (64,), _seeds(8),
                        sampler="dpmpp_2m", steps=10, **kwargs).numpy()
    assert np.abs(x).max() <= 1.0 + 1e-5
  free = samplers.sample(d, wide.model_fn(d), (64,), _seeds(8),
                         sampler="dpmpp_2m", steps=10,
                         clip_denoised=False).numpy()
  assert np.abs(free).max() > 2.0


def test_truncated_solver_returns_x_at_the_hand_over_level():
  d = create_diffusion("cosine", 1000)
  target = float(d.alphas_cumprod[249]) * 1.001  # between training steps
  chain = dpm_solver.DPMSolver(d, 6, end_alpha_bar=target)
  assert chain.alphas_cumprod[-1] == target and not chain.ends_clean
  assert 248 < chain.positions[-1] < 249
  # x there is distributed as q(x_s): N(sqrt(ab) mu, ab sigma^2 + 1 - ab).
  x = samplers.sample(d, DATA.model_fn(d), (256,), _seeds(64),
                      sampler="dpmpp_2m", steps=25, stop_alpha_bar=target,
                      clip_denoised=False)
  assert float(tf.reduce_mean(x)) == pytest.approx(
      np.sqrt(target) * DATA.mean, abs=0.02)
  assert float(tf.math.reduce_std(x)) == pytest.approx(
      np.sqrt(target * DATA.std**2 + 1 - target), abs=0.02)
  with pytest.raises(ValueError, match="as noisy as its start"):
    dpm_solver.DPMSolver(d, 6, end_alpha_bar=1e-12)


def test_bad_settings_are_refused():
  d = create_diffusion("cosine", 100)
  with pytest.raises(ValueError, match="unknown solver"):
    dpm_solver.DPMSolver(d, 10, "euler")
  with pytest.raises(ValueError, match="num_steps >= 1"):
    dpm_solver.DPMSolver(d, 0)
  with pytest.raises(ValueError, match="timestep_spacing"):
    dpm_solver.DPMSolver(d, 10, timestep_spacing="quadratic")
  with pytest.raises(ValueError, match="needs a number of steps"):
    samplers.create_chain(d, "dpmpp_2m")
  with pytest.raises(ValueError, match="DDIM / DDPM parameters"):
    samplers.create_chain(d, "dpmpp_2m", steps=10, eta=0.5)
  with pytest.raises(ValueError, match="solver settings"):
    samplers.create_chain(d, "ddpm", steps=10)
