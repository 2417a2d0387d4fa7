"""How faithfully a super-resolution stage restores real images.

CDM's control for conditioning augmentation (Ho et al., Table 3b) conditions
the super-resolution model on ground-truth low-resolution images instead of
base-model samples. There is then no train-test mismatch for augmentation to
fix, so what remains is its cost: quality can only fall as the level s
grows. Here a stage's outputs from real low-resolution images are compared
with the real high-resolution ones, image by image, by PSNR, with bicubic
upsampling for scale. PSNR rewards the average image: it ranks stages of one
cascade against each other, not against the data.
"""

import numpy as np
import tensorflow as tf

from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import imagenet_reader

# Identical images would score infinity; the cap keeps summaries finite.
MAX_PSNR_DB = 100.0


def real_pairs(data_dir, resolution, low_res_resolution, num_images,
               num_classes, split="validation", seed=0):
  """``(high, low, labels)`` of ``num_images`` real images of a split.

  The images are a seeded shuffle of the split (its shards may be sorted by
  class). Each pair is made as the stages' training pairs are
  (``diffusion_preprocessing.super_resolution_pair``: one crop, both sides),
  with no flip. uint8 [N, r, r, C], uint8 [N, r', r', C] and int32 [N].
  """
  if num_images < 1:
    raise ValueError(f"num_images must be positive, got {num_images}")
  examples = imagenet_reader.read_dataset(data_dir, split=split,
                                          num_classes=num_classes, seed=seed)
  high, low, labels = [], [], []
  for example in examples.take(num_images):
    low_res, high_res, label = diffusion_preprocessing.super_resolution_pair(
        example, low_res_resolution, resolution)
    high.append(high_res)
    low.append(low_res)
    labels.append(label)
  if len(high) < num_images:
    raise ValueError(f"{data_dir} has {len(high)} {split} images, fewer "
                     f"than the {num_images} asked for")
  return (diffusion_preprocessing.to_uint8(tf.stack(high)).numpy(),
          diffusion_preprocessing.to_uint8(tf.stack(low)).numpy(),
          np.asarray(labels, np.int32))


def psnr(images, targets):
  """Per-image PSNR in dB of uint8 ``images`` against ``targets`` [N, ...]."""
  images = np.asarray(images, np.float64)
  targets = np.asarray(targets, np.float64)
  if images.shape != targets.shape:
    raise ValueError(f"images {images.shape} and targets {targets.shape} "
                     "differ in shape")
  mse = ((images - targets)**2).reshape(len(images), -1).mean(axis=1)
  with np.errstate(divide="ignore"):
    values = 10.0 * np.log10(255.0**2 / mse)
  return np.minimum(values, MAX_PSNR_DB)


def bicubic(low_res, resolution):
  """uint8 bicubic upsampling of uint8 ``low_res`` to ``resolution``."""
  upsampled = tf.image.resize(tf.cast(low_res, tf.float32),
                              (resolution, resolution), method="bicubic")
  return tf.cast(tf.round(tf.clip_by_value(upsampled, 0.0, 255.0)),
                 tf.uint8).numpy()
