"""Tests of the cascade's crop / resize / flip on real ImageNet photos."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cdm_tf.data import diffusion_preprocessing as dp
from cdm_tf.data import schema
from tests import real_photo_records as photos


def _example(name, label=7):
  return {
      schema.IMAGE: photos.decode_photo(name), schema.LABEL: tf.constant(label),
      schema.SOURCE: tf.constant(name)
  }


def _checkerboard(side):
  """A 1-pixel checkerboard of 0 and 255: the highest representable
  frequency, whose correct downsampled version is uniform grey 127.5."""
  board = (np.indices((side, side)).sum(axis=0) % 2) * 255
  return tf.constant(np.repeat(board[..., None], 3, axis=-1), tf.uint8)


def test_photos_have_the_expected_sizes():
  assert photos.decode_photo(photos.LANDSCAPE).shape == (683, 1024, 3)
  assert photos.decode_photo(photos.SQUARE).shape == (512, 512, 3)


def test_center_crop_is_the_middle_square_of_the_short_side():
  photo = photos.decode_photo(photos.LANDSCAPE).numpy()
  # (1024 - 683) = 341 extra columns: 170 on the left, 171 on the right.
  np.testing.assert_array_equal(
      dp.center_crop_square(photo).numpy(), photo[:, 170:853])
  portrait = np.transpose(photo, (1, 0, 2))
  np.testing.assert_array_equal(
      dp.center_crop_square(portrait).numpy(), portrait[170:853])
  square = photos.decode_photo(photos.SQUARE)
  np.testing.assert_array_equal(
      dp.center_crop_square(square).numpy(), square.numpy())


@pytest.mark.parametrize("resolution", [32, 64, 256, 1024])
def test_preprocess_image_range_dtype_and_shape(resolution):
  out = dp.preprocess_image(photos.decode_photo(photos.LANDSCAPE), resolution)
  assert out.dtype == tf.float32
  assert out.shape == (resolution, resolution, 3)
  values = out.numpy()
  assert values.min() >= -1.0 and values.max() <= 1.0
  assert values.min() < -0.5 and values.max() > 0.5  # a photo, not flat
  # Quantised: every value is an 8-bit level.
  levels = (values + 1.0) * 127.5
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)


def test_matches_pil_bicubic_of_the_center_crop():
  # An independent implementation: PIL's BICUBIC (antialiased) on the crop.
  crop = Image.open(os.path.join(photos.photo_dir(), photos.LANDSCAPE))
  crop = crop.crop((170, 0, 853, 683))
  expected = np.asarray(crop.resize((64, 64), Image.BICUBIC), np.float32)
  photo = photos.decode_photo(photos.LANDSCAPE)
  got = (dp.preprocess_image(photo, 64).numpy() + 1.0) * 127.5
  assert np.abs(got - expected).mean() < 1.5
  # The comparison can tell a one-pixel shift apart.
  assert np.abs(got[:, 1:] - expected[:, :-1]).mean() > 4.0


@pytest.mark.parametrize("source_side,resolution", [(683, 64), (32, 256)])
def test_constant_image_keeps_its_value(source_side, resolution):
  image = tf.fill([source_side, source_side + 100, 3],
                  tf.constant(77, tf.uint8))
  out = dp.preprocess_image(image, resolution).numpy()
  np.testing.assert_allclose(out, 77 / 127.5 - 1.0, atol=1e-6)


def test_downsampling_a_checkerboard_gives_grey_not_aliasing():
  # 288 -> 32 samples every 9th pixel: without a low-pass filter, sample
  # points land on pixel centres and read pure black or white.
  board = _checkerboard(288)
  aliased = tf.image.resize(tf.cast(board, tf.float32), [32, 32],
                            method="bilinear", antialias=False).numpy()
  assert aliased.min() == 0.0 and aliased.max() == 255.0
  # Box average of each 9 x 9 block (what "area" gives), hand-computed:
  # 41 of 81 pixels are of one colour, 40 of the other.
  box = tf.image.resize(tf.cast(board, tf.float32), [32, 32],
                        method="area").numpy()
  np.testing.assert_allclose(np.abs(box - 127.5), 127.5 / 81, atol=1e-3)
  got = (dp.preprocess_image(board, 32, quantize=False).numpy() + 1) * 127.5
  np.testing.assert_allclose(got, box, atol=4.0)
  assert np.abs(got - 127.5).max() < 4.0


def test_downsampled_photo_is_close_to_the_box_average():
  photo = photos.decode_photo(photos.SQUARE)
  # 512 -> 64: the box average of each 8 x 8 block.
  box = tf.reshape(tf.cast(photo, tf.float32), [64, 8, 64, 8, 3])
  box = tf.reduce_mean(box, axis=[1, 3]).numpy()
  got = (dp.preprocess_image(photo, 64).numpy() + 1.0) * 127.5
  assert np.abs(got - box).mean() < 3.0
  # Point sampling (no low-pass) is much further from it.
  sampled = photo.numpy()[3::8, 3::8].astype(np.float32)
  assert np.abs(sampled - box).mean() > 1.5 * np.abs(got - box).mean()


def test_each_resolution_comes_from_the_crop_not_a_chain():
  photo = photos.decode_photo(photos.LANDSCAPE)
  images = dp.cascade_images(photo, (32, 64, 256))
  assert sorted(images) == ["image_256", "image_32", "image_64"]
  for resolution in (32, 64, 256):
    np.testing.assert_array_equal(
        images[dp.image_key(resolution)].numpy(),
        dp.preprocess_image(photo, resolution).numpy())
  chained = dp.preprocess_image(
      tf.cast(dp.to_uint8(images["image_64"]), tf.uint8), 32)
  assert not np.array_equal(chained.numpy(), images["image_32"].numpy())


def test_cascade_example_structure():
  out = dp.cascade_example(_example(photos.LANDSCAPE, label=541), (64, 256))
  assert sorted(out) == ["image_256", "image_64", schema.LABEL]
  assert out[schema.LABEL].dtype == tf.int32
  assert int(out[schema.LABEL]) == 541
  with pytest.raises(ValueError, match="seed"):
    dp.cascade_example(_example(photos.LANDSCAPE), (64,), random_flip=True)
  with pytest.raises(ValueError, match="distinct"):
    dp.cascade_images(photos.decode_photo(photos.SQUARE), (64, 64))


def test_flip_is_identical_at_every_resolution_and_seeded():
  example = _example(photos.LANDSCAPE)
  resolutions = (32, 64, 128)
  plain = dp.cascade_example(example, resolutions)
  decisions = []
  for seed in range(12):
    seed = tf.constant([seed, 3], tf.int64)
    out = dp.cascade_example(example, resolutions, random_flip=True, seed=seed)
    flipped = []
    for resolution in resolutions:
      key = dp.image_key(resolution)
      if np.array_equal(out[key], plain[key]):
        flipped.append(False)
      else:
        np.testing.assert_array_equal(out[key], plain[key].numpy()[:, ::-1])
        flipped.append(True)
    assert len(set(flipped)) == 1, "resolutions flipped differently"
    decisions.append(flipped[0])
    again = dp.cascade_example(example, resolutions, random_flip=True,
                               seed=seed)
    for resolution in resolutions:
      key = dp.image_key(resolution)
      np.testing.assert_array_equal(again[key], out[key])
  assert any(decisions) and not all(decisions)


def test_super_resolution_pair():
  example = _example(photos.SQUARE, label=243)
  low, high, label = dp.super_resolution_pair(example, 64, 256)
  assert low.shape == (64, 64, 3) and high.shape == (256, 256, 3)
  assert int(label) == 243
  images = dp.cascade_images(example[schema.IMAGE], (64, 256))
  np.testing.assert_array_equal(low, images["image_64"])
  np.testing.assert_array_equal(high, images["image_256"])
  with pytest.raises(ValueError, match="smaller"):
    dp.super_resolution_pair(example, 256, 64)
  # Flipped pairs flip together.
  for seed in range(6):
    low_f, high_f, _ = dp.super_resolution_pair(example, 64, 256,
                                                random_flip=True,
                                                seed=tf.constant([seed, 0]))
    low_flipped = not np.array_equal(low_f, low)
    high_flipped = not np.array_equal(high_f, high)
    assert low_flipped == high_flipped


def test_to_uint8_rounds_clips_and_inverts_to_float():
  values = tf.constant([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 1.2])
  # (v + 1) * 127.5 = -63.75, 0, 0.13, 127.5, 191.25, 255, 280.5.
  np.testing.assert_array_equal(
      dp.to_uint8(values).numpy(), [0, 0, 0, 128, 191, 255, 255])
  assert dp.to_uint8(values).dtype == tf.uint8
  every_level = tf.range(256, dtype=tf.int32)
  np.testing.assert_array_equal(
      dp.to_uint8(dp.to_float(tf.cast(every_level, tf.uint8))).numpy(),
      every_level.numpy())
  batch = dp.to_uint8(tf.zeros([2, 4, 4, 3]))
  assert batch.shape == (2, 4, 4, 3)


def test_works_inside_dataset_map_with_per_example_seeds():
  examples = [_example(photos.LANDSCAPE, 541), _example(photos.SQUARE, 243)]
  dataset = tf.data.Dataset.from_tensors(examples[0]).concatenate(
      tf.data.Dataset.from_tensors(examples[1]))
  base_seed = tf.constant([5, 6], tf.int64)

  def preprocess(index, example):
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return dp.super_resolution_pair(example, 32, 64, random_flip=True,
                                    seed=seed)

  low, high, labels = next(iter(dataset.enumerate().map(preprocess).batch(2)))
  assert low.shape == (2, 32, 32, 3) and high.shape == (2, 64, 64, 3)
  np.testing.assert_array_equal(labels, [541, 243])
  for index, example in enumerate(examples):
    # enumerate() yields int64; fold_in depends on the dtype.
    seed = tf.random.experimental.stateless_fold_in(
        base_seed, tf.constant(index, tf.int64))
    eager_low, eager_high, _ = dp.super_resolution_pair(example, 32, 64,
                                                        random_flip=True,
                                                        seed=seed)
    np.testing.assert_allclose(low[index], eager_low, atol=1e-6)
    np.testing.assert_allclose(high[index], eager_high, atol=1e-6)
