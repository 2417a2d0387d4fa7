"""Exported diffusion stages: the EMA U-Net plus what sampling needs.

An export directory holds ``unet.keras`` (the U-Net with its EMA weights, a
standard Keras file) and ``diffusion.json`` (the training process and
conditioning settings). ``load_model`` rebuilds a ``DiffusionModel`` from
them without any gin state.
"""

import os
import uuid
import zipfile

import keras
import tensorflow as tf

from cdm_tf import files
from cdm_tf import fingerprints
from cdm_tf.models import diffusion_model

UNET_FILE = "unet.keras"
CONFIG_FILE = "diffusion.json"
# sha256 of the exported weight values (``fingerprints.of_arrays`` of the
# U-Net's weights), written at export: identifies the weights cheaply (the
# .keras file itself also holds a save date); computed again from a loaded
# U-Net, it tells whether ``unet.keras`` was replaced since.
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
      fingerprint = fingerprints.of_arrays(model.unet.get_weights())
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


def weights_fingerprint(directory):
  """The export's weight fingerprint; for an export without one, the
  sha256 of its weights file."""
  path = os.path.join(directory, FINGERPRINT_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return f.read().strip()
  return fingerprints.of_file(os.path.join(directory, UNET_FILE))


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
