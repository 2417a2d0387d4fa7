"""Throughput of FID Inception feature extraction, float32 and bfloat16.

FID@50K needs Inception-v3 features of 50,000 generated images (plus the
real split's, once), so extraction speed decides how long an evaluation
takes. Times the compiled network on batches of 299x299 images (the
resize excluded) and end to end from uint8 images at a cascade resolution
(resize included), for the float32 reference and the mixed_bfloat16 policy,
and prints how far bfloat16 features are from float32 ones (they are not
comparable with published FIDs).

  python benchmarks/fid_features.py --batch_size=32
"""

import time

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import numpy as np
import tensorflow as tf

from cdm_tf.metrics import fid_inception

flags.DEFINE_integer("batch_size", 32, "Images per network call.")
flags.DEFINE_integer("repeats", 5, "Timed batches per setting.")
flags.DEFINE_integer("resolution", 64,
                     "Side of the uint8 images of the end-to-end timing.")
FLAGS = flags.FLAGS


def _images_per_second(fn, batch, count):
  fn(batch)  # trace and warm up
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    fn(batch)
  return count * FLAGS.repeats / (time.perf_counter() - start)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  size = fid_inception.INPUT_SIZE
  resized = tf.constant(
      rng.uniform(0, 255, (FLAGS.batch_size, size, size, 3)).astype(np.float32))
  small = rng.integers(
      0, 256, (FLAGS.batch_size, FLAGS.resolution, FLAGS.resolution, 3),
      dtype=np.uint8)
  print(f"{'policy':16s} {'network img/s':>14s} "
        f"{f'{FLAGS.resolution}px->features img/s':>28s}")
  features = {}
  for policy in ("float32", "mixed_bfloat16"):
    inception = fid_inception.FidInception(dtype_policy=policy)
    network = _images_per_second(
        lambda x, inception=inception: inception.compute(x)[0].numpy(), resized,
        FLAGS.batch_size)
    end_to_end = _images_per_second(lambda x, inception=inception: inception(x),
                                    small, FLAGS.batch_size)
    features[policy] = inception(small)[0]
    print(f"{policy:16s} {network:14.1f} {end_to_end:28.1f}", flush=True)
  difference = np.abs(features["mixed_bfloat16"] - features["float32"])
  print(f"bfloat16 vs float32 features: max |difference| "
        f"{difference.max():.3g}, mean {difference.mean():.3g} (feature "
        f"mean {features['float32'].mean():.3g})")


if __name__ == "__main__":
  command_line.run(main)
