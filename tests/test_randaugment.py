"""RandAugment as the recipes' sources run it (cdm_tf.classifiers.randaugment):
level -> argument tables transcribed from the reference code, random signs,
ops on hand-made pixels, and whole images inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import randaugment

MAGNITUDES = (0, 9, 10, 15)

# tensorflow/tpu models/official/efficientnet/autoaugment.py:
# distort_image_with_randaugment's available_ops, and level_to_arg with its
# translate_const=100, cutout_const=40; levels are not clipped. Positive
# side of the signed ops.
TPU_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize",
           "Solarize", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
           "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
TPU_ARGUMENTS = {
    "Rotate": (0, 27, 30, 45),  # level / 10 * 30 degrees
    "ShearX": (0, 0.27, 0.3, 0.45),  # level / 10 * 0.3
    "ShearY": (0, 0.27, 0.3, 0.45),
    "TranslateX": (0, 90, 100, 150),  # level / 10 * 100 pixels
    "TranslateY": (0, 90, 100, 150),
    "Color": (0.1, 1.72, 1.9, 2.8),  # level / 10 * 1.8 + 0.1
    "Contrast": (0.1, 1.72, 1.9, 2.8),
    "Brightness": (0.1, 1.72, 1.9, 2.8),
    "Sharpness": (0.1, 1.72, 1.9, 2.8),
    # int(level / 10 * 4) = 0, 3, 4, 6 bits; TensorFlow clamps the shift
    # 8 - 0 to 7, so 0 bits keep 1.
    "Posterize": (1, 3, 4, 6),
    # int(level / 10 * 256) = 0, 230, 256, 384, compared with uint8 pixels
    # as a uint8: 256 -> 0, 384 -> 128.
    "Solarize": (0, 230, 0, 128),
    "SolarizeAdd": (0, 99, 110, 165),  # int(level / 10 * 110)
    "Cutout": (0, 36, 40, 60),  # int(level / 10 * 40) pixels, half side
}
# timm/data/auto_augment.py: _RAND_INCREASING_TRANSFORMS ("inc1") and
# LEVEL_TO_ARG; AugmentOp clips levels to [0, _LEVEL_DENOM = 10], so 15 acts
# as 10; translate_pct 0.45.
TIMM_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate",
            "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
            "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
            "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel")
TIMM_ARGUMENTS = {
    "Rotate": (0, 27, 30, 30),
    "ShearX": (0, 0.27, 0.3, 0.3),
    "ShearY": (0, 0.27, 0.3, 0.3),
    "TranslateXRel": (0, 0.405, 0.45, 0.45),  # level / 10 * 0.45 of a side
    "TranslateYRel": (0, 0.405, 0.45, 0.45),
    # max(0.1, 1 + level / 10 * 0.9), or 1 - ... on the negative side.
    "ColorIncreasing": (1, 1.81, 1.9, 1.9),
    "ContrastIncreasing": (1, 1.81, 1.9, 1.9),
    "BrightnessIncreasing": (1, 1.81, 1.9, 1.9),
    "SharpnessIncreasing": (1, 1.81, 1.9, 1.9),
    "PosterizeIncreasing": (4, 1, 0, 0),  # 4 - int(level / 10 * 4)
    "SolarizeIncreasing": (256, 26, 0, 0),  # 256 - int(level / 10 * 256)
    "SolarizeAdd": (0, 99, 110, 110),
}
TIMM_NEGATIVE_ENHANCE = (1, 0.19, 0.1, 0.1)
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
          "TranslateXRel", "TranslateYRel")
ARGUMENT_FREE = ("AutoContrast", "Equalize", "Invert")


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def _constant(value, size=4):
  return np.full((size, size, 3), value, np.uint8)


def _op(image, op, argument, variant="tpu", seed=None):
  return randaugment.apply_op(image, op, argument, variant, seed).numpy()


def test_op_lists_are_the_references():
  assert randaugment.VARIANTS["tpu"].ops == TPU_OPS
  assert randaugment.VARIANTS["timm"].ops == TIMM_OPS
  assert set(TPU_ARGUMENTS) | set(ARGUMENT_FREE) == set(TPU_OPS)
  assert set(TIMM_ARGUMENTS) | set(ARGUMENT_FREE) == set(TIMM_OPS)


@pytest.mark.parametrize("variant,table", [("tpu", TPU_ARGUMENTS),
                                           ("timm", TIMM_ARGUMENTS)])
def test_level_to_argument_matches_the_reference_tables(variant, table):
  for op, expected in table.items():
    got = [
        float(randaugment.level_to_argument(op, m, variant)) for m in MAGNITUDES
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6,
                               err_msg=f"{variant} {op}")
    negated = [
        float(randaugment.level_to_argument(op, m, variant, negate=True))
        for m in MAGNITUDES
    ]
    if op in SIGNED:
      np.testing.assert_allclose(negated, [-v for v in expected], rtol=1e-6,
                                 atol=1e-6)
    elif op.endswith("Increasing") and not op.startswith(
        ("Posterize", "Solarize")):
      np.testing.assert_allclose(negated, TIMM_NEGATIVE_ENHANCE, rtol=1e-6)
    else:
      assert negated == got, f"{op} has no sign in the reference"
  for op in ARGUMENT_FREE:
    assert randaugment.level_to_argument(op, 9, variant) is None


def test_level_to_argument_rejects_unknown_ops_and_variants():
  with pytest.raises(ValueError, match="Cutout"):
    randaugment.level_to_argument("Cutout", 9, "timm")
  with pytest.raises(ValueError, match="PosterizeIncreasing"):
    randaugment.level_to_argument("PosterizeIncreasing", 9, "tpu")
  with pytest.raises(ValueError, match="variant"):
    randaugment.level_to_argument("Rotate", 9, "keras")


def test_signs_are_random_and_tpu_levels_fixed():
  tpu = {
      float(randaugment.sample_argument("Rotate", 9, "tpu", _seed(i)))
      for i in range(40)
  }
  assert tpu == {27.0, -27.0}
  shears = {
      round(float(randaugment.sample_argument("ShearX", 15, "tpu", _seed(i))),
            6) for i in range(40)
  }
  assert shears == {0.45, -0.45}
  # The TPU enhance factors have no sign.
  assert {
      round(float(randaugment.sample_argument("Color", 9, "tpu", _seed(i))), 6)
      for i in range(10)
  } == {1.72}


def test_timm_levels_are_noisy_clipped_and_signed():
  rotations = np.array([
      float(randaugment.sample_argument("Rotate", 9, "timm", _seed(i)))
      for i in range(400)
  ])
  assert (rotations > 0).any() and (rotations < 0).any()
  levels = np.abs(rotations) / 3.0  # 30 degrees at level 10
  assert levels.max() <= 10.0 + 1e-6
  # N(9, 0.5) clipped to [0, 10]: mean ~9 (the clip takes off ~0.004),
  # standard deviation ~0.5.
  assert levels.mean() == pytest.approx(9.0, abs=0.1)
  assert levels.std() == pytest.approx(0.5, abs=0.08)
  factors = np.array([
      float(randaugment.sample_argument("ColorIncreasing", 9, "timm", _seed(i)))
      for i in range(100)
  ])
  assert ((factors > 1.5) | (factors < 0.5)).all()
  assert (factors > 1).any() and (factors < 1).any()
  # Magnitude 15 acts as 10: the level never exceeds 10.
  big = [
      abs(float(randaugment.sample_argument("Rotate", 15, "timm", _seed(i))))
      for i in range(20)
  ]
  assert big == [pytest.approx(30.0)] * 20


def test_posterize_keeps_the_top_bits():
  assert (_op(_constant(0x5F), "Posterize", 4) == 0x50).all()
  assert (_op(_constant(0x5F), "Posterize", 8) == 0x5F).all()
  assert (_op(_constant(0xC5), "Posterize", 1) == 0x80).all()
  # timm (PIL): 0 bits is black.
  assert (_op(_constant(0xC5), "PosterizeIncreasing", 0, "timm") == 0).all()
  # TPU magnitude 0 keeps 1 bit.
  bits = randaugment.level_to_argument("Posterize", 0, "tpu")
  assert (_op(_constant(0xC5), "Posterize", bits) == 0x80).all()


def test_solarize_inverts_at_or_above_the_threshold():
  row = np.array([0, 100, 127, 128, 200, 255], np.uint8)
  image = np.stack([row] * 3, axis=-1)[None]
  np.testing.assert_array_equal(
      _op(image, "Solarize", 128)[0, :, 0], [0, 100, 127, 127, 55, 0])
  np.testing.assert_array_equal(_op(image, "Solarize", 0)[0, :, 0], 255 - row)
  np.testing.assert_array_equal(
      _op(image, "SolarizeIncreasing", 256, "timm")[0, :, 0], row)
  # TPU magnitude 10 (threshold 256 -> 0) inverts everything.
  threshold = randaugment.level_to_argument("Solarize", 10, "tpu")
  np.testing.assert_array_equal(
      _op(image, "Solarize", threshold)[0, :, 0], 255 - row)
  np.testing.assert_array_equal(
      _op(image, "SolarizeAdd", 110)[0, :, 0], [110, 210, 237, 128, 200, 255])
  np.testing.assert_array_equal(
      _op(image, "SolarizeAdd", 165)[0, :, 0], [165, 255, 255, 128, 200, 255])


def test_invert_brightness_and_color():
  image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), np.uint8)
  np.testing.assert_array_equal(_op(image, "Invert", None), 255 - image)
  np.testing.assert_array_equal(_op(image, "Brightness", 1.0), image)
  # Blends truncate to 8 bits: 101 * 0.5 = 50.5 -> 50.
  halved = _op(np.array([[[200, 101, 7]]], np.uint8), "Brightness", 0.5)
  np.testing.assert_array_equal(halved, [[[100, 50, 3]]])
  # Brightness 1.9 clips at 255.
  np.testing.assert_array_equal(
      _op(np.array([[[200, 100, 0]]], np.uint8), "Brightness", 1.9),
      [[[255, 190, 0]]])
  grey = _op(image, "Color", 0.0)
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1]
                                                   == grey[..., 2]).all()
  np.testing.assert_array_equal(_op(_constant(77), "Color", 1.72),
                                _constant(77))


def test_contrast_grey_level_per_variant():
  image = np.zeros((16, 16, 3), np.uint8)
  image[:8] = 200
  # timm / PIL: towards the mean grey level, 100.
  assert (_op(image, "ContrastIncreasing", 0.0, "timm") == 100).all()
  # The TPU code: towards 16 * 16 / 256 = 1 whatever the image.
  assert (_op(image, "Contrast", 0.0) == 1).all()
  np.testing.assert_array_equal(_op(image, "Contrast", 1.0), image)


def test_autocontrast_and_equalize():
  image = np.zeros((2, 2, 3), np.uint8)
  image[..., 0] = [[0, 10], [20, 51]]  # stretched by 255 / 51 = 5
  image[..., 1] = 40  # flat: unchanged
  image[..., 2] = [[100, 100], [101, 101]]
  stretched = _op(image, "AutoContrast", None)
  np.testing.assert_array_equal(stretched[..., 0], [[0, 50], [100, 255]])
  np.testing.assert_array_equal(stretched[..., 1], 40)
  np.testing.assert_array_equal(stretched[..., 2], [[0, 0], [255, 255]])
  # Two levels over 1024 pixels: step (1024 - 512) // 255 = 2, table
  # (0 + 1) // 2 = 0 for 10 and (512 + 1) // 2 = 256 -> 255 for 20 (PIL).
  two_levels = np.full((32, 32, 3), 10, np.uint8)
  two_levels[16:] = 20
  equalized = _op(two_levels, "Equalize", None)
  np.testing.assert_array_equal(equalized[:16], 0)
  np.testing.assert_array_equal(equalized[16:], 255)
  # Fewer than 256 pixels besides the last level: step 0, unchanged.
  np.testing.assert_array_equal(_op(image, "Equalize", None), image)


def test_sharpness_blends_with_pil_smooth():
  image = np.zeros((5, 5, 3), np.uint8)
  image[2, 2] = 255
  smooth = _op(image, "Sharpness", 0.0)
  # Centre 255 * 5 / 13 = 98.08, neighbours 255 / 13 = 19.6, truncated;
  # the one-pixel border is the image's own.
  np.testing.assert_array_equal(smooth[1:4, 1:4, 0],
                                [[19, 19, 19], [19, 98, 19], [19, 19, 19]])
  np.testing.assert_array_equal(smooth[0], 0)
  np.testing.assert_array_equal(_op(image, "Sharpness", 1.0), image)


def _pattern(size=5):
  return np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3)


def test_rotate_by_right_angles():
  image = _pattern()
  # Positive degrees turn counter-clockwise (PIL, tf.contrib.image).
  np.testing.assert_array_equal(_op(image, "Rotate", 90.0), np.rot90(image, 1))
  np.testing.assert_array_equal(_op(image, "Rotate", -90.0),
                                np.rot90(image, -1))
  np.testing.assert_array_equal(_op(image, "Rotate", 180.0), np.rot90(image, 2))


def test_translate_moves_content_and_fills():
  image = _pattern()
  moved = _op(image, "TranslateX", 2.0)
  # Pixel x takes input x + 2 (PIL's affine (1, 0, 2, 0, 1, 0)).
  np.testing.assert_array_equal(moved[:, :3], image[:, 2:])
  np.testing.assert_array_equal(moved[:, 3:], 128)
  moved = _op(image, "TranslateY", -1.0)
  np.testing.assert_array_equal(moved[1:], image[:-1])
  np.testing.assert_array_equal(moved[0], 128)
  # timm: a fraction of the side, ImageNet-mean fill.
  moved = _op(image, "TranslateXRel", 0.4, "timm")
  np.testing.assert_array_equal(moved[:, :3], image[:, 2:])
  np.testing.assert_array_equal(moved[:, 3:],
                                np.broadcast_to([124, 116, 104], (5, 2, 3)))


def test_shear_shifts_rows():
  image = _pattern()
  sheared = _op(image, "ShearX", 1.0)
  # Row y takes input x + y.
  for y in range(5):
    np.testing.assert_array_equal(sheared[y, :5 - y], image[y, y:])
    np.testing.assert_array_equal(sheared[y, 5 - y:], 128)
  sheared = _op(image, "ShearY", -1.0)
  for x in range(5):
    np.testing.assert_array_equal(sheared[x:, x], image[:5 - x, x])


def test_cutout_fills_a_clipped_square():
  image = np.random.default_rng(1).integers(0, 128, (16, 16, 3), np.uint8)
  sizes = set()
  for i in range(30):
    out = _op(image, "Cutout", 3, seed=_seed(i))
    filled = (out == 128).all(axis=-1)
    rows, columns = np.nonzero(filled)
    assert filled.any()
    np.testing.assert_array_equal(out[~filled], image[~filled])
    height = rows.max() - rows.min() + 1
    width = columns.max() - columns.min() + 1
    assert filled.sum() == height * width  # one rectangle
    sizes.add((height, width))
  assert (6, 6) in sizes and max(sizes) <= (6, 6)
  assert any(h < 6 or w < 6 for h, w in sizes)  # clipped at a border
  with pytest.raises(ValueError, match="seed"):
    randaugment.apply_op(image, "Cutout", 3, "tpu")


def _image(size=32, seed=0):
  return np.random.default_rng(seed).uniform(0, 1,
                                             (size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("variant,magnitude", [("tpu", 10), ("tpu", 15),
                                               ("timm", 9)])
def test_output_is_a_float_image_of_8_bit_levels(variant, magnitude):
  augment = randaugment.RandAugment(variant, magnitude)
  for i in range(4):
    out = augment(_image(), _seed(i)).numpy()
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)


def _augmented(augment, count, image):
  """Image ``index`` of the dataset is augmented with seed [index, 5]."""
  dataset = tf.data.Dataset.from_tensors(image).repeat(count).enumerate()
  return dataset.map(
      lambda index, x: augment(x, tf.stack([index,
                                            tf.constant(5, tf.int64)])),
      num_parallel_calls=4)


def _images(dataset):
  return np.stack(list(dataset.as_numpy_iterator()))


def test_runs_in_tf_data_deterministically_per_seed():
  image = _image()
  augment = randaugment.RandAugment("timm", 9)
  dataset = _augmented(augment, 16, image)
  first = _images(dataset)
  np.testing.assert_array_equal(first, _images(dataset))
  assert len({x.tobytes() for x in first}) > 4
  # Eager with the same seed: the same image.
  np.testing.assert_array_equal(
      augment(image, tf.constant([3, 5], tf.int64)).numpy(), first[3])


def test_tpu_always_applies_timm_half_the_time():
  image = _image(size=16)
  quantized = np.round(image * 255) / 255
  unchanged = {}
  for variant, magnitude in (("tpu", 10), ("timm", 9)):
    outputs = _images(
        _augmented(randaugment.RandAugment(variant, magnitude, num_layers=1),
                   120, image))
    unchanged[variant] = np.mean(
        [np.abs(x - quantized).max() < 1e-6 for x in outputs])
  # timm skips an op with probability 0.5 (every op changes this image);
  # the TPU code always applies it.
  assert 0.35 <= unchanged["timm"] <= 0.65
  assert unchanged["tpu"] <= 0.15


def test_bad_arguments_are_value_errors():
  with pytest.raises(ValueError, match="variant"):
    randaugment.RandAugment("keras", 9)
  with pytest.raises(ValueError, match="magnitude"):
    randaugment.RandAugment("tpu", -1)
  with pytest.raises(ValueError, match="magnitude"):
    randaugment.RandAugment("tpu", None)
  with pytest.raises(ValueError, match="num_layers"):
    randaugment.RandAugment("tpu", 9, num_layers=0)
  augment = randaugment.RandAugment("tpu", 9)
  with pytest.raises(ValueError, match="float32"):
    augment(np.zeros((4, 4, 3), np.uint8), _seed(0))
  with pytest.raises(ValueError, match="RGB"):
    augment(np.zeros((2, 4, 4, 3), np.float32), _seed(0))
  with pytest.raises(ValueError, match="uint8"):
    randaugment.apply_op(np.zeros((4, 4, 3), np.float32), "Invert", None, "tpu")
