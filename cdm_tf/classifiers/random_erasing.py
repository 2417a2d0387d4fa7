"""Random erasing (Zhong et al. 2020) as DeiT trains with it.

DeiT (Touvron et al. 2021, Table 9: erasing probability 0.25) uses timm's
``RandomErasing`` in its "pixel" mode with one rectangle per image (the DeiT
code's defaults ``--reprob 0.25 --remode pixel --recount 1``), after all
other per-image augmentations. Per image:

* with probability ``probability`` an image is erased, else left as is;
* a rectangle is drawn: area a = uniform(0.02, 1/3) x H x W and aspect ratio
  r = h / w log-uniform in [0.3, 1 / 0.3]; h = round(sqrt(a r)) and
  w = round(sqrt(a / r)). It is kept if h < H and w < W; up to 10 draws,
  after which the image stays unerased;
* its top-left corner is uniform over the positions where it fits;
* it is filled with per-pixel, per-channel standard normal noise.

timm erases after the ImageNet mean / std normalisation, so its noise is
N(0, 1) in the model's normalised input space. Images here are float pixels
in [0, 1] until the model normalises them itself (``models.ImageClassifier``
subtracts ``input_mean`` and divides by ``input_std``), so the noise is
written as ``input_mean + input_std * z``: after the model's normalisation
it is exactly z ~ N(0, 1), as in DeiT. Those pixels leave [0, 1] and are not
clipped (neither are DeiT's).

``keras.layers.RandomErasing`` is not this augmentation: its probability
argument f draws a per-image probability uniform in [0, f], it samples the
height and width fractions independently (no area / aspect-ratio law) and
it clips scaled noise to the value range.

Randomness comes from an explicit stateless seed, an integer tensor of shape
[2], as for ``randaugment.RandAugment``, so a seeded input pipeline is
reproducible; it runs in graph mode inside ``tf.data.Dataset.map``.
"""

import dataclasses
import math

import tensorflow as tf

from cdm_tf.classifiers import models

# DeiT / timm defaults (Touvron et al. 2021; timm's RandomErasing).
AREA_RANGE = (0.02, 1.0 / 3.0)
ASPECT_RATIO_RANGE = (0.3, 1.0 / 0.3)
MAX_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class RandomErasing:
  """Erases one random rectangle per image with normal noise (DeiT / timm).

  Attributes:
    probability: chance that an image is erased (DeiT: 0.25).
    area_range: (min, max) fraction of the image area a rectangle covers.
    aspect_ratio_range: (min, max) of height / width, sampled log-uniformly.
    max_attempts: rectangle draws before an image is left unerased.
    input_mean: per-channel mean the model subtracts from [0, 1] pixels
      (default: ImageNet's, which the DeiT models use, as DeiT does).
    input_std: per-channel standard deviation the model divides by.
  """

  probability: float
  area_range: tuple = AREA_RANGE
  aspect_ratio_range: tuple = ASPECT_RATIO_RANGE
  max_attempts: int = MAX_ATTEMPTS
  input_mean: tuple = models.IMAGENET_MEAN
  input_std: tuple = models.IMAGENET_STD

  def __post_init__(self):
    if not 0.0 <= self.probability <= 1.0:
      raise ValueError(f"random erasing probability must be in [0, 1], got "
                       f"{self.probability}")
    low, high = (float(a) for a in self.area_range)
    if not 0.0 < low <= high <= 1.0:
      raise ValueError(f"area_range must satisfy 0 < min <= max <= 1, got "
                       f"{self.area_range}")
    low_ratio, high_ratio = (float(r) for r in self.aspect_ratio_range)
    if not 0.0 < low_ratio <= high_ratio:
      raise ValueError(f"aspect_ratio_range must satisfy 0 < min <= max, "
                       f"got {self.aspect_ratio_range}")
    if int(self.max_attempts) < 1:
      raise ValueError(f"max_attempts must be positive, got "
                       f"{self.max_attempts}")
    if len(self.input_mean) != len(self.input_std) or any(
        s <= 0 for s in self.input_std):
      raise ValueError(f"input_mean {self.input_mean} and input_std "
                       f"{self.input_std} need one value per channel, and "
                       "std > 0")
    for name, value in (("probability", float(self.probability)),
                        ("area_range", (low, high)), ("aspect_ratio_range",
                                                      (low_ratio, high_ratio)),
                        ("max_attempts", int(self.max_attempts)),
                        ("input_mean",
                         tuple(float(m) for m in self.input_mean)),
                        ("input_std", tuple(float(s) for s in self.input_std))):
      object.__setattr__(self, name, value)

  def sample_rectangles(self, batch_size, height, width, seed):
    """Draws each image's erase decision and rectangle.

    Args:
      batch_size: number of images B.
      height: image height H.
      width: image width W.
      seed: int32 / int64 tensor of shape [2].

    Returns:
      (erase bool [B], top int32 [B], left int32 [B], rectangle height
      int32 [B], rectangle width int32 [B]); a rectangle lies inside the
      image wherever ``erase`` is True.
    """
    area_seed, ratio_seed, erase_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=5))
    shape = tf.stack([batch_size, self.max_attempts])
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    area = tf.random.stateless_uniform(shape, area_seed, *
                                       self.area_range) * (height_f * width_f)
    ratio = tf.exp(
        tf.random.stateless_uniform(
            shape, ratio_seed, *(math.log(r) for r in self.aspect_ratio_range)))
    # tf.round rounds half to even, like Python's round() in timm.
    box_height = tf.round(tf.sqrt(area * ratio))
    box_width = tf.round(tf.sqrt(area / ratio))
    fits = (box_height < height_f) & (box_width < width_f)
    # The first draw that fits, as timm's loop of attempts takes.
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    box_height = tf.gather(box_height, first, axis=1, batch_dims=1)
    box_width = tf.gather(box_width, first, axis=1, batch_dims=1)
    erase = (tf.random.stateless_uniform([batch_size], erase_seed)
             < self.probability) & tf.reduce_any(fits, axis=1)

    def corner(free, corner_seed):
      # Uniform over {0, ..., free}; the minimum guards u * (free + 1)
      # rounding up to free + 1 in float32.
      u = tf.random.stateless_uniform([batch_size], corner_seed)
      return tf.cast(tf.minimum(tf.floor(u * (free + 1.0)), free), tf.int32)

    top = corner(tf.maximum(height_f - box_height, 0.0), top_seed)
    left = corner(tf.maximum(width_f - box_width, 0.0), left_seed)
    return (erase, top, left, tf.cast(box_height,
                                      tf.int32), tf.cast(box_width, tf.int32))

  def __call__(self, images, seed):
    """Erases images.

    Args:
      images: float32 [H, W, C] or [B, H, W, C] in [0, 1]; each image of a
        batch draws its own rectangle.
      seed: int32 / int64 tensor of shape [2]; the same seed gives the same
        output.

    Returns:
      The images, erased where drawn (noise pixels leave [0, 1]).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    channels = images.shape[-1]
    if images.shape.rank not in (3, 4) or channels != len(self.input_mean):
      raise ValueError(f"random erasing takes [H, W, {len(self.input_mean)}]"
                       f" or [B, H, W, {len(self.input_mean)}] images, got "
                       f"shape {images.shape}")
    single = images.shape.rank == 3
    batch = images[None] if single else images
    shape = tf.shape(batch)
    rectangle_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    erase, top, left, box_height, box_width = self.sample_rectangles(
        shape[0], shape[1], shape[2], rectangle_seed)

    def column(v):
      return v[:, None, None, None]

    rows = tf.range(shape[1])[None, :, None, None]
    cols = tf.range(shape[2])[None, None, :, None]
    inside = ((rows >= column(top)) & (rows < column(top + box_height)) &
              (cols >= column(left)) & (cols < column(left + box_width)) &
              column(erase))
    # N(0, 1) after the model's (x - mean) / std, as timm's noise.
    noise = tf.constant(self.input_mean) + tf.constant(
        self.input_std) * tf.random.stateless_normal(shape, noise_seed)
    erased = tf.where(inside, noise, batch)
    return erased[0] if single else erased
