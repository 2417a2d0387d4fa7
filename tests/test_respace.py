import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import GaussianDiffusion
from cdm_tf.diffusion import respace
from cdm_tf.diffusion import schedules


def test_ddim_striding_keeps_exactly_n_steps():
  kept = respace.space_timesteps(1000, "ddim32")
  assert kept == set(range(0, 1000, 32))
  assert len(kept) == 32
  assert respace.space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
  with pytest.raises(ValueError, match="stride"):
    respace.space_timesteps(1000, "ddim999")


def test_even_spacing_includes_both_ends():
  kept = sorted(respace.space_timesteps(1000, "128"))
  assert len(kept) == 128 and kept[0] == 0 and kept[-1] == 999
  assert max(np.diff(kept)) - min(np.diff(kept)) <= 1
  kept = respace.space_timesteps(1000, 500)
  assert len(kept) == 500 and {0, 999} <= kept
  assert respace.space_timesteps(10, 10) == set(range(10))


def test_sections_take_their_own_counts():
  # 10 steps in two sections of 5: 3 from the first, 2 from the second.
  assert respace.space_timesteps(10, "3,2") == {0, 2, 4, 5, 9}
  assert respace.space_timesteps(10, [1, 1]) == {0, 5}


@pytest.mark.parametrize("spacing", ["abc", "0", [0], "11"])
def test_bad_spacings_raise(spacing):
  with pytest.raises(ValueError):
    respace.space_timesteps(10, spacing)


def test_respaced_betas_come_from_the_retained_alpha_bars():
  betas = schedules.get_named_beta_schedule("cosine", 1000)
  full = GaussianDiffusion(betas)
  kept = sorted(respace.space_timesteps(1000, "ddim32"))
  spaced = respace.SpacedDiffusion(kept, betas=betas)
  assert spaced.num_timesteps == 32
  np.testing.assert_array_equal(spaced.timestep_map, kept)
  # q(x_t | x_0) is unchanged at every kept step.
  np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[kept],
                             rtol=1e-10)
  ab = full.alphas_cumprod[kept]
  expected = 1 - ab / np.append(1.0, ab[:-1])
  np.testing.assert_allclose(spaced.betas, expected, rtol=1e-8)


def test_respacing_every_step_is_the_original_process():
  betas = schedules.get_named_beta_schedule("linear", 100)
  spaced = respace.SpacedDiffusion(range(100), betas=betas)
  np.testing.assert_allclose(spaced.betas, betas, rtol=1e-10)
  np.testing.assert_allclose(spaced.posterior_variance,
                             GaussianDiffusion(betas).posterior_variance,
                             rtol=1e-9)


def test_respaced_timestep_models_see_their_original_step():
  d = create_diffusion("cosine", 4000, timestep_respacing="ddim4")
  np.testing.assert_array_equal(d.timestep_map, [0, 1000, 2000, 3000])
  np.testing.assert_allclose(
      d.model_time_input(tf.range(4)).numpy(), [0.0, 250.0, 500.0, 750.0])


def test_continuous_models_see_the_same_noise_level_after_respacing():
  full = create_diffusion("linear", 2000, noise_conditioning="continuous")
  spaced = create_diffusion("linear", 2000, timestep_respacing="4",
                            noise_conditioning="continuous")
  kept = tf.constant(spaced.timestep_map, tf.int32)
  np.testing.assert_allclose(
      spaced.model_time_input(tf.range(4)).numpy(),
      full.model_time_input(kept).numpy(), rtol=1e-5)


def test_create_diffusion_without_respacing_is_plain():
  d = create_diffusion("cosine", 50, timestep_respacing="50")
  assert type(d) is GaussianDiffusion and d.num_timesteps == 50


def test_spaced_diffusion_rejects_steps_outside_the_process():
  with pytest.raises(ValueError, match="subset"):
    respace.SpacedDiffusion([0, 10], betas=np.full(10, 0.1))
