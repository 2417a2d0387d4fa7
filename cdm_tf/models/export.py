"""Exported diffusion stages: the EMA U-Net plus what sampling needs.

An export directory holds ``unet.keras`` (the U-Net with its EMA weights, a
standard Keras file) and ``diffusion.json`` (the training process and
conditioning settings). ``load_model`` rebuilds a ``DiffusionModel`` from
them without any gin state.
"""

import json
import os
import uuid

import keras
import tensorflow as tf

from cdm_tf import files
from cdm_tf.models import diffusion_model

UNET_FILE = "unet.keras"
CONFIG_FILE = "diffusion.json"


def export_model(model, directory):
  """Writes the model's EMA U-Net and settings; returns ``directory``.

  Written into a temporary sibling directory first and renamed, so a reader
  never sees a half-written export.
  """
  tmp = f"{directory.rstrip('/')}.tmp-{uuid.uuid4().hex}"
  tf.io.gfile.makedirs(tmp)
  with model.ema_weights():
    model.unet.save(os.path.join(tmp, UNET_FILE))
  config = model.get_config()
  config.pop("unet")
  for key in ("name", "trainable", "dtype"):
    config.pop(key, None)
  files.atomic_write_json(os.path.join(tmp, CONFIG_FILE), config)
  if tf.io.gfile.exists(directory):
    tf.io.gfile.rmtree(directory)
  tf.io.gfile.rename(tmp, directory)
  return directory


def load_model(directory):
  """A ``DiffusionModel`` whose U-Net (and EMA) hold the exported weights."""
  with tf.io.gfile.GFile(os.path.join(directory, CONFIG_FILE)) as f:
    config = json.load(f)
  unet = keras.models.load_model(os.path.join(directory, UNET_FILE))
  model = diffusion_model.DiffusionModel(unet, **config)
  model.build_all()
  return model
