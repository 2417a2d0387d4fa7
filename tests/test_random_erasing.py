"""DeiT's random erasing: how often, which rectangles, what noise, and only
there; its place after RandAugment in the recipe's augmentation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import random_erasing
from cdm_tf.classifiers import recipes

GREY = 0.5


def _seed(value):
  return tf.constant([value, 0], tf.int64)


def _grey(count, size=16):
  return np.full((count, size, size, 3), GREY, "float32")


def _rectangle(changed):
  """(top, left, height, width) of the changed pixels of one image [H, W],
  asserting that they form one filled rectangle."""
  rows = np.nonzero(changed.any(axis=1))[0]
  cols = np.nonzero(changed.any(axis=0))[0]
  top, left = rows[0], cols[0]
  height, width = rows[-1] - top + 1, cols[-1] - left + 1
  box = np.zeros_like(changed)
  box[top:top + height, left:left + width] = True
  np.testing.assert_array_equal(changed, box)
  return top, left, height, width


def test_a_quarter_of_the_images_is_erased():
  count = 4000
  layer = random_erasing.RandomErasing(0.25)
  images = _grey(count)
  changed = np.asarray(layer(images, _seed(1))) != images
  erased = changed.reshape(count, -1).any(axis=1)
  # Binomial(4000, 0.25): standard deviation 0.0068.
  assert abs(erased.mean() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / count)
  # A whole rectangle of every channel, nothing else.
  for image_changed in changed[erased][:200]:
    np.testing.assert_array_equal(image_changed[..., 0], image_changed[..., 2])
    _rectangle(image_changed[..., 0])


def test_rectangles_follow_timms_area_and_aspect_laws():
  # A large image keeps rounding to whole pixels below 1%.
  count, side = 4000, 1000
  layer = random_erasing.RandomErasing(1.0)
  erase, top, left, height, width = (
      np.asarray(t)
      for t in layer.sample_rectangles(count, side, side, _seed(2)))
  assert erase.all()
  area = height * width / side**2
  assert area.min() >= 0.02 * 0.99 and area.max() <= (1 / 3) * 1.01
  log_ratio = np.log(height / width)
  assert log_ratio.min() >= math.log(0.3) - 0.01
  assert log_ratio.max() <= math.log(1 / 0.3) + 0.01
  # Uniform area and log-uniform aspect ratio (draws that do not fit, a few
  # percent of the tall or wide large ones, are redrawn): the mean area is
  # near (0.02 + 1/3) / 2, and log(h / w) is symmetric and flat.
  assert abs(area.mean() - (0.02 + 1 / 3) / 2) < 0.01
  assert abs(np.mean(log_ratio > 0) - 0.5) < 0.03
  half = math.log(1 / 0.3) / 2
  assert abs(np.mean(np.abs(log_ratio) < half) - 0.5) < 0.04
  # Inside the image, corners over all positions that fit.
  assert (top >= 0).all() and (top + height <= side).all()
  assert (left >= 0).all() and (left + width <= side).all()
  assert top.min() == 0 or (top + height).max() == side or (np.ptp(top)
                                                            > side / 2)


def test_erased_pixels_are_standard_normal_after_the_models_normalisation():
  mean, std = models.IMAGENET_MEAN, models.IMAGENET_STD
  layer = random_erasing.RandomErasing(1.0, input_mean=mean, input_std=std)
  images = _grey(200, size=32)
  erased = np.asarray(layer(images, _seed(3)))
  changed = erased != images
  normalised = (erased - np.array(mean)) / np.array(std)
  for channel in range(3):
    values = normalised[..., channel][changed[..., channel]]
    assert values.size > 10_000
    assert abs(values.mean()) < 0.03 and abs(values.std() - 1) < 0.03
  # Untouched pixels are the input, exactly.
  np.testing.assert_array_equal(erased[~changed], images[~changed])


def test_single_images_seeds_and_probability_zero():
  layer = random_erasing.RandomErasing(1.0)
  image = _grey(1)[0]
  erased = np.asarray(layer(image, _seed(4)))
  assert erased.shape == image.shape and (erased != image).any()
  # Stateless: the same seed erases the same way, another seed otherwise.
  np.testing.assert_array_equal(layer(image, _seed(4)), erased)
  assert not np.array_equal(layer(image, _seed(5)), erased)
  never = random_erasing.RandomErasing(0.0)
  np.testing.assert_array_equal(never(_grey(8), _seed(4)), _grey(8))


def test_works_in_tf_data():
  layer = random_erasing.RandomErasing(1.0)
  dataset = tf.data.Dataset.from_tensor_slices(_grey(6)).enumerate().map(
      lambda index, image: layer(image, tf.stack([index, index])))
  images = np.stack(list(dataset.as_numpy_iterator()))
  assert images.shape == (6, 16, 16, 3)
  assert all((image != GREY).any() for image in images)


def test_bad_arguments_are_value_errors():
  with pytest.raises(ValueError, match="probability"):
    random_erasing.RandomErasing(1.5)
  with pytest.raises(ValueError, match="area_range"):
    random_erasing.RandomErasing(0.25, area_range=(0.5, 0.1))
  with pytest.raises(ValueError, match="aspect_ratio_range"):
    random_erasing.RandomErasing(0.25, aspect_ratio_range=(0.0, 3.0))
  with pytest.raises(ValueError, match="input_std"):
    random_erasing.RandomErasing(0.25, input_mean=(0.5,), input_std=(0.5, 0.5))
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    random_erasing.RandomErasing(0.25)(np.zeros((8, 8, 1), "float32"), _seed(0))


class _Blackout:
  """A stand-in RandAugment that makes every image black."""

  def __call__(self, image, seed):
    return tf.zeros_like(image)


def test_recipe_erases_after_randaugment_with_the_models_statistics():
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=8, optimizer="adamw",
                                    learning_rate=0.1, decay="cosine",
                                    weight_decay=None, warmup_epochs=0,
                                    random_erasing=1.0)
  mean, std = models.MINUS_ONE_TO_ONE_MEAN, models.MINUS_ONE_TO_ONE_STD
  augmentation = recipes.create_training_augmentation(recipe, 4, seed=0,
                                                      input_mean=mean,
                                                      input_std=std)
  layer = augmentation.random_erasing
  assert isinstance(layer, random_erasing.RandomErasing)
  assert layer.probability == 1.0
  assert layer.input_mean == mean and layer.input_std == std
  augmentation.randaugment = _Blackout()
  image, _ = augmentation.augment_image(tf.fill([16, 16, 3], GREY), 0, _seed(7))
  image = np.asarray(image)
  # Erasing came second: black around a noise rectangle.
  changed = image != 0.0
  assert changed.any()
  _rectangle(changed[..., 0])
  assert recipes.create_training_augmentation(
      recipes.ClassifierRecipe(**dict(recipe.__dict__, random_erasing=None)),
      4).random_erasing is None
  with pytest.raises(ValueError, match="random_erasing"):
    recipes.ClassifierRecipe(**dict(recipe.__dict__, random_erasing=1.5))
