import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import analytic
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers

DATA = analytic.GaussianData(mean=0.3, std=0.5)
# 64 examples x 256 dims = 16,384 draws: standard errors ~0.004 (mean) and
# ~0.003 (std); the tolerance leaves room for the discretization error.
TOL = 0.02


@pytest.mark.parametrize(
    "diffusion_kwargs,sampler_kwargs",
    [
        (dict(schedule="cosine", num_timesteps=1000), dict(sampler="ddpm")),
        (dict(schedule="linear", num_timesteps=1000), dict(sampler="ddpm")),
        (dict(schedule="cosine", num_timesteps=1000,
              model_var_type="learned_range"), dict(sampler="ddpm")),
        (dict(schedule="cosine", num_timesteps=1000,
              model_var_type="fixed_large"), dict(sampler="ddpm")),
        (dict(schedule="cosine", num_timesteps=1000, timestep_respacing="250"),
         dict(sampler="ddpm", logvar_coeff=0.3)),
        (dict(schedule="cosine", num_timesteps=1000,
              timestep_respacing="ddim100"), dict(sampler="ddim")),
        (dict(schedule="linear", num_timesteps=1000), dict(sampler="ddim")),
        (dict(schedule="cosine", num_timesteps=1000,
              timestep_respacing="ddim100"), dict(sampler="ddim", eta=0.5)),
        # A continuous-noise model sampled with a 100-step inference schedule.
        (dict(schedule="linear", num_timesteps=100,
              noise_conditioning="continuous"),
         dict(sampler="ddpm", logvar_coeff=1.0)),
    ])
def test_exact_model_recovers_the_data_distribution(diffusion_kwargs,
                                                    sampler_kwargs):
  diffusion = create_diffusion(**diffusion_kwargs)
  mean, std = analytic.sample_moments(diffusion, DATA, num_samples=64, dims=256,
                                      seed=11, **sampler_kwargs)
  assert mean == pytest.approx(DATA.mean, abs=TOL)
  assert std == pytest.approx(DATA.std, abs=TOL)


def test_few_step_ddpm_with_the_lower_variance_bound_underdisperses():
  # The lower bound beta-tilde is the right variance only as the step size
  # goes to zero; with 32 steps the samples are visibly too narrow, and the
  # upper bound (logvar 1.0) corrects most of it. A sampler that ignored the
  # variance choice would fail this.
  diffusion = create_diffusion("cosine", 1000, timestep_respacing="32")
  _, std_low = analytic.sample_moments(diffusion, DATA, 64, 256, seed=3,
                                       logvar_coeff=0.0)
  _, std_high = analytic.sample_moments(diffusion, DATA, 64, 256, seed=3,
                                        logvar_coeff=1.0)
  assert std_low < DATA.std - 0.02
  assert abs(std_high - DATA.std) < abs(std_low - DATA.std)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_a_sample_does_not_depend_on_its_batch(sampler):
  diffusion = create_diffusion("cosine", 100, timestep_respacing="20")
  model_fn = DATA.model_fn(diffusion)
  kwargs = dict(sampler=sampler)
  if sampler == "ddim":
    kwargs["eta"] = 1.0  # stochastic, so per-step noise is exercised
  ids = tf.constant([5, 17, 42, 99])
  batch = samplers.sample(diffusion, model_fn, (3, 3, 2),
                          per_example_noise.example_seeds(ids, 1), **kwargs)
  alone = samplers.sample(diffusion, model_fn, (3, 3, 2),
                          per_example_noise.example_seeds(ids[2:3], 1),
                          **kwargs)
  pair = samplers.sample(diffusion, model_fn, (3, 3, 2),
                         per_example_noise.example_seeds(ids[::-2], 1),
                         **kwargs)
  np.testing.assert_allclose(alone.numpy()[0], batch.numpy()[2], atol=1e-6)
  np.testing.assert_allclose(pair.numpy(), batch.numpy()[::-2], atol=1e-6)
  other_seed = samplers.sample(diffusion, model_fn, (3, 3, 2),
                               per_example_noise.example_seeds(ids, 2),
                               **kwargs)
  assert np.abs(other_seed.numpy() - batch.numpy()).max() > 0.1


def test_per_example_noise_streams_are_keyed_by_seed_and_salt():
  seeds = per_example_noise.example_seeds(tf.constant([1, 2]), 0)
  a = per_example_noise.per_example_normal(seeds, (4,), 1, 7).numpy()
  b = per_example_noise.per_example_normal(seeds[1:], (4,), 1, 7).numpy()
  c = per_example_noise.per_example_normal(seeds, (4,), 1, 8).numpy()
  np.testing.assert_array_equal(a[1], b[0])
  assert not np.allclose(a, c)
  assert not np.allclose(a[0], a[1])
  u = per_example_noise.per_example_uniform(seeds, (1000,), 2).numpy()
  assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05


def test_progress_and_stop_at():
  diffusion = create_diffusion("cosine", 50)
  seeds = per_example_noise.example_seeds(tf.range(2))
  fn = DATA.model_fn(diffusion)
  results, calls = {}, {}
  for steps_per_call in (1, 8, None):
    seen = []
    results[steps_per_call] = samplers.ddpm_sample(
        diffusion, fn, (2,), seeds, stop_at=20, steps_per_call=steps_per_call,
        progress=lambda done, total, seen=seen: seen.append((done, total)))
    calls[steps_per_call] = seen
  # 30 steps (indices 49 .. 20), reported after each compiled call.
  assert calls[1] == [(k, 30) for k in range(1, 31)]
  assert calls[8] == [(8, 30), (16, 30), (24, 30), (30, 30)]
  assert calls[None] == [(30, 30)]
  # Splitting the chain into calls does not change a sample.
  np.testing.assert_array_equal(results[1].numpy(), results[8].numpy())
  np.testing.assert_array_equal(results[1].numpy(), results[None].numpy())
  with pytest.raises(ValueError, match="steps_per_call"):
    samplers.ddpm_sample(diffusion, fn, (2,), seeds, steps_per_call=0)
  with pytest.raises(ValueError, match="stop_at"):
    samplers.ddpm_sample(diffusion, DATA.model_fn(diffusion), (2,), seeds,
                         stop_at=50)


def test_sampler_argument_errors():
  diffusion = create_diffusion("cosine", 10)
  seeds = per_example_noise.example_seeds(tf.range(1))
  fn = DATA.model_fn(diffusion)
  with pytest.raises(ValueError, match="unknown sampler"):
    samplers.sample(diffusion, fn, (2,), seeds, sampler="euler")
  with pytest.raises(ValueError, match="DDPM"):
    samplers.sample(diffusion, fn, (2,), seeds, sampler="ddim",
                    logvar_coeff=0.1)
  with pytest.raises(ValueError, match="DDIM"):
    samplers.sample(diffusion, fn, (2,), seeds, sampler="ddpm", eta=0.5)


def test_thresholding_keeps_samples_in_range():
  # Data far outside [-1, 1]: clipping every x_0 prediction bounds the output.
  diffusion = create_diffusion("cosine", 100)
  wide = analytic.GaussianData(mean=0.0, std=3.0)
  seeds = per_example_noise.example_seeds(tf.range(8))
  for kwargs in (dict(clip_denoised=True),
                 dict(dynamic_threshold_percentile=99.5)):
    x = samplers.ddpm_sample(diffusion, wide.model_fn(diffusion), (64,), seeds,
                             **kwargs).numpy()
    assert np.abs(x).max() <= 1.0 + 1e-5


@pytest.mark.parametrize("sampler,kwargs", [("ddpm", {}),
                                            ("dpmpp_2m_sde", {"steps": 6})])
def test_xla_compiled_network_keeps_each_samples_noise(sampler, kwargs):
  # XLA's stateless random numbers differ from the TF kernels' for the same
  # seed; only the network is compiled, so a stochastic chain's samples do
  # not depend on jit_compile.
  diffusion = create_diffusion("cosine", 20)
  seeds = per_example_noise.example_seeds(tf.range(3), 4)
  plain, compiled = (samplers.sample(diffusion, DATA.model_fn(diffusion), (5,),
                                     seeds, sampler=sampler, jit_compile=jit,
                                     **kwargs).numpy() for jit in (False, True))
  np.testing.assert_allclose(compiled, plain, atol=1e-5)
