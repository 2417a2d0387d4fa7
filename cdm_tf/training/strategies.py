"""Choosing a tf.distribute strategy and a mixed-precision policy."""

from absl import logging
import keras
import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "tpu")


def create_strategy(name="default", tpu=None):
  """A ``tf.distribute.Strategy`` by name.

  ``default``: no distribution (the CPU here). ``mirrored``: all local GPUs,
  or all logical CPU devices if there are no GPUs. ``multi_worker_mirrored``:
  workers from TF_CONFIG. ``tpu``: the TPU named by ``tpu`` (address or name;
  "" or "local" for a TPU VM).
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu in (None, "local") else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def split_cpu(num_devices):
  """Splits the CPU into ``num_devices`` logical devices (before TF starts
  using it): lets MirroredStrategy run over CPU replicas, as in tests."""
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)


def set_mixed_precision(mode):
  """``none``, ``bfloat16`` (TPU, and CPUs with bf16 units) or ``float16``
  (GPUs; needs loss scaling, see ``optimizers.create_optimizer``)."""
  policies = {"none": "float32", "bfloat16": "mixed_bfloat16",
              "float16": "mixed_float16"}
  if mode not in policies:
    raise ValueError(f"unknown mixed precision {mode!r}; expected one of "
                     f"{sorted(policies)}")
  keras.mixed_precision.set_global_policy(policies[mode])
  logging.info("mixed precision policy: %s", policies[mode])
  return policies[mode]
