"""Input-pipeline throughput: our reader + preprocessing vs a bare tf.data read.

For each data set it times, over the same TFRecord files:
  bare        TFRecordDataset -> parse -> decode_image (parallel map)
  reader      imagenet_reader.read_dataset (checks, decode, labels, shuffle)
  +diffusion  reader + diffusion preprocessing (crop, anti-aliased resizes)
  +classifier reader + random-resized-crop training preprocessing
Data sets: the embedded Fashion-MNIST (--data_dir, 32x32 PNG) and ImageNet
photos (foolbox's 20 labelled JPEGs, 224-1024 px, repeated to --photo_records
records, read repeatedly). Prints steady-state images per second.

The machine may be shared, so pipelines are timed in rounds, taking turns
(the order reverses every round), each run on a fresh iterator with a
warm-up; medians over rounds are printed, and the reader's ratio to bare is
the median of the per-round ratios (a bare and a reader run close in time
see about the same load). The load average is printed with every round.
By default a tf.function drains the iterator, so the figure is the input
pipeline's cost, not Python's per-element overhead (which a training loop
does not pay); --consumer=python iterates in Python instead.

  python benchmarks/data_pipeline.py --data_dir=data/fashion_mnist
"""

import glob
import importlib.util
import os
import re
import statistics
import tempfile
import time

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import classifier_preprocessing
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer

flags.DEFINE_string("data_dir", "data/fashion_mnist",
                    "Prepared Fashion-MNIST (tools/prepare_data.py).")
flags.DEFINE_integer("images", 4000, "Images timed per Fashion-MNIST run.")
flags.DEFINE_integer("photo_records", 200, "ImageNet photo records written.")
flags.DEFINE_integer("photo_images", 1500, "Images timed per photo run.")
flags.DEFINE_integer("rounds", 3, "Timed runs of each pipeline, in turns.")
flags.DEFINE_integer("warmup", 1200, "Images read before timing a run.")
flags.DEFINE_enum("consumer", "graph", ["graph", "python"],
                  "Drain elements in a tf.function or in a Python loop.")
flags.DEFINE_list("pipelines", ["bare", "reader", "+diffusion", "+classifier"],
                  "Pipelines to time (bare is always timed).")
FLAGS = flags.FLAGS
AUTOTUNE = tf.data.AUTOTUNE


def _bare(files):
  features = {
      schema.TPU_IMAGE: tf.io.FixedLenFeature([], tf.string),
      schema.TPU_LABEL: tf.io.FixedLenFeature([], tf.int64)
  }

  def decode(record):
    parsed = tf.io.parse_single_example(record, features)
    image = tf.io.decode_image(parsed[schema.TPU_IMAGE], channels=3,
                               expand_animations=False)
    return image, parsed[schema.TPU_LABEL]

  return tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE).map(
      decode, num_parallel_calls=AUTOTUNE)


def _pipelines(files, num_classes, resolutions, crop_size):

  def reader():
    return imagenet_reader.read_dataset(files, num_classes=num_classes, seed=0,
                                        shuffle_buffer=1000, repeat=True)

  seed = tf.constant([1, 2], tf.int64)
  return {
      "bare": lambda: _bare(files),
      "reader": reader,
      "+diffusion": lambda: reader().enumerate().map(
          lambda i, ex: diffusion_preprocessing.cascade_example(
              ex, resolutions, random_flip=True, seed=tf.random.experimental.
              stateless_fold_in(seed, i)), num_parallel_calls=AUTOTUNE),
      "+classifier": lambda: reader().enumerate().map(
          lambda i, ex: classifier_preprocessing.train_example(
              ex, tf.random.experimental.stateless_fold_in(seed, i), image_size=
              crop_size), num_parallel_calls=AUTOTUNE),
  }


def _drain(iterator, count):
  for _ in tf.range(count):
    iterator.get_next()


def _images_per_second(make_dataset, count):
  # Steady state: the pipeline repeats, and the first --warmup images
  # (thread start-up, filling the shuffle buffer) are not timed.
  iterator = iter(make_dataset().repeat().prefetch(AUTOTUNE))
  if FLAGS.consumer == "graph":
    # A new function per run: each iterator gets its own trace.
    drain = tf.function(lambda it, n: _drain(it, n))
    drain(iterator, tf.constant(FLAGS.warmup))
    start = time.perf_counter()
    drain(iterator, tf.constant(count))
  else:
    for _ in range(FLAGS.warmup):
      next(iterator)
    start = time.perf_counter()
    for _ in range(count):
      next(iterator)
  return count / (time.perf_counter() - start)


def _photo_records(directory, count):
  spec = importlib.util.find_spec("foolbox")
  if spec is None:
    return None
  paths = sorted(
      glob.glob(
          os.path.join(spec.submodule_search_locations[0], "data",
                       "imagenet_*.jpg")))
  classes = class_names.imagenet_classes()
  examples = []
  for path in paths:
    label = int(re.search(r"imagenet_\d+_(\d+)\.jpg", path).group(1))
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
    examples.append((shard_writer.encode_example(image, label, classes,
                                                 image_format="jpeg"), label))
  shard_path = os.path.join(directory, "train-00000-of-00001")
  with shard_writer.ShardWriter(shard_path, len(classes)) as writer:
    for i in range(count):
      writer.write(*examples[i % len(examples)])
  return [shard_path]


def _report(name, pipelines, count):
  print(f"\n{name}")
  pipelines = {
      label: make
      for label, make in pipelines.items()
      if label == "bare" or label in FLAGS.pipelines
  }
  rates = {label: [] for label in pipelines}
  for round_index in range(FLAGS.rounds):
    order = list(pipelines)
    if round_index % 2:
      order.reverse()
    for label in order:
      rates[label].append(_images_per_second(pipelines[label], count))
    print(
        f"  round {round_index + 1}: load average "
        f"{os.getloadavg()[0]:.1f}; " +
        ", ".join(f"{label} {rates[label][-1]:.0f}" for label in pipelines),
        flush=True)
  bare = rates["bare"]
  for label, runs in rates.items():
    ratios = [rate / b for rate, b in zip(runs, bare)]
    print(
        f"  {label:12s} {statistics.median(runs):9.0f} images/s "
        f"(median of {len(runs)}), {statistics.median(ratios):5.2f}x bare "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)


def main(argv):
  del argv
  print(f"cores: {os.cpu_count()}, consumer: {FLAGS.consumer}, "
        f"{FLAGS.rounds} rounds")
  if tf.io.gfile.exists(FLAGS.data_dir):
    files = imagenet_reader.list_files(FLAGS.data_dir, split="train")
    _report(
        f"Fashion-MNIST 32x32 PNG ({FLAGS.data_dir}), cascade 16/32, "
        "classifier crop 32", _pipelines(files, 10, (16, 32), 32), FLAGS.images)
  else:
    print(f"no {FLAGS.data_dir}: run tools/prepare_data.py first")
  with tempfile.TemporaryDirectory() as tmp:
    files = _photo_records(tmp, FLAGS.photo_records)
    if files is None:
      print("foolbox not installed: skipping the ImageNet photos")
      return
    _report(
        "ImageNet photos (foolbox JPEGs, 224-1024 px), cascade 64/256, "
        "classifier crop 224", _pipelines(files, 1000, (64, 256), 224),
        FLAGS.photo_images)


if __name__ == "__main__":
  command_line.run(main)
