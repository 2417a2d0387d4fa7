"""Generates a class-balanced synthetic split with a cascade, as TFRecords.

  python tools/generate.py \
      --gin_file=gin/generation/fashion_mnist_16_to_32.gin \
      --real_data_dir=data/fashion_mnist --multiplier=1 \
      --output_dir=runs/synthetic

How many images (one of):
  --multiplier=K      K x the real split's count of each class
                      (counts from --real_data_dir, scanned once and cached)
  --total=N           N images spread evenly over the classes
  --classes=3,7 --per_class=N   N images of each listed class

An earlier resolution: --num_stages=N runs only the cascade's first N
stages (e.g. 1 and 2 of a 64 -> 256 -> 1024 cascade for FID at 64x64 and
256x256); the images are those the next stage would have upsampled.

Many workers: start the same command with --num_workers=W and
--worker_index=0..W-1; each writes a disjoint set of shards. Killed and
restarted with the same flags, a worker regenerates only its incomplete
shard. --dry_run prints the plan and the network evaluations it costs.
Exit status 2: bad flags or gin; 3: the output directory holds a set made
with other settings or with other weights in a stage (an export's
unet.keras replaced since the set was started).
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf.data import class_counts
from cdm_tf.data import class_names
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.training import strategies

flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("output_dir", None, "Where the shards go.", required=True)
flags.DEFINE_string(
    "real_data_dir", None, "The real ImageNet-format data: "
    "class counts (--multiplier) and, if it has a "
    "classes.json, the class table (else ImageNet's).")
flags.DEFINE_string("real_split", "train", "Real split whose counts to match.")
flags.DEFINE_string("split", "train", "Name of the synthetic split.")
flags.DEFINE_float("multiplier", None, "Images per class = multiplier x real.")
flags.DEFINE_integer("total", None, "Images in all, uniform over classes.")
flags.DEFINE_list("classes", None, "0-based classes to generate (with "
                  "--per_class).")
flags.DEFINE_integer("per_class", None, "Images of each of --classes.")
flags.DEFINE_integer("num_workers", 1, "Workers sharing the plan.")
flags.DEFINE_integer("worker_index", 0, "This worker, 0..num_workers-1.")
flags.DEFINE_integer(
    "num_stages", None, "Run only the cascade's first N "
    "stages; default: all of them.", lower_bound=1)
flags.DEFINE_bool("dry_run", False, "Print the plan and exit.")
strategies.define_flags()
FLAGS = flags.FLAGS


def _class_counts(classes):
  chosen = [
      FLAGS.multiplier is not None, FLAGS.total is not None, FLAGS.classes
      is not None
  ]
  if sum(chosen) != 1 or (FLAGS.classes is None) != (FLAGS.per_class is None):
    raise ValueError("give exactly one of --multiplier, --total, or --classes "
                     "with --per_class")
  if FLAGS.multiplier is not None:
    if not FLAGS.real_data_dir:
      raise ValueError("--multiplier needs --real_data_dir")
    real = class_counts.count_per_class(FLAGS.real_data_dir,
                                        split=FLAGS.real_split,
                                        num_classes=len(classes))
    return plan_lib.counts_from_real(real, FLAGS.multiplier)
  if FLAGS.total is not None:
    return plan_lib.uniform_counts(FLAGS.total, len(classes))
  return plan_lib.explicit_counts([int(c) for c in FLAGS.classes],
                                  FLAGS.per_class, len(classes))


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  settings = synthetic_dataset.GenerationSettings()
  classes = class_names.load_classes(FLAGS.real_data_dir)
  plan = plan_lib.GenerationPlan(_class_counts(classes),
                                 settings.examples_per_shard, FLAGS.split)
  plan.worker_shards(FLAGS.num_workers, FLAGS.worker_index)  # checks them
  stages = cascade_lib.leading_stages(FLAGS.num_stages)
  if FLAGS.dry_run:
    print(
        synthetic_dataset.describe_plan(
            plan, cascade_lib.estimated_evaluations_per_image(stages),
            FLAGS.num_workers, FLAGS.worker_index))
    return
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  cascade = cascade_lib.Cascade(
      stages=stages, strategy=strategy,
      dtype_policy=strategies.dtype_policy(FLAGS.mixed_precision))
  print(
      f"cascade {cascade.resolutions} on {cascade.num_replicas} "
      f"replica(s), {cascade.network_evaluations_per_example()} network "
      "evaluations per image", flush=True)
  synthetic_dataset.generate(FLAGS.output_dir, cascade, plan, classes, settings,
                             FLAGS.num_workers, FLAGS.worker_index,
                             print_fn=lambda line: print(line, flush=True))


if __name__ == "__main__":
  command_line.run(main)
