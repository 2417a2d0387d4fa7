"""Training throughput of a fixed U-Net in float32 and bfloat16 on this CPU.

Times compiled DiffusionModel.train_step calls (forward, backward, Adam
update, EMA) for a DDPM-CIFAR-10-sized class-conditional 32x32 U-Net
(128 channels, multipliers 1,2,2,2, 2 blocks, attention at 16) at a fixed
batch, and reports steps/s, images/s and achieved GFLOP/s (the forward
FLOPs counted from the graph, times 3 for forward + backward).

  python benchmarks/train_step.py --batch_size=8
"""

import time

from absl import app
from absl import flags
import keras
import tensorflow as tf

from cdm_tf.diffusion import per_example_noise
from cdm_tf.models.diffusion_model import DiffusionModel
from cdm_tf.models.unet import UNet
from cdm_tf.training import optimizers

flags.DEFINE_integer("batch_size", 8, "Examples per step.")
flags.DEFINE_integer("steps", 5, "Timed steps per precision.")
FLAGS = flags.FLAGS


def _unet():
  return UNet(resolution=32, base_channels=128, channel_mult=(1, 2, 2, 2),
              num_res_blocks=2, attention_resolutions=(16,), num_heads=1,
              dropout=0.1, num_classes=10)


def forward_gflop_per_example(unet):
  """Forward-pass GFLOP per example, counted by TF's graph profiler."""
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer
  from tensorflow.python.profiler import option_builder
  # pylint: enable=g-import-not-at-top
  inputs = unet.dummy_inputs(batch_size=1)
  concrete = tf.function(lambda x: unet(x, training=False)).get_concrete_function(
      tf.nest.map_structure(tf.TensorSpec.from_tensor, inputs))
  options = option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output(
          ).build()
  profile = model_analyzer.profile(concrete.graph, options=options)
  return profile.total_float_ops / 1e9


def _time_policy(policy, batch_size, steps):
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = DiffusionModel(_unet(), num_timesteps=1000)
    model.build_all(optimizers.create_optimizer("adam", 1e-4))
    batch = {
        "x_start": tf.random.uniform([batch_size, 32, 32, 3], -1, 1),
        "label": tf.range(batch_size) % 10,
        "seed": per_example_noise.example_seeds(tf.range(batch_size)),
    }
    step = tf.function(model.train_step)
    step(batch)  # compile
    start = time.perf_counter()
    for _ in range(steps):
      metrics = step(batch)
    float(metrics["loss"])
    return (time.perf_counter() - start) / steps, model.unet
  finally:
    keras.mixed_precision.set_global_policy("float32")


def main(argv):
  del argv
  print(f"U-Net 32x32, 128 ch, mult 1,2,2,2, 2 blocks, attn 16; "
        f"batch {FLAGS.batch_size}")
  gflop = None
  for policy in ("float32", "mixed_bfloat16"):
    seconds, unet = _time_policy(policy, FLAGS.batch_size, FLAGS.steps)
    if gflop is None:
      gflop = forward_gflop_per_example(unet)
      print(f"parameters {unet.count_params():,}; forward "
            f"{gflop:.2f} GFLOP per example")
    achieved = 3 * gflop * FLAGS.batch_size / seconds
    print(f"{policy:15s} {1 / seconds:6.2f} steps/s "
          f"{FLAGS.batch_size / seconds:7.1f} images/s "
          f"{achieved:8.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
  app.run(main)
