"""Exported diffusion stages: the EMA U-Net plus what sampling needs.

An export directory holds ``unet.keras`` (the U-Net with its EMA weights, a
standard Keras file) and ``diffusion.json`` (the training process and
conditioning settings). ``load_model`` rebuilds a ``DiffusionModel`` from
them without any gin state.
"""

import hashlib
import os
import uuid
import zipfile

import keras
import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.models import diffusion_model

UNET_FILE = "unet.keras"
CONFIG_FILE = "diffusion.json"
# sha256 of the exported weight values, written at export: identifies the
# weights cheaply (the .keras file itself also holds a save date).
FINGERPRINT_FILE = "weights.sha256"


def export_model(model, directory):
  """Writes the model's EMA U-Net and settings; returns ``directory``.

  Written into a temporary sibling directory first and renamed, so a reader
  never sees a half-written export. Temporary directories of earlier
  exports to ``directory`` that were killed are removed first (an export
  replaces ``directory`` anyway, so two at once cannot both be wanted).
  """
  files.remove_temporaries_of(directory)
  tmp = f"{directory.rstrip('/')}{files.TMP_MARKER}{uuid.uuid4().hex}"
  tf.io.gfile.makedirs(tmp)
  try:
    with model.ema_weights():
      model.unet.save(os.path.join(tmp, UNET_FILE))
      fingerprint = loaded_weights_fingerprint(model.unet)
    files.atomic_write_bytes(os.path.join(tmp, FINGERPRINT_FILE),
                             fingerprint.encode())
    config = model.get_config()
    config.pop("unet")
    for key in ("name", "trainable", "dtype"):
      config.pop(key, None)
    files.atomic_write_json(os.path.join(tmp, CONFIG_FILE), config)
  except BaseException:
    # A failed export leaves nothing behind; a killed one is cleaned above.
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.rmtree(tmp)
    raise
  if tf.io.gfile.exists(directory):
    tf.io.gfile.rmtree(directory)
  tf.io.gfile.rename(tmp, directory)
  return directory


def loaded_weights_fingerprint(unet):
  """sha256 of a U-Net's weight values as they are now in memory.

  What ``export_model`` records; computed again from the weights a loaded
  model holds, it tells whether ``unet.keras`` was replaced since.
  """
  return weights_digest(unet.get_weights())


def weights_digest(values):
  """sha256 (hex) of arrays or variables, in order, bytes as stored."""
  digest = hashlib.sha256()
  for value in values:
    digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
  return digest.hexdigest()


def weights_fingerprint(directory):
  """The export's weight fingerprint; for an export without one, the
  sha256 of its weights file."""
  path = os.path.join(directory, FINGERPRINT_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return f.read().strip()
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(os.path.join(directory, UNET_FILE), "rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
      digest.update(chunk)
  return digest.hexdigest()


def read_config(directory):
  """The exported model's ``DiffusionModel`` settings (no weights loaded)."""
  for name in (CONFIG_FILE, UNET_FILE):
    if not tf.io.gfile.exists(os.path.join(directory, name)):
      raise FileNotFoundError(f"{directory} is not an exported model: "
                              f"{name} is missing (see tools/train.py, "
                              "which exports to <model_dir>/export)")
  return files.read_json(os.path.join(directory, CONFIG_FILE))


def load_keras_file(path):
  """``keras.models.load_model(path)``; a missing, cut short or damaged
  file raises ValueError naming it."""
  try:
    return keras.models.load_model(path)
  except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
    raise ValueError(
        f"{path} cannot be loaded as a Keras model ({type(e).__name__}: "
        f"{e}): the file is missing, cut short or damaged; write it again "
        "(a diffusion stage: run tools/train.py on its --model_dir, which "
        "exports from the last checkpoint)") from e


def load_model(directory, dtype_policy=None):
  """A ``DiffusionModel`` for sampling whose U-Net holds the exported weights.

  No EMA copies or optimizer are created (they would double the memory of
  a large model); call ``build_all`` on the result to train from it.

  Args:
    directory: an ``export_model`` directory.
    dtype_policy: run the U-Net under this Keras dtype policy (e.g.
      ``"mixed_bfloat16"`` to sample in bfloat16) instead of the one it was
      trained with; the float32 weights are the same either way.
  """
  config = read_config(directory)
  unet = load_keras_file(os.path.join(directory, UNET_FILE))
  if dtype_policy is not None:
    rebuilt = unet.__class__.from_config(
        {**unet.get_config(), "dtype": keras.DTypePolicy(dtype_policy)})
    rebuilt.build()
    rebuilt.set_weights(unet.get_weights())
    unet = rebuilt
  try:
    return diffusion_model.DiffusionModel(unet, **config)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{os.path.join(directory, CONFIG_FILE)} holds settings "
                     f"a DiffusionModel does not take ({e})") from e
