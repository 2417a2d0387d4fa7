import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import guidance


def test_guidance_arithmetic_by_hand():
  cond, uncond = tf.constant([[1.0, -2.0]]), tf.constant([[0.5, 1.0]])
  # w = 1.25: 1.25 * cond - 0.25 * uncond.
  got = guidance.classifier_free_guidance(cond, uncond, 1.25, False)
  np.testing.assert_allclose(got.numpy(), [[1.125, -2.75]], rtol=1e-6)
  # w = 1 is the conditional model, w = 0 the unconditional one.
  np.testing.assert_allclose(
      guidance.classifier_free_guidance(cond, uncond, 1.0, False).numpy(),
      cond.numpy())
  np.testing.assert_allclose(
      guidance.classifier_free_guidance(cond, uncond, 0.0, False).numpy(),
      uncond.numpy())


def test_learned_variance_comes_from_the_conditional_branch():
  cond = tf.constant([[1.0, 0.3]])  # eps, v
  uncond = tf.constant([[3.0, -0.9]])
  got = guidance.classifier_free_guidance(cond, uncond, 2.0, True).numpy()
  np.testing.assert_allclose(got, [[2 * 1.0 - 3.0, 0.3]], rtol=1e-6)


def _label_model(x, time_input, labels):
  """A stand-in network: output = x + label + time / 1000."""
  return (x + tf.cast(labels, tf.float32)[:, None] +
          time_input[:, None] / 1000.0)


def test_guided_model_fn_runs_both_branches_in_one_call():
  calls = []

  def model(x, time_input, labels):
    calls.append(int(x.shape[0]))
    return _label_model(x, time_input, labels)

  fn = guidance.guided_model_fn(model, tf.constant([3, 5]), tf.constant([0, 0]),
                                1.5, False)
  x, time_input = tf.constant([[1.0], [2.0]]), tf.constant([100.0, 200.0])
  got = fn(x, time_input).numpy()
  cond = _label_model(x, time_input, tf.constant([3, 5])).numpy()
  uncond = _label_model(x, time_input, tf.constant([0, 0])).numpy()
  np.testing.assert_allclose(got, 1.5 * cond - 0.5 * uncond, rtol=1e-6)
  assert calls == [4]


def test_weight_one_skips_the_unconditional_branch():
  calls = []

  def model(x, time_input, labels):
    calls.append(int(x.shape[0]))
    return _label_model(x, time_input, labels)

  fn = guidance.guided_model_fn(model, tf.constant([3]), tf.constant([0]), 1.0,
                                False)
  got = fn(tf.constant([[1.0]]), tf.constant([0.0])).numpy()
  assert got.item() == pytest.approx(4.0)
  assert calls == [1]
