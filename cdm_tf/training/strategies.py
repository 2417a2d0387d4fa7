"""Choosing a tf.distribute strategy and a mixed-precision policy."""

from absl import flags
from absl import logging
import keras
import tensorflow as tf

from cdm_tf import fingerprints

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "tpu")
_POLICIES = {
    "none": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"
}
MIXED_PRECISION_MODES = tuple(_POLICIES)


def define_flags():
  """The flags every binary that runs models shares: --strategy, --tpu,
  --mixed_precision and --cpu_replicas (call at module level)."""
  flags.DEFINE_enum("strategy", "default", STRATEGIES,
                    "tf.distribute strategy.")
  flags.DEFINE_string("tpu", None, "TPU name or address (with --strategy=tpu).")
  flags.DEFINE_enum(
      "mixed_precision", "none", MIXED_PRECISION_MODES,
      "bfloat16 on TPU and bf16-capable CPUs; float16 (with "
      "loss scaling when training) on GPUs.")
  flags.DEFINE_integer(
      "cpu_replicas", 0, "Split the CPU into this many "
      "logical devices before starting (0: leave it whole).", lower_bound=0)


def dtype_policy(mode):
  """The Keras dtype policy of a --mixed_precision mode; None for "none"."""
  if mode not in _POLICIES:
    raise ValueError(f"unknown mixed precision {mode!r}; expected one of "
                     f"{MIXED_PRECISION_MODES}")
  return _POLICIES[mode]


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


def is_chief(strategy):
  """Whether this process writes a run's files (multi-worker: worker 0)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  return resolver.task_type in (None,
                                "chief") or (resolver.task_type == "worker" and
                                             resolver.task_id == 0)


def num_workers(strategy):
  """The number of processes training together (1 unless multi-worker)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 1
  spec = strategy.cluster_resolver.cluster_spec()
  return max(
      1,
      sum(
          spec.num_tasks(job)
          for job in ("chief", "worker")
          if job in spec.jobs))


def print_weights_digest(strategy, variables, print_fn):
  """In a multi-worker run, prints this worker's weights fingerprint
  (``fingerprints.of_arrays``).

  The workers apply the same all-reduced updates, so their copies of the
  weights must stay bit-identical: equal lines from every worker show they
  did (the non-chief workers keep no checkpoint to compare).
  """
  if num_workers(strategy) == 1:
    return
  resolver = strategy.cluster_resolver
  print_fn(f"{resolver.task_type} {resolver.task_id} weights sha256 "
           f"{fingerprints.of_arrays(variables)}")


def split_cpu(num_devices):
  """Splits the CPU into ``num_devices`` logical devices (before TF starts
  using it): lets MirroredStrategy run over CPU replicas, as in tests."""
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)


def set_mixed_precision(mode):
  """``none``, ``bfloat16`` (TPU, and CPUs with bf16 units) or ``float16``
  (GPUs; needs loss scaling, see ``optimizers.create_optimizer``)."""
  policy = dtype_policy(mode) or "float32"
  keras.mixed_precision.set_global_policy(policy)
  logging.info("mixed precision policy: %s", policy)
  return policy
