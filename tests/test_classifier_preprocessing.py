"""Tests of the CAS evaluation crop and the training crops (random-resized,
random shift)."""

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cdm_tf.data import classifier_preprocessing as cp
from cdm_tf.data import schema
from tests import real_photo_records as photos


def _pil_resize(array, width, height):
  """PIL's (antialiased) bilinear resize: an independent reference."""
  return np.asarray(
      Image.fromarray(np.asarray(array)).resize((width, height),
                                                Image.BILINEAR), np.float32)


def _seed(a, b=0):
  return tf.constant([a, b], tf.int64)


@pytest.mark.parametrize("image_size,expected", [(224, 256), (160, 183),
                                                 (190, 217), (384, 439),
                                                 (32, 37)])
def test_resize_size_scales_256_over_224(image_size, expected):
  assert cp.resize_size(image_size) == expected


def test_real_photo_short_side_becomes_256():
  photo = photos.decode_photo(photos.LANDSCAPE)
  assert photo.shape == (683, 1024, 3)
  # 1024 * 256 / 683 = 383.8 -> 384.
  assert cp.resize_short_side(photo, 256).shape == (256, 384, 3)
  portrait = tf.transpose(photo, [1, 0, 2])
  assert cp.resize_short_side(portrait, 256).shape == (384, 256, 3)
  # 683 high, 512 wide: 683 * 256 / 512 = 341.5, rounded half to even -> 342.
  assert cp.resize_short_side(photo[:, :512], 256).shape == (342, 256, 3)


def test_real_photo_eval_crop_is_the_centre_of_the_resize():
  photo = photos.decode_photo(photos.LANDSCAPE)
  out = cp.preprocess_for_eval(photo)
  assert out.shape == (224, 224, 3) and out.dtype == tf.float32
  values = out.numpy()
  assert 0.0 <= values.min() and values.max() <= 1.0
  # Centre of 256 x 384: rows 16..240, columns 80..304.
  expected = _pil_resize(photo, 384, 256)[16:240, 80:304] / 255.0
  assert np.abs(values - expected).mean() < 1.5 / 255
  shifted = _pil_resize(photo, 384, 256)[16:240, 84:308] / 255.0
  assert np.abs(values - shifted).mean() > 5.0 / 255


def test_generated_256_is_only_centre_cropped():
  generated = tf.image.resize(photos.decode_photo(photos.SQUARE), [256, 256],
                              antialias=True)
  generated = tf.cast(tf.round(generated), tf.uint8)
  out = cp.preprocess_for_eval(generated, generated=True).numpy()
  expected = generated.numpy()[16:240, 16:240] / 255.0
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_generated_images_are_resized_ignoring_aspect_ratio():
  photo = photos.decode_photo(photos.LANDSCAPE)
  out = cp.preprocess_for_eval(photo, generated=True).numpy()
  expected = _pil_resize(photo, 256, 256)[16:240, 16:240] / 255.0
  assert np.abs(out - expected).mean() < 1.5 / 255
  # The real-image path keeps the aspect ratio, so it sees another region.
  real = cp.preprocess_for_eval(photo).numpy()
  assert np.abs(out - real).mean() > 5.0 / 255


@pytest.mark.parametrize("image_size", [160, 190, 384])
def test_eval_for_other_model_sizes(image_size):
  photo = photos.decode_photo(photos.SQUARE)
  out = cp.preprocess_for_eval(photo, image_size).numpy()
  assert out.shape == (image_size, image_size, 3)
  side = cp.resize_size(image_size)
  offset = (side - image_size) // 2
  expected = _pil_resize(photo, side, side)[offset:offset + image_size,
                                            offset:offset + image_size]
  assert np.abs(out - expected / 255.0).mean() < 1.5 / 255


def test_eval_downsampling_is_antialiased():
  # 768 -> 256 (every 3rd pixel): plain bilinear samples pixel centres of a
  # 1-pixel checkerboard and reads pure black / white; a low-pass gives grey.
  board = (np.indices((768, 768)).sum(axis=0) % 2) * 255
  board = tf.constant(np.repeat(board[..., None], 3, axis=-1), tf.uint8)
  aliased = tf.image.resize(tf.cast(board, tf.float32), [256, 256]).numpy()
  assert aliased.min() == 0.0 and aliased.max() == 255.0
  out = cp.preprocess_for_eval(board, generated=True).numpy()
  assert np.abs(out - 0.5).max() < 0.03


def test_tiny_images_are_resized_up():
  tiny = tf.fill([32, 32, 3], tf.constant(200, tf.uint8))
  for generated in (False, True):
    out = cp.preprocess_for_eval(tiny, generated=generated).numpy()
    assert out.shape == (224, 224, 3)
    np.testing.assert_allclose(out, 200 / 255, atol=1e-6)
  out = cp.preprocess_for_train(tiny, _seed(1)).numpy()
  assert out.shape == (224, 224, 3)
  np.testing.assert_allclose(out, 200 / 255, atol=1e-6)
  small_photo = tf.image.resize(photos.decode_photo(photos.SQUARE), [32, 32],
                                antialias=True)
  small_photo = tf.cast(tf.round(small_photo), tf.uint8)
  for seed in range(4):
    assert cp.random_resized_crop(small_photo, 160,
                                  _seed(seed)).shape == (160, 160, 3)


def test_random_crop_boxes_respect_the_ranges():
  shape = tf.constant([683, 1024, 3])
  for seed in range(40):
    begin, size = (t.numpy() for t in cp.random_crop_box(shape, _seed(seed)))
    assert (begin >= 0).all() and (begin + size <= [683, 1024]).all()
    area = size[0] * size[1] / (683 * 1024)
    assert 0.08 - 0.01 <= area <= 1.0
    ratio = size[1] / size[0]
    assert 3 / 4 - 0.05 <= ratio <= 4 / 3 + 0.05


def test_random_crop_falls_back_to_a_centre_crop():
  # No box with >= 90% of a 32 x 1000 strip has a ratio <= 4/3: the fallback
  # is the centred 32 x round(32 * 4 / 3) = 32 x 43 box.
  begin, size = cp.random_crop_box([32, 1000, 3], _seed(0),
                                   area_range=(0.9, 1.0))
  np.testing.assert_array_equal(size, [32, 43])
  np.testing.assert_array_equal(begin, [0, (1000 - 43) // 2])
  tall_begin, tall_size = cp.random_crop_box([1000, 32, 3], _seed(0),
                                             area_range=(0.9, 1.0))
  np.testing.assert_array_equal(tall_size, [43, 32])  # 32 / (3 / 4) = 42.7
  np.testing.assert_array_equal(tall_begin, [(1000 - 43) // 2, 0])
  # When the whole image has an allowed ratio, the fallback is all of it.
  begin, size = cp.random_crop_box([100, 120, 3], _seed(0),
                                   area_range=(1.0, 1.0))
  np.testing.assert_array_equal(size, [100, 120])
  np.testing.assert_array_equal(begin, [0, 0])


def test_random_resized_crop_is_seeded():
  photo = photos.decode_photo(photos.LANDSCAPE)
  first = cp.random_resized_crop(photo, 224, _seed(1))
  assert first.shape == (224, 224, 3) and first.dtype == tf.float32
  values = first.numpy()
  assert 0.0 <= values.min() and values.max() <= 1.0
  np.testing.assert_array_equal(
      cp.random_resized_crop(photo, 224, _seed(1)).numpy(), values)
  crops = [
      cp.random_resized_crop(photo, 224, _seed(s)).numpy() for s in range(2, 6)
  ]
  for crop in crops:
    assert np.abs(crop - values).mean() > 0.01


def test_random_resized_crop_is_the_resized_box():
  photo = photos.decode_photo(photos.LANDSCAPE)
  (top, left), (height, width) = (
      t.numpy() for t in cp.random_crop_box(tf.shape(photo), _seed(7)))
  box = photo.numpy()[top:top + height, left:left + width]
  expected = _pil_resize(box, 224, 224) / 255.0
  got = cp.random_resized_crop(photo, 224, _seed(7)).numpy()
  assert np.abs(got - expected).mean() < 1.5 / 255


def test_random_shift_is_the_eval_crop_moved():
  """A shift of 0 is the evaluation crop; with max_shift 2 each output is
  the evaluation resize (37 x 37 for S = 32), zero-padded by 2, cropped at
  the centre offset 2 + (dy, dx) with dy, dx in [-2, 2]; every shift
  occurs."""
  rng = np.random.default_rng(0)
  image = rng.integers(1, 256, size=(32, 32, 3), dtype=np.uint8)
  evaluation = cp.preprocess_for_eval(image, 32).numpy()
  np.testing.assert_array_equal(
      cp.random_shifted_crop(image, 32, _seed(0), 0).numpy(), evaluation)
  resized = cp.resize_short_side(image, 37).numpy() / np.float32(255)
  # The 37 x 37 resize itself matches an independent one.
  assert np.abs(resized - _pil_resize(image, 37, 37) / 255).mean() < 1.5 / 255
  padded = np.pad(resized, [(2, 2), (2, 2), (0, 0)])
  shifts = set()
  for seed in range(200):
    out = cp.random_shifted_crop(image, 32, _seed(seed), 2).numpy()
    matches = [(top, left)
               for top in range(5)
               for left in range(5)
               if np.array_equal(out, padded[top + 2:top + 34,
                                             left + 2:left + 34])]
    assert len(matches) == 1, seed
    shifts.add(matches[0])
  assert shifts == {(t, left) for t in range(5) for left in range(5)}
  with pytest.raises(ValueError, match="max_shift"):
    cp.random_shifted_crop(image, 32, _seed(0), -1)


def test_train_flip_keeps_the_crop_and_happens_both_ways():
  photo = photos.decode_photo(photos.SQUARE)
  flips = []
  for seed in range(10):
    unflipped = cp.preprocess_for_train(photo, _seed(seed), 128,
                                        random_flip=False).numpy()
    out = cp.preprocess_for_train(photo, _seed(seed), 128).numpy()
    if np.array_equal(out, unflipped):
      flips.append(False)
    else:
      np.testing.assert_array_equal(out, unflipped[:, ::-1])
      flips.append(True)
    np.testing.assert_array_equal(
        cp.preprocess_for_train(photo, _seed(seed), 128).numpy(), out)
  assert any(flips) and not all(flips)


def test_examples_inside_dataset_map():
  names = [photos.LANDSCAPE, photos.SQUARE]
  dataset = None
  for label, name in zip((541, 243), names):
    element = tf.data.Dataset.from_tensors({
        schema.IMAGE: photos.decode_photo(name),
        schema.LABEL: tf.constant(label), schema.SOURCE: tf.constant(name)
    })
    dataset = element if dataset is None else dataset.concatenate(element)
  base_seed = _seed(11, 12)

  def train(index, example):
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return cp.train_example(example, seed, image_size=160)

  images, labels = next(iter(dataset.enumerate().map(train).batch(2)))
  assert images.shape == (2, 160, 160, 3) and images.dtype == tf.float32
  np.testing.assert_array_equal(labels, [541, 243])
  for index, name in enumerate(names):
    # enumerate() yields int64; fold_in depends on the dtype.
    seed = tf.random.experimental.stateless_fold_in(
        base_seed, tf.constant(index, tf.int64))
    eager = cp.preprocess_for_train(photos.decode_photo(name), seed, 160)
    np.testing.assert_allclose(images[index], eager, atol=1e-5)

  images, labels = next(
      iter(dataset.map(lambda example: cp.eval_example(example, 384)).batch(2)))
  assert images.shape == (2, 384, 384, 3)
  assert labels.dtype == tf.int32
  np.testing.assert_allclose(
      images[1], cp.preprocess_for_eval(photos.decode_photo(photos.SQUARE),
                                        384), atol=1e-5)
