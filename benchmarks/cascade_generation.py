"""Generation throughput of the tiny Fashion-MNIST cascade on this CPU.

Builds the two tiny stages from their training configs
(gin/models/fashion_mnist_16_base.gin, fashion_mnist_16_to_32_sr.gin; the
weights do not matter for speed), exports them, samples them with the
settings of gin/generation/fashion_mnist_16_to_32.gin, and reports images/s
and U-Net evaluations/s in float32 and bfloat16, with and without XLA.

  python benchmarks/cascade_generation.py --batch_size=50
"""

import os
import tempfile
import time

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import gin
import numpy as np

from cdm_tf import configuration
from cdm_tf.diffusion import per_example_noise
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.models import diffusion_model
from cdm_tf.models import export
from cdm_tf.training import strategies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_integer("batch_size", 50, "Images per cascade call.")
flags.DEFINE_integer(
    "rounds", 3, "Timed batches per setting, taken in "
    "turns with the other settings.")
flags.DEFINE_multi_string(
    "gin_bindings", [], "Bindings applied to "
    "the generation config, e.g. another sampler: "
    "'base/cascade.Stage.sampler = \"dpmpp_2m\"'.")
flags.DEFINE_integer(
    "cpu_replicas", 0, "Split the CPU into this many "
    "logical devices and sample under MirroredStrategy.")
FLAGS = flags.FLAGS


def _export_stage(config, directory):
  gin.clear_config()
  configuration.parse_gin([os.path.join(ROOT, "gin", "models", config)], [])
  model = gin.get_configurable(diffusion_model.DiffusionModel)()
  gin.clear_config()
  model.build_all()
  return export.export_model(model, directory)


def _stages(base_dir, sr_dir):
  gin.clear_config()
  configuration.parse_gin(
      [os.path.join(ROOT, "gin", "generation", "fashion_mnist_16_to_32.gin")], [
          f"BASE_MODEL_DIR = '{base_dir}'", f"SR_MODEL_DIR = '{sr_dir}'",
          *FLAGS.gin_bindings
      ])
  stages = cascade_lib.configured_stages()
  gin.clear_config()
  return stages


def main(argv):
  del argv
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  strategy = strategies.create_strategy(
      "mirrored" if FLAGS.cpu_replicas else "default")
  with tempfile.TemporaryDirectory() as tmp:
    stages = _stages(
        _export_stage("fashion_mnist_16_base.gin", os.path.join(tmp, "base")),
        _export_stage("fashion_mnist_16_to_32_sr.gin", os.path.join(tmp, "sr")))
    seeds = per_example_noise.example_seeds(np.arange(FLAGS.batch_size)).numpy()
    labels = np.arange(FLAGS.batch_size) % 10
    print(f"tiny cascade 16 -> 32, batch {FLAGS.batch_size}, "
          f"{strategy.num_replicas_in_sync} replica(s); median of "
          f"{FLAGS.rounds} rounds, settings taking turns (load average "
          f"{os.getloadavg()[0]:.1f} at start)")
    configs = [(policy, jit, steps_per_call)
               for policy in (None, "mixed_bfloat16")
               for jit in (False, True)
               for steps_per_call in (1, None)]
    cascades = {}
    for config in configs:
      policy, jit, steps_per_call = config
      cascades[config] = cascade_lib.Cascade(stages, strategy=strategy,
                                             dtype_policy=policy,
                                             jit_compile=jit,
                                             steps_per_call=steps_per_call)
      cascades[config].sample(seeds, labels)  # trace and compile
    times = {config: [] for config in configs}
    for round_index in range(FLAGS.rounds):
      order = configs if round_index % 2 == 0 else configs[::-1]
      for config in order:
        start = time.perf_counter()
        cascades[config].sample(seeds, labels)
        times[config].append(time.perf_counter() - start)
    for config in configs:
      policy, jit, steps_per_call = config
      evaluations = cascades[config].network_evaluations_per_example()
      images_per_second = FLAGS.batch_size / float(np.median(times[config]))
      calls = "per step" if steps_per_call == 1 else "whole chain"
      print(
          f"{policy or 'float32':15s} xla={str(jit):5s} "
          f"{calls:12s} {images_per_second:7.2f} images/s "
          f"{images_per_second * evaluations:9.0f} U-Net evaluations/s "
          f"(image-evaluations; {evaluations} per image)", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
  command_line.run(main)
