"""Writes a class-balanced subset of a real training split as a data directory.

For the low-data experiments and the CAS reference: the first
floor(--fraction x count) (or --per_class) training records of each class,
copied as they are; the validation split is linked, classes.json copied.
Train classifiers on it with --real_data_dir=<output_dir>:

  python tools/subset_data.py --source_dir=data/fashion_mnist \
      --output_dir=data/fashion_mnist_10pct --fraction=0.1

Exit status 2: bad flags, a missing or unreadable source, too few records,
or an output directory holding another subset.
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags

from cdm_tf import configuration
from cdm_tf.data_preparation import real_subset

flags.DEFINE_string("source_dir", None, "Real data directory.")
flags.DEFINE_string("output_dir", None, "The subset's directory.")
flags.DEFINE_float("fraction", None, "Keep this fraction of each class.")
flags.DEFINE_integer("per_class", None, "Or keep this many of each class.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.source_dir or not FLAGS.output_dir:
    raise configuration.ConfigError("--source_dir and --output_dir are needed")
  manifest = real_subset.write_subset(FLAGS.source_dir, FLAGS.output_dir,
                                      fraction=FLAGS.fraction,
                                      per_class=FLAGS.per_class)
  print(f"train: {manifest.num_examples} records in {manifest.num_shards} "
        f"shards; per class {list(manifest.class_counts)}")
  print(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
  command_line.run(main)
