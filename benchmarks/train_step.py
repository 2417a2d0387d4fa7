"""Training and forward throughput of a reference U-Net on this CPU.

Times compiled DiffusionModel.train_step calls (forward, backward, gradient
clipping, Adam update, EMA) and U-Net forward calls of the 36,258,819-parameter
class-conditional 32x32 U-Net that `benchmarks/peer_diffusers.py` builds in
diffusers too (128 channels, multipliers 1,2,2,2, 2 blocks, attention at 16
with 8 channels per head, 1000 classes, conv up/down, additive embedding),
in float32 and mixed bfloat16, median of `--steps` calls. It prints achieved
GFLOP/s (forward FLOPs counted from the graph; a train step counts 3x) and
that figure as a fraction of a 2048x2048 matmul's rate in the same dtype,
measured in the same run: a shared machine slows both alike, so the fraction
means more than the raw seconds.

  python benchmarks/train_step.py --batch_size=8 --steps=5
"""

import time

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion_training import optimizers
from cdm_tf.models.diffusion_model import DiffusionModel
from cdm_tf.models.unet import UNet

flags.DEFINE_integer("batch_size", 8, "Examples per step.")
flags.DEFINE_integer("steps", 5, "Timed calls per measurement (median).")
flags.DEFINE_integer("rounds", 1, "Repeat every measurement this often.")
FLAGS = flags.FLAGS

NUM_CLASSES = 1000
PARAMETERS = 36_258_819  # the diffusers UNet2DModel of peer_diffusers.py
POLICIES = ("float32", "mixed_bfloat16")
MATMUL_SIDE = 2048


def reference_unet():
  """The 36,258,819-parameter reference U-Net.

  It is laid out as diffusers' UNet2DModel.
  """
  return UNet(resolution=32, base_channels=128, channel_mult=(1, 2, 2, 2),
              num_res_blocks=2, attention_resolutions=(16,), head_dim=8,
              num_classes=NUM_CLASSES, resblock_updown=False,
              use_scale_shift_norm=False)


def median_seconds(fn, steps):
  """Median wall time of `steps` calls after one warm-up call.

  `fn` must block until its result exists (return a numpy value).
  """
  fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_gflops(dtype, steps):
  """GFLOP/s of a 2048x2048 matmul in `dtype`: this run's peak to compare."""
  a = tf.cast(tf.random.stateless_normal([MATMUL_SIDE] * 2, seed=(1, 2)), dtype)
  matmul = tf.function(
      lambda: tf.reduce_sum(tf.cast(tf.matmul(a, a)[:1, :1], tf.float32)))
  seconds = median_seconds(lambda: matmul().numpy(), steps)
  return 2 * MATMUL_SIDE**3 / seconds / 1e9


def forward_gflop(unet, batch_size):
  """Forward-pass GFLOP of a batch, counted by TF's graph profiler."""
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer
  from tensorflow.python.profiler import option_builder
  # pylint: enable=g-import-not-at-top
  inputs = unet.dummy_inputs(batch_size=batch_size)
  concrete = tf.function(
      lambda x: unet(x, training=False)).get_concrete_function(
          tf.nest.map_structure(tf.TensorSpec.from_tensor, inputs))
  options = option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output(
      ).build()
  profile = model_analyzer.profile(concrete.graph, options=options)
  return profile.total_float_ops / 1e9


class CdmTfBench:
  """The reference U-Net under one dtype policy, ready to time.

  Built once, so that alternating measurements (peer_diffusers.py) time
  steady-state calls, not tracing.
  """

  def __init__(self, policy, batch_size):
    self.policy = policy
    keras.mixed_precision.set_global_policy(policy)
    try:
      self.model = DiffusionModel(reference_unet(), num_timesteps=1000)
      self.model.build_all(optimizers.create_optimizer("adam", 1e-4))
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.unet = self.model.unet
    self.batch = {
        "x_start": tf.random.stateless_uniform([batch_size, 32, 32, 3], (3, 4),
                                               -1, 1),
        "label": tf.range(batch_size) % NUM_CLASSES,
        "seed": per_example_noise.example_seeds(tf.range(batch_size)),
    }
    self.inputs = self.unet.dummy_inputs(batch_size=batch_size)
    self.inputs["x_t"] = self.batch["x_start"]
    self.inputs["time"] = tf.linspace(0.0, 999.0, batch_size)
    self.inputs["label"] = self.batch["label"]
    self._train = tf.function(self.model.train_step)
    self._forward = tf.function(lambda x: self.unet(x, training=False))

  def train_seconds(self, steps):
    return median_seconds(lambda: self._train(self.batch)["loss"].numpy(),
                          steps)

  def forward_seconds(self, steps):
    return median_seconds(
        lambda: self._forward(self.inputs)[0, 0, 0, 0].numpy(), steps)


def matmul_dtype(policy):
  return tf.bfloat16 if "bfloat16" in policy else tf.float32


def main(argv):
  del argv
  batch = FLAGS.batch_size
  print(f"reference U-Net 32x32, 128 ch, mult 1,2,2,2, 2 blocks, attention "
        f"at 16 (head_dim 8), {NUM_CLASSES} classes; batch {batch}, median "
        f"of {FLAGS.steps}")
  benches = {policy: CdmTfBench(policy, batch) for policy in POLICIES}
  unet = benches["float32"].unet
  params = unet.count_params()
  gflop = forward_gflop(unet, batch)
  print(f"parameters {params:,} (diffusers layout: {PARAMETERS:,}); forward "
        f"{gflop:.1f} GFLOP per batch of {batch}")
  print(f"{'':15s} {'what':8s} {'s':>7s} {'img/s':>7s} {'GFLOP/s':>8s} "
        f"{'matmul GFLOP/s':>15s} {'of peak':>8s}")
  for _ in range(FLAGS.rounds):
    for policy, bench in benches.items():
      peak = matmul_gflops(matmul_dtype(policy), FLAGS.steps)
      for what, flop, seconds in (("train", 3 * gflop,
                                   bench.train_seconds(FLAGS.steps)),
                                  ("forward", gflop,
                                   bench.forward_seconds(FLAGS.steps))):
        achieved = flop / seconds
        print(
            f"{policy:15s} {what:8s} {seconds:7.3f} {batch / seconds:7.1f} "
            f"{achieved:8.1f} {peak:15.1f} {100 * achieved / peak:7.1f}%",
            flush=True)


if __name__ == "__main__":
  command_line.run(main)
