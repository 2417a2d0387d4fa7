"""Exports a tiny two-stage cascade (8x8 base, 8->16 super-resolution) with
untrained weights: enough to exercise cascade sampling and generation."""

import os

import numpy as np

from cdm_tf.models import diffusion_model
from cdm_tf.models import export
from cdm_tf.models import unet as unet_lib

NUM_CLASSES = 10  # as the embedded Fashion-MNIST data


def _unet(resolution, low_res_resolution=None, aug_level_conditioning=False,
          learn_sigma=False):
  return unet_lib.UNet(resolution=resolution, base_channels=16,
                       channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(resolution // 2,), num_heads=1,
                       group_norm_groups=8, num_classes=NUM_CLASSES,
                       learn_sigma=learn_sigma,
                       low_res_resolution=low_res_resolution,
                       aug_level_conditioning=aug_level_conditioning)


def export_tiny_cascade(directory, seed=0):
  """Writes ``base/`` and ``sr/`` exports under ``directory``; returns both.

  The base model learns its variances (hybrid loss); the super-resolution
  model has a fixed variance and Gaussian conditioning augmentation.
  """
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  base = diffusion_model.DiffusionModel(_unet(8, learn_sigma=True),
                                        schedule="cosine", num_timesteps=1000,
                                        model_var_type="learned_range",
                                        loss_type="hybrid")
  sr = diffusion_model.DiffusionModel(
      _unet(16, low_res_resolution=8,
            aug_level_conditioning=True), schedule="cosine", num_timesteps=1000,
      conditioning_augmentation="gaussian", aug_training_range=(0.0, 0.5))
  rng = np.random.default_rng(seed)
  paths = []
  for name, model in (("base", base), ("sr", sr)):
    model.unet.build()
    # Zero-initialized output and residual convolutions would make an
    # untrained U-Net output 0 whatever its inputs: give them weights, so
    # samples depend on labels, low-res input and augmentation.
    for var in model.unet.trainable_variables:
      value = var.numpy()
      if value.ndim >= 2 and not value.any():
        var.assign(rng.normal(0.0, 0.05, value.shape).astype(value.dtype))
    model.build_all()  # EMA copies (exported) of these weights
    paths.append(export.export_model(model, os.path.join(directory, name)))
  return paths
