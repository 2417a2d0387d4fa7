"""Image preprocessing for training the diffusion models of a cascade.

CDM crops and resizes ImageNet "in the same manner as BigGAN" (Ho et al.
2021, Sec. 4): a centre crop to a square on the short side, then a resize to
the model's resolution. Every resolution of a cascade (32, 64, 128, 256,
1024, ...) is resized from that same crop, never from another resolution, so
a super-resolution model's low-resolution input in training is distributed
exactly like the data the lower stage learns to generate.

Resizing is anti-aliased bicubic (``tf.image.resize(..., "bicubic",
antialias=True)``): when downsampling it widens the cubic kernel by the scale
factor, a proper low-pass filter like PIL's BICUBIC that ADM's
``center_crop_arr`` ends with, and when upsampling (small ImageNet photos at
256 or 1024) it is ordinary bicubic interpolation, sharper than bilinear.

Images are float32 in [-1, 1] (pixel / 127.5 - 1). By default every
resolution is first rounded to 8-bit levels, as if the data set were stored
at that resolution (like the downsampled ImageNet 32 / 64 sets), so training
data and written samples share one quantisation.

All functions are pure and work inside ``tf.data.Dataset.map`` on single
examples (the readers' dicts with ``schema.IMAGE`` uint8 [H, W, 3] and
``schema.LABEL``). Randomness comes from an explicit stateless seed, an
integer tensor of shape [2]; to give each example its own seed, e.g.::

  dataset.enumerate().map(lambda index, example: cascade_example(
      example, (64, 256), random_flip=True,
      seed=tf.random.experimental.stateless_fold_in(base_seed, index)))
"""

import tensorflow as tf

from cdm_tf.data import schema

# Anti-aliased bicubic: low-pass when downsampling, sharp when upsampling.
RESIZE_METHOD = tf.image.ResizeMethod.BICUBIC


def image_key(resolution):
  """The key of the ``resolution`` image in ``cascade_example``'s output."""
  return f"image_{int(resolution)}"


def to_float(image):
  """Maps uint8 pixels (or floats in [0, 255]) to float32 in [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def to_uint8(image):
  """Maps float images in [-1, 1] back to uint8, rounding and clipping.

  Used when writing generated samples; any shape (single images or batches).

  Args:
    image: float tensor, nominally in [-1, 1]; values outside are clipped.

  Returns:
    uint8 tensor of the same shape.
  """
  pixels = (tf.cast(image, tf.float32) + 1.0) * 127.5
  return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def center_crop_square(image):
  """The centred square crop on the short side (BigGAN-style).

  Args:
    image: [..., H, W, C] tensor of any dtype (a single image or a batch).

  Returns:
    [..., S, S, C] with S = min(H, W), same dtype; an odd excess leaves the
    extra pixel at the bottom / right.
  """
  image = tf.convert_to_tensor(image)
  height = tf.shape(image)[-3]
  width = tf.shape(image)[-2]
  side = tf.minimum(height, width)
  top = (height - side) // 2
  left = (width - side) // 2
  return image[..., top:top + side, left:left + side, :]


def resize_square(image, resolution, quantize=True):
  """Anti-aliased resize of a (square) image to resolution x resolution.

  Args:
    image: [..., H, W, C] pixels in [0, 255] (uint8 or float).
    resolution: output side length.
    quantize: round to 8-bit levels after resizing.

  Returns:
    float32 [..., resolution, resolution, C] in [0, 255].
  """
  resized = tf.image.resize(tf.cast(image,
                                    tf.float32), [resolution, resolution],
                            method=RESIZE_METHOD, antialias=True)
  # Bicubic overshoots near edges; keep pixels valid.
  resized = tf.clip_by_value(resized, 0.0, 255.0)
  if quantize:
    resized = tf.round(resized)
  return resized


def preprocess_image(image, resolution, quantize=True):
  """Centre square crop, anti-aliased resize, scale to [-1, 1].

  Args:
    image: uint8 [H, W, 3] (or a batch of equally sized images).
    resolution: output side length.
    quantize: round to 8-bit levels before scaling (see module docstring).

  Returns:
    float32 [resolution, resolution, 3] in [-1, 1].
  """
  return to_float(resize_square(center_crop_square(image), resolution,
                                quantize))


def random_flip_left_right(images, seed):
  """Flips all images of one example left-right together, or none of them.

  Args:
    images: a tensor or a nest (dict, tuple, list) of [..., H, W, C] tensors,
      all views of the same example.
    seed: int32 / int64 tensor of shape [2]; the decision is a fair coin.

  Returns:
    ``images`` with the same structure, every tensor flipped iff the coin
    says so.
  """
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  return tf.nest.map_structure(
      lambda image: tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda:
                            image), images)


def cascade_images(image, resolutions, quantize=True):
  """All resolutions of a cascade from one image.

  Args:
    image: uint8 [H, W, 3].
    resolutions: iterable of side lengths, e.g. (32, 64, 256).
    quantize: round every resolution to 8-bit levels.

  Returns:
    dict ``{image_key(r): float32 [r, r, 3] in [-1, 1]}``, each resized from
    the same centre crop (not chained from one another).
  """
  crop = center_crop_square(image)
  return {
      image_key(r): to_float(resize_square(crop, r, quantize))
      for r in _check_resolutions(resolutions)
  }


def cascade_example(example, resolutions, random_flip=False, seed=None,
                    quantize=True):
  """Training inputs for every stage of a cascade from one reader example.

  Args:
    example: dict with ``schema.IMAGE`` (uint8 [H, W, 3]) and
      ``schema.LABEL``.
    resolutions: side lengths, e.g. (64, 128, 256).
    random_flip: flip left-right with probability 1/2, identically at every
      resolution.
    seed: shape [2] stateless seed; required when ``random_flip``.
    quantize: round every resolution to 8-bit levels.

  Returns:
    dict ``{"image_64": ..., "image_128": ..., schema.LABEL: int32 []}``
    with float32 images in [-1, 1].
  """
  images = cascade_images(example[schema.IMAGE], resolutions, quantize)
  if random_flip:
    images = random_flip_left_right(images, _require_seed(seed))
  images[schema.LABEL] = tf.cast(example[schema.LABEL], tf.int32)
  return images


def super_resolution_pair(example, low_resolution, high_resolution,
                          random_flip=False, seed=None, quantize=True):
  """A super-resolution training pair ``(low_res, high_res, label)``.

  Both images are resized from the same centre crop; conditioning
  augmentation (noise, blur) is applied later, by the model's training step.

  Args:
    example: dict with ``schema.IMAGE`` (uint8 [H, W, 3]) and
      ``schema.LABEL``.
    low_resolution: side of the conditioning image z, e.g. 64.
    high_resolution: side of the target x, e.g. 256; must be larger.
    random_flip: flip both images together with probability 1/2.
    seed: shape [2] stateless seed; required when ``random_flip``.
    quantize: round both images to 8-bit levels.

  Returns:
    (float32 [low, low, 3], float32 [high, high, 3], int32 []) with images in
    [-1, 1].
  """
  if not int(low_resolution) < int(high_resolution):
    raise ValueError(f"low_resolution ({low_resolution}) must be smaller "
                     f"than high_resolution ({high_resolution})")
  images = cascade_example(example, (low_resolution, high_resolution),
                           random_flip=random_flip, seed=seed,
                           quantize=quantize)
  return (images[image_key(low_resolution)], images[image_key(high_resolution)],
          images[schema.LABEL])


def _check_resolutions(resolutions):
  resolutions = [int(r) for r in resolutions]
  if not resolutions or min(resolutions) < 1:
    raise ValueError(f"resolutions must be positive, got {resolutions}")
  if len(set(resolutions)) != len(resolutions):
    raise ValueError(f"resolutions must be distinct, got {resolutions}")
  return resolutions


def _require_seed(seed):
  if seed is None:
    raise ValueError("random_flip needs a stateless seed of shape [2]")
  return seed
