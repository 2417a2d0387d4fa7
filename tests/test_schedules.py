import numpy as np
import pytest

from cdm_tf.diffusion import schedules


def test_linear_schedule_endpoints_and_spacing_at_1000_steps():
  betas = schedules.get_named_beta_schedule("linear", 1000)
  assert betas.dtype == np.float64 and betas.shape == (1000,)
  assert betas[0] == pytest.approx(1e-4, rel=1e-12)
  assert betas[-1] == pytest.approx(0.02, rel=1e-12)
  # beta_2 = 1e-4 + (0.02 - 1e-4) / 999, worked out by hand.
  assert betas[1] == pytest.approx(0.00011991991991991993, rel=1e-12)


@pytest.mark.parametrize("steps", [2000, 4000, 100, 21])
def test_linear_schedule_scales_with_number_of_steps(steps):
  betas = schedules.get_named_beta_schedule("linear", steps)
  scale = 1000 / steps
  assert betas[0] == pytest.approx(1e-4 * scale, rel=1e-12)
  assert betas[-1] == pytest.approx(0.02 * scale, rel=1e-12)
  assert np.allclose(np.diff(betas), np.diff(betas)[0])
  # The scaling keeps the final log signal level near -10 for large T.
  if steps >= 100:
    assert -11.0 < np.sum(np.log1p(-betas)) < -10.0


def test_linear_schedule_rejects_betas_above_one():
  with pytest.raises(ValueError, match="respace"):
    schedules.get_named_beta_schedule("linear", 4)
  with pytest.raises(ValueError, match="respace"):
    schedules.get_named_beta_schedule("linear", 20)


def test_cosine_schedule_matches_the_improved_ddpm_formula():
  betas = schedules.get_named_beta_schedule("cosine", 1000)
  # 1 - f(1/T) / f(0), f(u) = cos^2((u + 0.008) / 1.008 * pi / 2).
  assert betas[0] == pytest.approx(4.128422482196914e-05, rel=1e-9)
  alphas_cumprod = np.cumprod(1 - betas)
  # alpha-bar at u = 1/2 equals f(0.5) / f(0).
  assert alphas_cumprod[499] == pytest.approx(0.49384359044063775, rel=1e-9)
  assert betas.max() == pytest.approx(0.999)  # clipped at the end


def test_cosine_schedule_is_the_same_curve_for_any_number_of_steps():
  ab_1000 = np.cumprod(1 - schedules.get_named_beta_schedule("cosine", 1000))
  ab_4000 = np.cumprod(1 - schedules.get_named_beta_schedule("cosine", 4000))
  assert ab_4000[999] == pytest.approx(0.8470121613269047, rel=1e-9)
  np.testing.assert_allclose(ab_4000[3::4][:-1], ab_1000[:-1], rtol=1e-9)


@pytest.mark.parametrize("name,steps", [("unknown", 1000), ("linear", 0),
                                        ("cosine", 10.5)])
def test_bad_schedule_arguments_raise(name, steps):
  with pytest.raises(ValueError):
    schedules.get_named_beta_schedule(name, steps)
