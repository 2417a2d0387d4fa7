"""Every model config in gin/models/: published values, computed parameter
counts, and one training step of a scaled-down version."""

import gc
import glob
import os
import re

import gin
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion_training import optimizers
from cdm_tf.models import diffusion_model
from cdm_tf.models import unet as unet_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "gin", "models", "*.gin")))

# CDM Appendix B, transcribed independently of the gin files:
# (base channels, multipliers, blocks, attention, heads, head dim,
#  timesteps, schedule, learned variances, loss, lr, batch, steps, dropout)
APPENDIX_B = {
    "imagenet32_base": (256, (1, 2, 3, 4), 6, (8, 16), 4, None, 4000, "cosine",
                        True, "hybrid", 1e-4, 2048, 700000, 0.1),
    "imagenet32_to_64_sr": (256, (1, 2, 3, 4), 5, (8, 16), 4, None, 4000,
                            "cosine", True, "hybrid", 1e-4, 2048, 400000, 0.1),
    "imagenet64_to_128_sr":
        (128, (1, 2, 4, 8, 8), 3, (16,), 1, None, 2000, "linear", False,
         "simple", 1e-4, 1024, 500000, 0.0),
    "imagenet64_to_256_sr":
        (128, (1, 2, 4, 4, 8, 8), 3, (16,), 1, None, 2000, "linear", False,
         "simple", 1e-4, 1024, 500000, 0.0),
    "lsun64_base": (128, (1, 2, 3, 4), 3, (8, 16, 32), None, 64, None, "cosine",
                    False, "simple", 3e-4, 2048, 100000, 0.1),
    "lsun64_to_128_sr": (64, (1, 2, 4, 6, 8), 3, (8, 16, 32), None, 64, None,
                         "cosine", False, "simple", 2e-4, 1024, 220000, 0.1),
}


def _name(path):
  return os.path.splitext(os.path.basename(path))[0]


def _parse(path, bindings=()):
  gin.clear_config()
  gin.parse_config_files_and_bindings([path], list(bindings))


def _query(name):
  return gin.query_parameter(name)


@pytest.mark.parametrize("name", sorted(APPENDIX_B))
def test_cdm_configs_have_the_published_values(name):
  (channels, mult, blocks, attention, heads, head_dim, timesteps, schedule,
   learned, loss, lr, batch, steps, dropout) = APPENDIX_B[name]
  _parse(os.path.join(ROOT, "gin", "models", f"{name}.gin"))
  try:
    assert _query("unet.UNet.base_channels") == channels
    assert tuple(_query("unet.UNet.channel_mult")) == mult
    assert _query("unet.UNet.num_res_blocks") == blocks
    assert tuple(_query("unet.UNet.attention_resolutions")) == attention
    if heads:
      assert _query("unet.UNet.num_heads") == heads
    else:
      assert _query("unet.UNet.head_dim") == head_dim
    assert _query("unet.UNet.dropout") == dropout
    assert _query("unet.UNet.learn_sigma") == learned
    if timesteps:
      assert _query("diffusion_model.DiffusionModel.num_timesteps") == (
          timesteps)
    assert _query("diffusion_model.DiffusionModel.schedule") == schedule
    assert _query("diffusion_model.DiffusionModel.loss_type") == loss
    assert _query("diffusion_model.DiffusionModel.ema_decay") == 0.9999
    assert _query("optimizers.create_optimizer.name") == "adam"
    assert _query("optimizers.create_optimizer.learning_rate") == lr
    assert _query("trainer.train.global_batch_size") == batch
    assert _query("trainer.train.num_steps") == steps
  finally:
    gin.clear_config()


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_stated_parameter_count_is_the_built_count(path):
  with open(path) as f:
    stated = re.search(r"U-Net parameters: ([\d,]+)", f.read())
  assert stated, f"{path} does not state its parameter count"
  _parse(path)
  try:
    unet = gin.get_configurable(unet_lib.UNet)()
    unet.build()
    assert unet.count_params() == int(stated.group(1).replace(",", ""))
  finally:
    gin.clear_config()
    del unet
    gc.collect()


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_scaled_down_config_trains_one_step(path):
  with open(path) as f:
    text = f.read()
  bindings = ["unet.UNet.base_channels = 32", "unet.UNet.num_res_blocks = 1"]
  if "head_dim" in text:
    bindings.append("unet.UNet.head_dim = 16")
  _parse(path, bindings)
  try:
    model = gin.get_configurable(diffusion_model.DiffusionModel)()
    model.build_all(gin.get_configurable(optimizers.create_optimizer)())
  finally:
    gin.clear_config()
  unet = model.unet
  rng = np.random.default_rng(0)
  batch = {
      "x_start": tf.constant(
          rng.uniform(-1, 1, (2, unet.resolution, unet.resolution, 3)),
          tf.float32),
      "label": tf.constant([0, 1]),
      "seed": per_example_noise.example_seeds(tf.range(2)),
  }
  if unet.low_res_resolution:
    batch["low_res"] = tf.image.resize(batch["x_start"],
                                       (unet.low_res_resolution,) * 2)
  if unet.text_embed_dim:
    # Stand-ins for the frozen encoder's output (tests/test_text_finetune.py
    # trains with the real one).
    batch["text_pooled"] = tf.constant(
        rng.normal(size=(2, unet.text_embed_dim)), tf.float32)
    batch["text_tokens"] = tf.constant(
        rng.normal(size=(2, 4, unet.text_embed_dim)), tf.float32)
    batch["text_mask"] = tf.constant([[True] * 4, [True, True, False, False]])
  metrics = tf.function(model.train_step)(batch)
  assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["grad_norm"]) > 0
