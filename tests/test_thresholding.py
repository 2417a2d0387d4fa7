import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import thresholding


def test_static_threshold_clips_to_the_data_range():
  x = tf.constant([[-3.0, -0.5, 0.0, 0.7, 2.0]])
  np.testing.assert_allclose(
      thresholding.static_threshold(x).numpy(), [[-1.0, -0.5, 0.0, 0.7, 1.0]])


@pytest.mark.parametrize("p", [50.0, 90.0, 99.5, 100.0])
def test_per_example_percentile_matches_numpy(p):
  x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype(np.float32)
  got = thresholding.per_example_percentile(tf.constant(x), p).numpy()
  np.testing.assert_allclose(got, np.percentile(x.reshape(3, -1), p, axis=1),
                             rtol=1e-5)


def test_dynamic_threshold_by_hand():
  # |x| sorted: 0, 0.5, 1, 2, 4; the 75th percentile is 2 -> clip to
  # [-2, 2] and divide by 2.
  x = tf.constant([[0.0, -0.5, 1.0, 2.0, -4.0]])
  got = thresholding.dynamic_threshold(x, 75.0).numpy()
  np.testing.assert_allclose(got, [[0.0, -0.25, 0.5, 1.0, -1.0]], rtol=1e-6)


def test_dynamic_threshold_leaves_in_range_examples_alone():
  # s = max(percentile, 1): an example within [-1, 1] is unchanged, per
  # example, even next to a saturated one.
  x = tf.constant([[0.2, -0.9, 0.5, 0.1], [3.0, 3.0, -3.0, 3.0]])
  got = thresholding.dynamic_threshold(x, 99.5).numpy()
  np.testing.assert_allclose(got[0], x.numpy()[0])
  np.testing.assert_allclose(got[1], [1.0, 1.0, -1.0, 1.0], rtol=1e-6)


def test_apply_threshold_prefers_dynamic_and_can_be_off():
  x = tf.constant([[4.0, -2.0, 0.0, 1.0]])
  np.testing.assert_allclose(
      thresholding.apply_threshold(x, False, None).numpy(), x.numpy())
  np.testing.assert_allclose(
      thresholding.apply_threshold(x, True, None).numpy(),
      [[1.0, -1.0, 0.0, 1.0]])
  got = thresholding.apply_threshold(x, True, 100.0).numpy()
  np.testing.assert_allclose(got, [[1.0, -0.5, 0.0, 0.25]], rtol=1e-6)


def test_bad_percentile_raises():
  with pytest.raises(ValueError, match="percentile"):
    thresholding.dynamic_threshold(tf.zeros([1, 2]), 0.0)
