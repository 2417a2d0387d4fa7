"""Image preprocessing for the ImageNet classifiers of Azizi et al. (2023).

Evaluation follows the Classification Accuracy Score protocol (Ravuri &
Vinyals 2019, as used by Azizi et al. Sec. 5): real images are resized so
their SHORT side is 256 (aspect ratio kept), generated images are resized to
256 x 256, and both are centre cropped to 224 x 224. For a model whose input
side S is not 224 (ResNet-RS at 160 / 190, DeiT-B at 384) the 256 scales
with it: the resize side is round(S * 256 / 224).

Training uses the Inception-style random-resized crop (area fraction
0.08..1, aspect ratio 3/4..4/3, a centre crop when sampling fails) resized
to S x S, plus a random left-right flip; small images (32 x 32) can take a
random shift instead (``random_shifted_crop``).

Low-resolution columns (Azizi et al. Table A.3's 64 x 64, trained with the
cascade's 64 x 64 samples) first make every real image r x r as the
generator's training data of that resolution is made
(``as_generator_data``: ``diffusion_preprocessing``'s centre square crop,
anti-aliased bicubic resize and 8-bit rounding), so real and generated
images share one distribution; the crops above then take it to the model's
input size like any other image.

Every output is float32 in [0, 1] (pixel / 255): the classifiers normalise
their inputs themselves. Resizing is bilinear and anti-aliased, so
downsampling (e.g. 1024 x 1024 samples to 256) low-pass filters instead of
aliasing, and tiny images (32 x 32) are simply interpolated up.

The functions are pure and work inside ``tf.data.Dataset.map`` on single
examples. Randomness comes from an explicit stateless seed, an integer
tensor of shape [2] (derive per-example seeds e.g. with
``tf.random.experimental.stateless_fold_in(base_seed, index)`` over
``dataset.enumerate()``).
"""

import numbers

import tensorflow as tf

from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import schema

# The protocol's numbers for a 224 x 224 model: resize to 256, crop 224.
REFERENCE_CROP_SIZE = 224
REFERENCE_RESIZE_SIZE = 256

# Inception-style random-resized crop ranges.
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10

# Bilinear with antialias=True: a triangle filter stretched by the scale
# factor when downsampling, no ringing, plain interpolation when upsampling.
RESIZE_METHOD = tf.image.ResizeMethod.BILINEAR


def resize_size(image_size):
  """The evaluation resize side for model input side ``image_size``.

  Args:
    image_size: the model's input side S (224, 160, 190, 384, ...).

  Returns:
    round(S * 256 / 224) as a Python int: 256 for 224, 183 for 160, 217 for
    190, 439 for 384.
  """
  image_size = int(image_size)
  if image_size < 1:
    raise ValueError(f"image_size must be positive, got {image_size}")
  # S * 8 / 7 is never exactly halfway, so rounding is unambiguous.
  return int(round(image_size * REFERENCE_RESIZE_SIZE / REFERENCE_CROP_SIZE))


def as_generator_data(image, resolution):
  """A real image made ``resolution`` x ``resolution`` exactly as the
  cascade's training data of that resolution is made.

  ``diffusion_preprocessing.preprocess_image``: the centred square crop on
  the short side, an anti-aliased bicubic resize (photos smaller than
  ``resolution`` are interpolated up, as for the generator) and rounding to
  8-bit levels, returned as those levels.

  Args:
    image: uint8 [H, W, 3].
    resolution: the side r, e.g. 64 for the cascade's base model.

  Returns:
    uint8 [r, r, 3].

  Raises:
    ValueError: ``resolution`` is not a positive integer.
  """
  # The 8-bit levels map to [-1, 1] and back exactly.
  return diffusion_preprocessing.to_uint8(
      diffusion_preprocessing.preprocess_image(image,
                                               check_resolution(resolution)))


def check_resolution(resolution):
  """``resolution`` as a Python int, or ValueError unless it is a positive
  integer."""
  if isinstance(
      resolution,
      bool) or not isinstance(resolution, numbers.Integral) or resolution < 1:
    raise ValueError(f"the resolution must be a positive integer, got "
                     f"{resolution!r}")
  return int(resolution)


def _resize(image, height, width):
  """Anti-aliased bilinear resize to float32 pixels in [0, 255]."""
  resized = tf.image.resize(tf.cast(image, tf.float32), [height, width],
                            method=RESIZE_METHOD, antialias=True)
  return tf.clip_by_value(resized, 0.0, 255.0)


def _to_unit_range(pixels):
  return tf.cast(pixels, tf.float32) / 255.0


def resize_short_side(image, short_side):
  """Resizes so the shorter side is ``short_side``, keeping aspect ratio.

  Args:
    image: [H, W, C] pixels in [0, 255] (uint8 or float).
    short_side: target length of min(H, W).

  Returns:
    float32 [H', W', C] in [0, 255] with min(H', W') == short_side and the
    long side round(long * short_side / short).
  """
  shape = tf.shape(image)
  height = tf.cast(shape[-3], tf.float32)
  width = tf.cast(shape[-2], tf.float32)
  scale = tf.cast(short_side, tf.float32) / tf.minimum(height, width)
  # Exact for the short side; the long side is rounded to the nearest pixel.
  new_height = tf.cast(tf.round(height * scale), tf.int32)
  new_width = tf.cast(tf.round(width * scale), tf.int32)
  return _resize(image, new_height, new_width)


def center_crop(image, size):
  """The centred ``size`` x ``size`` crop of [..., H, W, C], H, W >= size."""
  image = tf.convert_to_tensor(image)
  height = tf.shape(image)[-3]
  width = tf.shape(image)[-2]
  tf.debugging.assert_greater_equal(tf.minimum(height, width), size,
                                    "center_crop: image smaller than crop")
  top = (height - size) // 2
  left = (width - size) // 2
  return image[..., top:top + size, left:left + size, :]


def preprocess_for_eval(image, image_size=REFERENCE_CROP_SIZE, generated=False):
  """The CAS evaluation crop: resize, then centre crop ``image_size``.

  Args:
    image: uint8 [H, W, 3].
    image_size: the model's input side S.
    generated: True for generated samples (resize to R x R, ignoring aspect
      ratio), False for real photos (short side to R, aspect kept), where
      R = resize_size(S).

  Returns:
    float32 [S, S, 3] in [0, 1].
  """
  side = resize_size(image_size)
  if generated:
    resized = _resize(image, side, side)
  else:
    resized = resize_short_side(image, side)
  return _to_unit_range(center_crop(resized, image_size))


def _clamped_center_box(height, width, aspect_ratio_range):
  """The largest centred box whose aspect ratio is within the range."""
  min_ratio, max_ratio = aspect_ratio_range
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  ratio = w / h
  crop_height = tf.where(ratio < min_ratio, tf.round(w / min_ratio), h)
  crop_width = tf.where(ratio > max_ratio, tf.round(h * max_ratio), w)
  crop_height = tf.clip_by_value(tf.cast(crop_height, tf.int32), 1, height)
  crop_width = tf.clip_by_value(tf.cast(crop_width, tf.int32), 1, width)
  begin = tf.stack([(height - crop_height) // 2, (width - crop_width) // 2])
  return begin, tf.stack([crop_height, crop_width])


def random_crop_box(image_shape, seed, area_range=AREA_RANGE,
                    aspect_ratio_range=ASPECT_RATIO_RANGE,
                    max_attempts=MAX_ATTEMPTS):
  """Samples an Inception-style crop box of an image.

  Up to ``max_attempts`` boxes are drawn with area fraction in
  ``area_range`` and width / height in ``aspect_ratio_range``; if none fits
  inside the image the box is the largest centred crop whose aspect ratio is
  within the range (the whole image when its own ratio is).

  Args:
    image_shape: [H, W, C] (tensor or list).
    seed: int32 / int64 tensor of shape [2].
    area_range: (min, max) fraction of the image area.
    aspect_ratio_range: (min, max) width / height.
    max_attempts: sampling attempts before the fallback.

  Returns:
    (begin [2] int32 (top, left), size [2] int32 (height, width)).
  """
  image_shape = tf.cast(image_shape, tf.int32)
  height, width = image_shape[0], image_shape[1]
  whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=whole_image, seed=seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_ratio_range,
      area_range=area_range, max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  begin, size = begin[:2], size[:2]
  # The op returns the whole image when every attempt failed; the whole image
  # is also what the fallback gives when its ratio is in range.
  failed = tf.reduce_all(tf.equal(size, tf.stack([height, width])))
  fallback_begin, fallback_size = _clamped_center_box(height, width,
                                                      aspect_ratio_range)
  return (tf.where(failed, fallback_begin,
                   begin), tf.where(failed, fallback_size, size))


def random_resized_crop(image, image_size, seed, area_range=AREA_RANGE,
                        aspect_ratio_range=ASPECT_RATIO_RANGE,
                        max_attempts=MAX_ATTEMPTS):
  """Inception-style random crop of ``image`` resized to ``image_size``.

  Args:
    image: uint8 [H, W, 3] (any size; small crops are interpolated up).
    image_size: output side S.
    seed: int32 / int64 tensor of shape [2].
    area_range: (min, max) fraction of the image area.
    aspect_ratio_range: (min, max) width / height of the crop.
    max_attempts: sampling attempts before the centre-crop fallback.

  Returns:
    float32 [S, S, 3] in [0, 1].
  """
  begin, size = random_crop_box(tf.shape(image), seed, area_range,
                                aspect_ratio_range, max_attempts)
  crop = tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([size, [-1]], 0))
  return _to_unit_range(_resize(crop, image_size, image_size))


def random_shifted_crop(image, image_size, seed, max_shift):
  """The small-image training crop: the evaluation crop moved by a random
  shift. The image is resized to R x R (R = ``resize_size(S)``, as
  ``preprocess_for_eval`` does for a square image), zero-padded by
  ``max_shift`` pixels and cropped to S x S at the centre crop's offset plus
  a shift of up to ``max_shift`` pixels each way (CIFAR-style "pad and
  crop"). Training and evaluation then see the same scale, and 32 x 32
  images are not rescaled by a random amount or distorted in aspect as a
  random-resized crop does; a shift of 0 is the evaluation crop.

  Args:
    image: uint8 [H, W, 3].
    image_size: output side S.
    seed: int32 / int64 tensor of shape [2].
    max_shift: the largest shift in pixels, >= 0.

  Returns:
    float32 [S, S, 3] in [0, 1].
  """
  if max_shift < 0:
    raise ValueError(f"max_shift must be >= 0, got {max_shift}")
  side = resize_size(image_size)
  image = _to_unit_range(_resize(image, side, side))
  padded = tf.pad(image,
                  [[max_shift, max_shift], [max_shift, max_shift], [0, 0]])
  centre = (side - image_size) // 2
  offset = centre + tf.random.stateless_uniform(
      [2], seed=seed, minval=0, maxval=2 * max_shift + 1, dtype=tf.int32)
  return tf.slice(padded, tf.concat([offset, [0]], 0),
                  [image_size, image_size, -1])


def preprocess_for_train(image, seed, image_size=REFERENCE_CROP_SIZE,
                         random_flip=True):
  """The standard training augmentation: random-resized crop and flip.

  Args:
    image: uint8 [H, W, 3].
    seed: int32 / int64 tensor of shape [2]; crop and flip use independent
      seeds split from it.
    image_size: output side S.
    random_flip: flip left-right with probability 1/2.

  Returns:
    float32 [S, S, 3] in [0, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  image = random_resized_crop(image, image_size, crop_seed)
  if random_flip:
    flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)
  return image


def eval_example(example, image_size=REFERENCE_CROP_SIZE, generated=False):
  """``preprocess_for_eval`` on a reader example, as ``(image, label)``.

  Args:
    example: dict with ``schema.IMAGE`` (uint8 [H, W, 3]) and
      ``schema.LABEL``.
    image_size: the model's input side S.
    generated: whether the example is a generated sample (see
      ``preprocess_for_eval``).

  Returns:
    (float32 [S, S, 3] in [0, 1], int32 []).
  """
  return (preprocess_for_eval(example[schema.IMAGE], image_size, generated),
          tf.cast(example[schema.LABEL], tf.int32))


def train_example(example, seed, image_size=REFERENCE_CROP_SIZE,
                  random_flip=True):
  """``preprocess_for_train`` on a reader example, as ``(image, label)``.

  Args:
    example: dict with ``schema.IMAGE`` (uint8 [H, W, 3]) and
      ``schema.LABEL``.
    seed: int32 / int64 tensor of shape [2].
    image_size: output side S.
    random_flip: flip left-right with probability 1/2.

  Returns:
    (float32 [S, S, 3] in [0, 1], int32 []).
  """
  return (preprocess_for_train(example[schema.IMAGE], seed, image_size,
                               random_flip),
          tf.cast(example[schema.LABEL], tf.int32))
