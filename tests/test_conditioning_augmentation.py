import math

import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from cdm_tf.diffusion import analytic
from cdm_tf.diffusion import conditioning_augmentation as ca
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import GaussianDiffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers

BETAS4 = np.array([0.1, 0.2, 0.3, 0.4])  # alpha-bar 0.9, 0.72, 0.504, 0.3024


def test_levels_are_fractions_of_the_process():
  aug = ca.GaussianConditioningAugmentation(GaussianDiffusion(BETAS4))
  levels = tf.constant([0.0, 0.25, 0.5, 0.625, 1.0])
  alpha_bar, one_minus = aug.alpha_bar(levels)
  # Level k / T is alpha-bar_k; between steps alpha-bar is linear.
  np.testing.assert_allclose(alpha_bar.numpy(), [1.0, 0.9, 0.72, 0.612, 0.3024],
                             rtol=1e-6)
  np.testing.assert_allclose(one_minus.numpy(), [0.0, 0.1, 0.28, 0.388, 0.6976],
                             rtol=1e-6)


def test_augment_is_the_forward_process_at_level_s():
  aug = ca.GaussianConditioningAugmentation(GaussianDiffusion(BETAS4))
  z0 = tf.constant([[0.5, -1.0], [0.5, -1.0]])
  noise = tf.constant([[1.0, 2.0], [1.0, 2.0]])
  got = aug.augment(z0, [0.0, 0.75], noise).numpy()
  np.testing.assert_allclose(got[0], [0.5, -1.0], rtol=1e-6)  # s = 0: none
  np.testing.assert_allclose(got[1], [
      math.sqrt(0.504) * 0.5 + math.sqrt(0.496),
      -math.sqrt(0.504) + 2 * math.sqrt(0.496)
  ], rtol=1e-6)


def test_cdm_truncation_time_on_the_4000_step_process():
  d = create_diffusion("cosine", 4000)
  aug = ca.GaussianConditioningAugmentation(d)
  alpha_bar, _ = aug.alpha_bar(tf.constant([1001 / 4000]))
  assert alpha_bar.numpy()[0] == pytest.approx(d.alphas_cumprod[1000], rel=1e-5)
  assert aug.model_input(tf.constant([1001 / 4000
                                     ])).numpy()[0] == (pytest.approx(250.25))
  assert aug.truncation_stop_index(d, 1001 / 4000) == 1001
  assert aug.truncation_stop_index(d, 0.0) == 0
  # A respaced base process must keep the truncation step.
  spaced = create_diffusion("cosine", 4000, timestep_respacing="ddim1000")
  assert aug.truncation_stop_index(spaced, 1001 / 4000) == 251
  with pytest.raises(ValueError, match="not a step"):
    aug.truncation_stop_index(spaced, 1002 / 4000)


def test_training_levels_cover_the_configured_range():
  d = GaussianDiffusion(BETAS4)
  u = tf.constant([0.0, 0.5, 0.999])
  amortized = ca.GaussianConditioningAugmentation(d)
  np.testing.assert_allclose(
      amortized.training_levels(u).numpy(), [0.0, 0.5, 0.999], rtol=1e-6)
  fixed = ca.GaussianConditioningAugmentation(d, training_range=(0.25, 0.25))
  np.testing.assert_allclose(fixed.training_levels(u).numpy(), [0.25] * 3)
  with pytest.raises(ValueError, match="training_range"):
    ca.GaussianConditioningAugmentation(d, training_range=(0.5, 0.2))


def test_levels_outside_zero_one_raise():
  aug = ca.GaussianConditioningAugmentation(GaussianDiffusion(BETAS4))
  with pytest.raises(tf.errors.InvalidArgumentError, match="level"):
    aug.alpha_bar(tf.constant([1.5]))


def test_truncated_and_non_truncated_give_the_same_marginal():
  """Both routes must give z_s ~ q(z_s) when the low-res model is exact."""
  d = create_diffusion("cosine", 1000, timestep_respacing="ddim200")
  aug = ca.GaussianConditioningAugmentation(create_diffusion("cosine", 1000))
  data = analytic.GaussianData(0.4, 0.3)
  level = 251 / 1000  # paper step 251: index 250, kept by ddim200
  alpha_bar = float(aug.alpha_bar(tf.constant([level]))[0].numpy()[0])
  expected_mean = math.sqrt(alpha_bar) * 0.4
  expected_std = math.sqrt(alpha_bar * 0.09 + 1 - alpha_bar)
  seeds = per_example_noise.example_seeds(tf.range(64), 7)
  model_fn = data.model_fn(d)

  stop = aug.truncation_stop_index(d, level)
  truncated = samplers.ddpm_sample(d, model_fn, (256,), seeds, stop_at=stop,
                                   clip_denoised=False, logvar_coeff=1.0)
  z0 = samplers.ddpm_sample(d, model_fn, (256,), seeds, clip_denoised=False,
                            logvar_coeff=1.0)
  noise = per_example_noise.per_example_normal(
      seeds, (256,), per_example_noise.STREAM_CONDITIONING_AUGMENTATION)
  non_truncated = aug.augment(z0, tf.fill([64], level), noise)
  for z in (truncated.numpy(), non_truncated.numpy()):
    assert z.mean() == pytest.approx(expected_mean, abs=0.03)
    assert z.std() == pytest.approx(expected_std, abs=0.03)


@pytest.mark.parametrize("sigma", [0.4, 0.5, 0.6, 1.3])
def test_gaussian_blur_matches_scipy(sigma):
  images = np.random.default_rng(0).uniform(-1, 1, size=(2, 7, 9, 3))
  got = ca.gaussian_blur(tf.constant(images, tf.float32),
                         tf.constant([sigma, sigma])).numpy()
  # A 3x3 kernel is scipy's Gaussian truncated at radius 1.
  expected = np.stack([
      ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect",
                              truncate=1.0 / sigma + 1e-9) for img in images
  ])
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gaussian_blur_kernel_by_hand_and_per_example_sigma():
  delta = np.zeros((2, 5, 5, 1), np.float32)
  delta[:, 2, 2, 0] = 1.0
  got = ca.gaussian_blur(tf.constant(delta), tf.constant([0.5, 0.4])).numpy()
  for b, sigma in enumerate([0.5, 0.4]):
    w = math.exp(-1 / (2 * sigma**2))
    taps = np.array([w, 1.0, w]) / (1 + 2 * w)
    np.testing.assert_allclose(got[b, 1:4, 1:4, 0], np.outer(taps, taps),
                               rtol=1e-5)
  flat = ca.gaussian_blur(tf.fill([1, 4, 4, 3], 0.3), tf.constant([0.5]))
  np.testing.assert_allclose(flat.numpy(), 0.3, rtol=1e-6)


def test_blur_augmentation_applies_to_the_chosen_examples():
  blur = ca.BlurConditioningAugmentation()
  images = tf.constant(
      np.random.default_rng(1).uniform(-1, 1, size=(3, 6, 6, 3)), tf.float32)
  sigma_u = tf.constant([0.0, 0.5, 1.0])
  apply_u = tf.constant([0.1, 0.7, 0.49])  # probability 0.5: blur 0 and 2
  got = blur.augment(images, sigma_u, apply_u).numpy()
  np.testing.assert_allclose(got[1], images.numpy()[1])
  np.testing.assert_allclose(got[0],
                             ca.gaussian_blur(images[:1], [0.4]).numpy()[0],
                             rtol=1e-6)
  np.testing.assert_allclose(got[2],
                             ca.gaussian_blur(images[2:], [0.6]).numpy()[0],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="probability"):
    ca.BlurConditioningAugmentation(probability=1.5)
