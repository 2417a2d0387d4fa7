"""RandAugment (Cubuk et al. 2020) as the classifier recipes' references run it.

Tables A.1 and A.2 of Azizi et al. (2023) give a RandAugment magnitude per
recipe; the recipes they cite run one of two implementations, reproduced
here as two variants named after their source:

* ``"tpu"``: ``distort_image_with_randaugment`` of tensorflow/tpu
  (models/official/efficientnet/autoaugment.py), the TPU ResNet / ResNet-RS
  code (Bello et al. 2021); big_vision's ``randaug(2, 10)`` of the ViT-S/16
  recipe (Beyer et al. 2022) is a fork of it with the same ops and levels.
  16 ops (AutoContrast, Equalize, Invert, Rotate, Posterize, Solarize,
  Color, Contrast, Brightness, Sharpness, ShearX, ShearY, TranslateX,
  TranslateY, Cutout, SolarizeAdd; no Identity). Each of the
  ``num_layers`` layers picks one uniformly (with replacement) and always
  applies it at level = magnitude. Levels are not clipped: Table A.1's
  magnitude 15 (ResNet-101/152, ResNet-RS-101/152) rotates by 45 degrees,
  shears by 0.45, translates by 150 pixels and blends enhancements with
  factor 2.8. Translations (100 pixels at level 10) and Cutout (a square of
  side 2 x 40 pixels at level 10) are in pixels whatever the image size;
  empty pixels are grey 128; affine ops sample nearest-neighbour.
* ``"timm"``: timm's ``rand-m9-mstd0.5-inc1`` (timm/data/auto_augment.py),
  DeiT's default (Touvron et al. 2021). The 15 "increasing" ops, whose
  severity grows with the level (AutoContrast, Equalize, Invert, Rotate,
  PosterizeIncreasing, SolarizeIncreasing, SolarizeAdd, ColorIncreasing,
  ContrastIncreasing, BrightnessIncreasing, SharpnessIncreasing, ShearX,
  ShearY, TranslateXRel, TranslateYRel; no Cutout: DeiT erases at random
  instead). Each layer picks one uniformly (with replacement) and applies
  it with probability 0.5 at a level drawn from N(magnitude, 0.5) and
  clipped to [0, 10], so magnitudes above 10 act as 10. Translations are a
  fraction of the side (0.45 at level 10); empty pixels take the ImageNet
  mean (124, 116, 104), the img_mean DeiT's timm transforms pass; affine ops
  sample bilinearly (DeiT asks PIL for bicubic, which TensorFlow's
  projective transform does not offer).

``level_to_argument`` is each op's level -> argument mapping (a table in
the references), ``sample_argument`` adds the variant's level noise and the
reference's random sign (rotations, shears, translations; timm's enhance
factors 1 +- level / 10 * 0.9), and ``apply_op`` applies one op to 8-bit
pixels. The ops follow the TensorFlow definitions of the TPU code, which
mirror PIL's (timm's ops are PIL's; they agree up to rounding of a level).
Where the TPU code computes something other than its PIL model, the "tpu"
variant reproduces what it computes:

* Solarize compares uint8 pixels with int(level / 10 * 256) cast to uint8,
  so the threshold wraps modulo 256: level 10 inverts every pixel (256 ->
  0) and level 15 the pixels >= 128 (big_vision issue 110).
* Posterize shifts by 8 - bits and TensorFlow clamps shifts to [0, 7], so
  the 0 bits of levels below 2.5 keep 1 bit.
* Contrast blends towards the grey level H * W / 256 (clipped to 255), not
  the mean grey level: the histogram's count is summed instead of its
  values (big_vision issue 109).

Images are float32 [H, W, 3] in [0, 1] in and out. Inside, as in both
references (the TPU code casts to uint8, timm works on PIL images), the ops
work on 8-bit levels 0..255: the input is rounded to multiples of 1 / 255.
Randomness comes from an explicit stateless seed, an integer tensor of
shape [2], so a seeded input pipeline is reproducible; everything runs in
graph mode inside ``tf.data.Dataset.map``.
"""

import dataclasses
import math
import numbers
from typing import Optional

import tensorflow as tf

VARIANT_TPU = "tpu"
VARIANT_TIMM = "timm"

# Both references divide levels by 10 (_MAX_LEVEL, timm's _LEVEL_DENOM).
MAX_LEVEL = 10.0
NUM_LAYERS = 2

ARGUMENT_FREE_OPS = ("AutoContrast", "Equalize", "Invert")
ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")


@dataclasses.dataclass(frozen=True)
class Variant:
  """How one reference runs RandAugment.

  Attributes:
    ops: op names, in the reference's order.
    apply_probability: probability that a picked op is applied.
    magnitude_std: standard deviation of the level noise per op.
    max_level: levels are clipped to [0, max_level]; None: not clipped.
    fill: RGB value of pixels that affine ops and Cutout leave empty.
    interpolation: "NEAREST" or "BILINEAR" sampling of the affine ops.
  """

  ops: tuple
  apply_probability: float
  magnitude_std: float
  max_level: Optional[float]
  fill: tuple
  interpolation: str


VARIANTS = {
    # tensorflow/tpu autoaugment.py: distort_image_with_randaugment,
    # replace_value [128] * 3, contrib_image's default NEAREST.
    VARIANT_TPU: Variant(
        ops=("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize",
             "Solarize", "Color", "Contrast", "Brightness", "Sharpness",
             "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
             "SolarizeAdd"), apply_probability=1.0, magnitude_std=0.0,
        max_level=None, fill=(128, 128, 128), interpolation="NEAREST"),
    # timm auto_augment.py: _RAND_INCREASING_TRANSFORMS, AugmentOp's
    # prob=0.5, "mstd0.5", clip to [0, _LEVEL_DENOM]; img_mean of
    # IMAGENET_DEFAULT_MEAN (0.485, 0.456, 0.406) * 255, rounded.
    VARIANT_TIMM: Variant(
        ops=("AutoContrast", "Equalize", "Invert", "Rotate",
             "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
             "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
             "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
             "TranslateYRel"), apply_probability=0.5, magnitude_std=0.5,
        max_level=MAX_LEVEL, fill=(124, 116, 104), interpolation="BILINEAR"),
}

# Arguments at level 10 (tensorflow/tpu level_to_arg with RandAugment's
# translate_const=100 and cutout_const=40; timm's LEVEL_TO_ARG with
# translate_pct 0.45).
ROTATE_DEGREES = 30.0
SHEAR = 0.3
TRANSLATE_PIXELS = 100.0
TRANSLATE_FRACTION = 0.45
CUTOUT_HALF_SIZE = 40.0
POSTERIZE_BITS = 4.0
SOLARIZE_LEVELS = 256.0
SOLARIZE_ADDITION = 110.0
# "tpu" enhance factors: level / 10 * 1.8 + 0.1; "timm" increasing ones:
# max(0.1, 1 +- level / 10 * 0.9).
ENHANCE_SCALE = 1.8
ENHANCE_OFFSET = 0.1
ENHANCE_INCREASING_SCALE = 0.9
ENHANCE_INCREASING_MIN = 0.1
# SolarizeAdd adds to the pixels below this level.
SOLARIZE_ADD_THRESHOLD = 128
# PIL's SMOOTH filter, which Sharpness blends away from.
SMOOTH_KERNEL = ((1, 1, 1), (1, 5, 1), (1, 1, 1))


def _variant(variant):
  if variant not in VARIANTS:
    raise ValueError(f"RandAugment variant must be one of "
                     f"{sorted(VARIANTS)}, got {variant!r}")
  return VARIANTS[variant]


def _check_op(op, variant):
  settings = _variant(variant)
  if op not in settings.ops:
    raise ValueError(f"{op!r} is not an op of the {variant!r} RandAugment; "
                     f"its ops are {settings.ops}")
  return settings


def level_to_argument(op, magnitude, variant, negate=False):
  """The argument the reference gives ``op`` at level ``magnitude``.

  The variant's clipping applies first ("timm": [0, 10]; "tpu": none).
  Signed ops (rotations, shears, translations, timm's increasing enhance
  factors) take the negative side when ``negate`` is set; the references
  negate with probability 1/2 (``sample_argument``).

  Args:
    op: an op name of the variant.
    magnitude: the level, a float or a float scalar tensor.
    variant: "tpu" or "timm".
    negate: bool (or bool tensor): the sign draw of signed ops.

  Returns:
    A float32 scalar tensor (degrees, shear, pixels, fraction of the side,
    enhance factor, bits kept, solarize threshold, addition or Cutout half
    side), or None for AutoContrast, Equalize and Invert.

  Raises:
    ValueError: unknown variant, or an op the variant does not have.
  """
  settings = _check_op(op, variant)
  if op in ARGUMENT_FREE_OPS:
    return None
  # The references compute in Python floats: float64 keeps their int()
  # truncation, e.g. int(9 / 10 * 110) = 99 (float32 would give 98).
  level = tf.cast(magnitude, tf.float64)
  if settings.max_level is not None:
    level = tf.clip_by_value(level, 0.0, settings.max_level)
  fraction = level / MAX_LEVEL
  sign = 1.0 - 2.0 * tf.cast(negate, tf.float64)
  if op == "Rotate":
    value = sign * fraction * ROTATE_DEGREES
  elif op in ("ShearX", "ShearY"):
    value = sign * fraction * SHEAR
  elif op in ("TranslateX", "TranslateY"):
    value = sign * fraction * TRANSLATE_PIXELS
  elif op in ("TranslateXRel", "TranslateYRel"):
    value = sign * fraction * TRANSLATE_FRACTION
  elif op in ENHANCE_OPS:
    value = fraction * ENHANCE_SCALE + ENHANCE_OFFSET
  elif op.endswith("Increasing") and op[:-len("Increasing")] in ENHANCE_OPS:
    value = tf.maximum(1.0 + sign * fraction * ENHANCE_INCREASING_SCALE,
                       ENHANCE_INCREASING_MIN)
  elif op == "Posterize":
    # TensorFlow clamps the shift 8 - bits to [0, 7]: 0 bits keep 1.
    value = tf.clip_by_value(tf.floor(fraction * POSTERIZE_BITS), 1.0, 8.0)
  elif op == "PosterizeIncreasing":
    value = POSTERIZE_BITS - tf.floor(fraction * POSTERIZE_BITS)
  elif op == "Solarize":
    # The threshold is compared as a uint8: it wraps modulo 256.
    value = tf.math.floormod(tf.floor(fraction * SOLARIZE_LEVELS),
                             SOLARIZE_LEVELS)
  elif op == "SolarizeIncreasing":
    value = SOLARIZE_LEVELS - tf.floor(fraction * SOLARIZE_LEVELS)
  elif op == "SolarizeAdd":
    value = tf.floor(fraction * SOLARIZE_ADDITION)
  elif op == "Cutout":
    value = tf.floor(fraction * CUTOUT_HALF_SIZE)
  else:
    raise ValueError(f"no level mapping for {op!r}")
  return tf.cast(value, tf.float32)


def sample_argument(op, magnitude, variant, seed):
  """One application's argument: the level with the variant's noise, and
  the reference's random sign (probability 1/2 each way).

  Args:
    op: an op name of the variant.
    magnitude: the recipe's magnitude.
    variant: "tpu" or "timm".
    seed: int32 / int64 tensor of shape [2].

  Returns:
    As ``level_to_argument``.
  """
  _check_op(op, variant)
  level, negate = _sample_level(magnitude, variant, seed)
  return level_to_argument(op, level, variant, negate)


def _sample_level(magnitude, variant, seed):
  """(level, negate) of one application: the magnitude plus the variant's
  noise, and a fair coin for the sign."""
  settings = _variant(variant)
  level_seed, sign_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  level = tf.cast(magnitude, tf.float64)
  if settings.magnitude_std:
    level += settings.magnitude_std * tf.random.stateless_normal(
        [], seed=level_seed, dtype=tf.float64)
  negate = tf.random.stateless_uniform([], seed=sign_seed) < 0.5
  return level, negate


def _blend(degenerate, image, factor):
  """degenerate + factor * (image - degenerate), clipped, truncated to 8
  bits: factor 0 is the degenerate image, 1 the image, > 1 extrapolates."""
  degenerate = tf.cast(degenerate, tf.float32)
  blended = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _grey(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _contrast(image, factor, count_mean):
  """PIL Contrast: a blend with a uniform grey, the mean grey level or (the
  TPU code's) pixel count / 256."""
  if count_mean:
    shape = tf.shape(image)
    level = tf.minimum(tf.cast(shape[0] * shape[1], tf.float32) / 256.0, 255.0)
  else:
    # PIL: int(mean + 0.5).
    level = tf.floor(
        tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)) +
        0.5)
  degenerate = tf.cast(tf.fill(tf.shape(image), level), tf.uint8)
  return _blend(degenerate, image, factor)


def _sharpness(image, factor):
  """PIL Sharpness: a blend with the SMOOTH-filtered image, whose one-pixel
  border is the image's own."""
  kernel = tf.constant(SMOOTH_KERNEL, tf.float32) / float(
      sum(map(sum, SMOOTH_KERNEL)))
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(
      tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
  padding = [[1, 1], [1, 1], [0, 0]]
  inside = tf.pad(tf.ones_like(smooth, tf.bool), padding)
  degenerate = tf.where(inside, tf.pad(smooth, padding), image)
  return _blend(degenerate, image, factor)


def _autocontrast(image):
  """Stretch each channel's [min, max] to [0, 255] (PIL autocontrast, no
  cutoff); flat channels stay."""
  pixels = tf.cast(image, tf.float32)
  low = tf.reduce_min(pixels, axis=[0, 1])
  high = tf.reduce_max(pixels, axis=[0, 1])
  scale = 255.0 / tf.maximum(high - low, 1.0)
  stretched = tf.cast(
      tf.clip_by_value(pixels * scale - low * scale, 0.0, 255.0), tf.uint8)
  return tf.where(high > low, stretched, image)


def _equalize(image):
  """PIL equalize per channel: a lookup table from the cumulative
  histogram, in steps of (pixels - count of the last used level) // 255;
  unchanged where the step is 0."""
  # Channel c counts in bins 256 c .. 256 c + 255.
  bins = tf.cast(image, tf.int32) + 256 * tf.range(3)
  histograms = tf.reshape(tf.math.bincount(bins, minlength=768, maxlength=768),
                          [3, 256])
  last_used = tf.reduce_max(tf.where(histograms > 0, tf.range(256), 0), axis=1)
  step = (tf.reduce_sum(histograms, axis=1) -
          tf.gather(histograms, last_used, batch_dims=1)) // 255
  tables = (tf.cumsum(histograms, axis=1, exclusive=True) +
            step[:, None] // 2) // tf.maximum(step, 1)[:, None]
  equalized = tf.gather(tf.reshape(tf.minimum(tables, 255), [-1]), bins)
  return tf.where(step > 0, tf.cast(equalized, tf.uint8), image)


def _posterize(image, bits):
  """Keep the ``bits`` most significant bits (0 bits: black, as PIL)."""
  bits = tf.cast(bits, tf.int32)
  mask = 256 - tf.bitwise.left_shift(1, 8 - bits)
  return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def _solarize(image, threshold):
  """Invert the pixels at or above ``threshold`` (256: none)."""
  below = tf.cast(image, tf.int32) < tf.cast(threshold, tf.int32)
  return tf.where(below, image, 255 - image)


def _solarize_add(image, addition):
  """Add ``addition`` to the pixels below 128, clipped to 255."""
  pixels = tf.cast(image, tf.int32)
  added = tf.clip_by_value(pixels + tf.cast(addition, tf.int32), 0, 255)
  return tf.where(pixels < SOLARIZE_ADD_THRESHOLD, tf.cast(added, tf.uint8),
                  image)


def _transform(image, matrix, settings):
  """Projective transform: output pixel (x, y) samples the input at
  (a0 x + a1 y + a2, b0 x + b1 y + b2) (matrix [a0, a1, a2, b0, b1, b2]);
  pixels sampled (partly) outside take the variant's fill."""
  pixels = tf.cast(image, tf.float32)
  # A fourth channel of ones tells how much of each output pixel came from
  # inside the image; the rest is fill (exactly the TPU code's wrap /
  # unwrap for nearest-neighbour sampling).
  opaque = tf.concat([pixels, tf.ones_like(pixels[:, :, :1])], axis=-1)
  transforms = tf.concat(
      [tf.cast(tf.stack(matrix), tf.float32),
       tf.zeros([2], tf.float32)], axis=0)
  moved = tf.raw_ops.ImageProjectiveTransformV3(
      images=opaque[None], transforms=transforms[None],
      output_shape=tf.shape(image)[:2], fill_value=0.0,
      interpolation=settings.interpolation, fill_mode="CONSTANT")[0]
  fill = tf.constant(settings.fill, tf.float32)
  filled = moved[:, :, :3] + (1.0 - moved[:, :, 3:]) * fill
  return tf.cast(tf.clip_by_value(tf.round(filled), 0.0, 255.0), tf.uint8)


def _rotate(image, degrees, settings):
  """Rotate about the centre, counter-clockwise for positive degrees (as
  PIL and tf.contrib.image)."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  shape = tf.cast(tf.shape(image), tf.float32)
  centre_x = (shape[1] - 1.0) / 2.0
  centre_y = (shape[0] - 1.0) / 2.0
  # input = R (output - centre) + centre, R = [[cos, -sin], [sin, cos]].
  return _transform(image, [
      cos, -sin, centre_x - cos * centre_x + sin * centre_y, sin, cos,
      centre_y - sin * centre_x - cos * centre_y
  ], settings)


def _cutout(image, half_size, settings, seed):
  """Fill a (2 half_size)^2 square, clipped to the image, centred on a
  uniformly random pixel."""
  if seed is None:
    raise ValueError("Cutout needs a seed for its position")
  shape = tf.shape(image)
  row_seed, column_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  centre_row = tf.random.stateless_uniform([], row_seed, 0, shape[0],
                                           dtype=tf.int32)
  centre_column = tf.random.stateless_uniform([], column_seed, 0, shape[1],
                                              dtype=tf.int32)
  half_size = tf.cast(half_size, tf.int32)

  def span(size, centre):
    # [centre - half_size, centre + half_size), as the TPU code's padding.
    index = tf.range(size)
    return (index >= centre - half_size) & (index < centre + half_size)

  inside = (span(shape[0], centre_row)[:, None] &
            span(shape[1], centre_column)[None, :])
  fill = tf.constant(settings.fill, tf.uint8)
  return tf.where(inside[:, :, None], fill, image)


def _check_image(image, dtype):
  """``image`` as a tensor; ValueError unless it is one RGB image [H, W, 3]
  of ``dtype``."""
  image = tf.convert_to_tensor(image)
  if image.dtype != dtype:
    raise ValueError(f"RandAugment expects {dtype.name} images here, got "
                     f"{image.dtype.name}")
  shape = image.shape
  if shape.rank is not None and (shape.rank != 3 or shape[-1] not in (None, 3)):
    raise ValueError(f"RandAugment takes one RGB image [H, W, 3], got shape "
                     f"{shape}")
  return image


def apply_op(image, op, argument, variant, seed=None):
  """One op of the variant on 8-bit pixels.

  Args:
    image: uint8 [H, W, 3].
    op: an op name of the variant.
    argument: the op's argument (``level_to_argument``); ignored by
      AutoContrast, Equalize and Invert.
    variant: "tpu" or "timm" (fill, sampling, Contrast's grey level).
    seed: int tensor [2], Cutout's position.

  Returns:
    uint8 [H, W, 3].

  Raises:
    ValueError: unknown variant or op, or not a uint8 RGB image.
  """
  settings = _check_op(op, variant)
  image = _check_image(image, tf.uint8)
  name = op[:-len("Increasing")] if op.endswith("Increasing") else op
  if name == "AutoContrast":
    return _autocontrast(image)
  if name == "Equalize":
    return _equalize(image)
  if name == "Invert":
    return 255 - image
  if name == "Posterize":
    return _posterize(image, argument)
  if name == "Solarize":
    return _solarize(image, argument)
  if name == "SolarizeAdd":
    return _solarize_add(image, argument)
  if name == "Cutout":
    return _cutout(image, argument, settings, seed)
  if name in ENHANCE_OPS:
    factor = tf.cast(argument, tf.float32)
    if name == "Color":
      return _blend(_grey(image), image, factor)
    if name == "Contrast":
      return _contrast(image, factor, count_mean=variant == VARIANT_TPU)
    if name == "Brightness":
      return _blend(tf.zeros_like(image), image, factor)
    return _sharpness(image, factor)
  if name == "Rotate":
    return _rotate(image, argument, settings)
  value = tf.cast(argument, tf.float32)
  if name.endswith("Rel"):
    # A fraction of the width (X) or height (Y).
    side = tf.shape(image)[1] if name == "TranslateXRel" else tf.shape(image)[0]
    value *= tf.cast(side, tf.float32)
  # The output pixel (x, y) samples the input at:
  matrix = {
      "ShearX": [1.0, value, 0.0, 0.0, 1.0, 0.0],  # (x + s y, y)
      "ShearY": [1.0, 0.0, 0.0, value, 1.0, 0.0],  # (x, s x + y)
      "TranslateX": [1.0, 0.0, value, 0.0, 1.0, 0.0],  # (x + t, y)
      "TranslateY": [1.0, 0.0, 0.0, 0.0, 1.0, value],  # (x, y + t)
  }[name.replace("Rel", "")]
  return _transform(image, matrix, settings)


def _check_magnitude(magnitude):
  if (isinstance(magnitude, bool) or not isinstance(magnitude, numbers.Real) or
      not 0 <= magnitude < math.inf):
    raise ValueError(f"RandAugment magnitude must be a number >= 0, got "
                     f"{magnitude!r}")
  return float(magnitude)


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """RandAugment of one image, as a variant's reference runs it.

  Each of ``num_layers`` layers picks one of the variant's ops uniformly
  (with replacement) and applies it, always ("tpu") or with probability 0.5
  ("timm"), at the level ``magnitude`` ("timm": plus N(0, 0.5) noise,
  clipped to [0, 10]).

  Attributes:
    variant: "tpu" or "timm" (see the module docstring).
    magnitude: the recipe's magnitude M (Tables A.1 / A.2: 9, 10 or 15).
    num_layers: ops per image, N (2 in every cited recipe).
  """

  variant: str
  magnitude: float
  num_layers: int = NUM_LAYERS

  def __post_init__(self):
    _variant(self.variant)
    object.__setattr__(self, "magnitude", _check_magnitude(self.magnitude))
    if (isinstance(self.num_layers, bool) or
        not isinstance(self.num_layers, numbers.Integral) or
        self.num_layers < 1):
      raise ValueError(f"RandAugment num_layers must be a positive integer, "
                       f"got {self.num_layers!r}")

  def __call__(self, image, seed):
    """Augments one image.

    Args:
      image: float32 [H, W, 3] in [0, 1].
      seed: int32 / int64 tensor of shape [2]; the same seed gives the same
        output.

    Returns:
      float32 [H, W, 3] in [0, 1], multiples of 1 / 255.

    Raises:
      ValueError: not a float32 RGB image.
    """
    image = _check_image(image, tf.float32)
    # The references' 8-bit pixels.
    levels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0),
                     tf.uint8)
    layer_seeds = tf.random.experimental.stateless_split(
        seed, num=self.num_layers)
    # A loop, not num_layers copies of the 15-16 op branches: building the
    # graph is the slow part.
    any_size = tf.TensorShape([None, None, 3])
    _, levels = tf.while_loop(
        lambda layer, _: layer < self.num_layers, lambda layer, levels:
        (layer + 1, self._layer(levels, layer_seeds[layer])),
        (tf.constant(0), levels),
        shape_invariants=(tf.TensorShape([]), any_size))
    augmented = tf.cast(levels, tf.float32) / 255.0
    augmented.set_shape(image.shape)
    return augmented

  def _layer(self, levels, seed):
    """One pick-and-apply of the reference's loop."""
    settings = VARIANTS[self.variant]
    choice_seed, apply_seed, level_seed, op_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4))
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(settings.ops),
                                         dtype=tf.int32)
    level, negate = _sample_level(self.magnitude, self.variant, level_seed)

    def branch(op):
      return lambda: apply_op(
          levels, op, level_to_argument(op, level, self.variant, negate), self.
          variant, op_seed)

    def augment():
      return tf.switch_case(choice, [branch(op) for op in settings.ops])

    if settings.apply_probability >= 1.0:
      return augment()
    applied = tf.random.stateless_uniform(
        [], apply_seed) < (settings.apply_probability)
    return tf.cond(applied, augment, lambda: levels)
