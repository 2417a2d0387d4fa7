"""Starting a run from another run's weights (fine-tuning).

Azizi et al. fine-tune Imagen's pretrained text-to-image stages on ImageNet.
``initialize_from`` puts a source model's weights into a freshly built
``DiffusionModel`` before its first step:

* an export directory (``cdm_tf.models.export``): it holds the EMA weights
  only, so the U-Net and its EMA both start from them;
* a training run's directory, its ``checkpoints/`` directory or one
  checkpoint prefix: the U-Net weights and the EMA are restored separately.
  The optimizer state and data position are NOT taken: fine-tuning starts
  at step 0 with its own optimizer (Azizi et al. switch the base stage to
  Adafactor).

The architecture must match (same variables and shapes); a mismatch fails
before any step. An export also records the text encoder its model was
trained with, which must be the fine-tune's (checked here).
"""

import os

import tensorflow as tf

from cdm_tf.models import export
from cdm_tf.training import preemption


def is_export(path):
  return all(
      tf.io.gfile.exists(os.path.join(path, name))
      for name in (export.CONFIG_FILE, export.UNET_FILE))


def checkpoint_path(path):
  """The checkpoint prefix a run directory, checkpoint directory or prefix
  names (the latest one of a directory), or None."""
  for directory in (path, os.path.join(path, preemption.CHECKPOINTS_DIR)):
    if tf.io.gfile.isdir(directory):
      latest = tf.train.latest_checkpoint(directory)
      if latest:
        return latest
  if tf.io.gfile.exists(path + ".index"):
    return path
  return None


def _check_shapes(model, shapes, source):
  mine = [tuple(v.shape) for v in model.unet.weights]
  if mine != [tuple(s) for s in shapes]:
    raise ValueError(
        f"{source} holds a U-Net of another architecture ({len(shapes)} "
        f"weights) than this model ({len(mine)} weights); fine-tuning needs "
        "the same U-Net configuration")


def _from_export(model, directory):
  config = export.read_config(directory)
  recorded = config.get("text_encoder")
  if recorded and model.text_encoder and recorded != model.text_encoder:
    raise ValueError(
        f"{directory} was trained with the text encoder {recorded['name']!r} "
        f"(fingerprint {recorded['fingerprint'][:12]}, max_length "
        f"{recorded['max_length']}), this run uses "
        f"{model.text_encoder['name']!r} (fingerprint "
        f"{model.text_encoder['fingerprint'][:12]}, max_length "
        f"{model.text_encoder['max_length']}); configure the same encoder")
  source = export.load_keras_file(os.path.join(directory, export.UNET_FILE))
  weights = source.get_weights()
  del source
  _check_shapes(model, [w.shape for w in weights], directory)
  model.unet.set_weights(weights)
  # The export holds the EMA weights: the EMA starts from them too.
  for ema, var in zip(model.ema_variables, model.unet.trainable_variables):
    ema.assign(var.value)


def _from_checkpoint(model, prefix):
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  source_shapes = []
  for i in range(len(model.unet.weights)):
    key = f"unet_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE"
    if key not in shapes:
      raise ValueError(f"{prefix} has no U-Net weight {i}: not a training "
                       "checkpoint of this package, or another architecture")
    source_shapes.append(shapes[key])
  if f"unet_weights/{len(model.unet.weights)}/.ATTRIBUTES/VARIABLE_VALUE" in (
      shapes):
    source_shapes.append(None)  # more weights than this model: mismatch
  _check_shapes(model, source_shapes, prefix)
  checkpoint = tf.train.Checkpoint(unet_weights=list(model.unet.weights),
                                   ema_weights=list(model.ema_variables))
  # The optimizer and data iterator of the source run are left out.
  checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()


def initialize_from(model, path):
  """Loads the U-Net weights and EMA of ``model`` (built with ``build_all``)
  from an export or a checkpoint; returns what was loaded, for the log."""
  if is_export(path):
    _from_export(model, path)
    return f"export {path}"
  prefix = checkpoint_path(path)
  if prefix is None:
    raise FileNotFoundError(
        f"init_from={path} is neither an export directory ({export.UNET_FILE}"
        f" + {export.CONFIG_FILE}) nor a run or checkpoint directory with a "
        "checkpoint")
  _from_checkpoint(model, prefix)
  return f"checkpoint {prefix}"
