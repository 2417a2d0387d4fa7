"""Trains an ImageNet classifier on real, synthetic or real + synthetic data,
or computes the Classification Accuracy Score (CAS) of a synthetic set.

  # the embedded data, CPU (a few minutes)
  python tools/train_classifier.py \
      --gin_file=gin/classifiers/fashion_mnist/resnet_tiny.gin \
      --real_data_dir=data/fashion_mnist --model_dir=runs/classifier

  # ResNet-50 on ImageNet + 2x synthetic, TPU
  python tools/train_classifier.py --gin_file=gin/classifiers/resnet50.gin \
      --real_data_dir=gs://bucket/imagenet --synthetic_dir=gs://bucket/syn \
      --data=real+synthetic --synthetic_multiplier=2 \
      --model_dir=gs://bucket/runs/r50_2x --strategy=tpu --tpu=my-tpu \
      --mixed_precision=bfloat16

  # CAS of a generated set (gin/classifiers/resnet50_cas.gin by default)
  python tools/train_classifier.py --cas --real_data_dir=gs://bucket/imagenet \
      --synthetic_dir=gs://bucket/syn --model_dir=gs://bucket/runs/cas

  # its reference: the same protocol on as many real images per class
  # (here a 1x set: all of ImageNet; tools/subset_data.py for fewer)
  python tools/train_classifier.py --cas --data=real \
      --real_data_dir=gs://bucket/imagenet --model_dir=gs://bucket/runs/cas_ref

The model and recipe come from a gin/classifiers config (one column of
Tables A.1 / A.2); --global_batch_size below the recipe's batch scales the
learning rate linearly. Resumes from the latest checkpoint in --model_dir.
trainer.train_classifier.steps_per_execution = k runs k steps per compiled
call (its log, checkpoint and evaluation intervals must be multiples of k).
Writes <model_dir>/eval/ (eval.json, per_class_accuracy.csv and .png, the
plot against --compare_with, a real-data model's per-class CSV, when given)
and, with --cas, <model_dir>/cas_report.json.

Exit status (cdm_tf/command_line.py): 0 done (or stopped by SIGTERM with a
checkpoint), 2 bad flags, configuration or data, 3 a --model_dir run with
another model or optimizer, or a non-finite loss.
"""

import functools
import os

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf.classifiers import cas
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import trainer
from cdm_tf.training import strategies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAS_GIN_FILE = os.path.join(ROOT, "gin", "classifiers", "resnet50_cas.gin")

flags.DEFINE_multi_string(
    "gin_file", [], "Gin config files (a "
    "gin/classifiers config; with --cas the default is "
    "resnet50_cas.gin).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and "
                    "evaluation results go here.")
flags.DEFINE_string(
    "real_data_dir", None, "Real TFRecords (TPU or TFDS "
    "format) with train and validation splits; evaluation is "
    "always on its validation split.")
flags.DEFINE_string(
    "synthetic_dir", None, "A generated set (shards and "
    "manifest), e.g. written by tools/generate.py.")
flags.DEFINE_string("synthetic_split", input_pipeline.TRAIN_SPLIT,
                    "Split name of the synthetic shards.")
flags.DEFINE_float(
    "synthetic_multiplier", None, "Take K x the real count of "
    "every class from the synthetic set (class-balanced); "
    "unset: the whole synthetic set.")
flags.DEFINE_enum("data", None, list(input_pipeline.DATA_CHOICES),
                  "Training data; default real, or synthetic with --cas.")
flags.DEFINE_integer(
    "global_batch_size", None, "Global batch; default the "
    "recipe's. The learning rate scales linearly with it.")
flags.DEFINE_bool(
    "cas", False, "Classification Accuracy Score: train the "
    "CAS recipe on synthetic data only, one crop per image, "
    "and report top-1/top-5 on the real validation split; "
    "with --data=real, the same protocol on real images (the "
    "CAS's reference).")
flags.DEFINE_string(
    "compare_with", None, "Per-class accuracy CSV of a "
    "real-data model (its eval/per_class_accuracy.csv) to "
    "plot this model against.")
strategies.define_flags()
flags.mark_flag_as_required("model_dir")
flags.register_validator("synthetic_multiplier",
                         lambda value: value is None or value > 0,
                         "--synthetic_multiplier must be positive")
flags.register_validator("global_batch_size",
                         lambda value: value is None or value > 0,
                         "--global_batch_size must be positive")
FLAGS = flags.FLAGS


def _configured():
  """The recipe, model factory and optimizer factory the gin files bind."""
  try:
    return cas.configured_classifier()
  except (ValueError, TypeError) as e:
    raise configuration.ConfigError(
        "the gin configuration must bind recipes.ClassifierRecipe and "
        f"models.create_classifier (a gin/classifiers config): {e}") from e


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  # Cross-flag checks, before TensorFlow does any work.
  training_data = trainer.choose_training_data(FLAGS.data, FLAGS.cas,
                                               FLAGS.real_data_dir,
                                               FLAGS.synthetic_dir,
                                               FLAGS.synthetic_multiplier,
                                               FLAGS.synthetic_split)
  if FLAGS.compare_with:
    trainer.check_compare_with(FLAGS.compare_with)
  gin_files = FLAGS.gin_file or ([CAS_GIN_FILE] if FLAGS.cas else [])
  if not gin_files:
    raise configuration.ConfigError(
        "give --gin_file, a gin/classifiers config (model and recipe)")
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(gin_files, FLAGS.gin_bindings)
  recipe, model_factory, optimizer_factory = _configured()
  strategies.set_mixed_precision(FLAGS.mixed_precision)
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  print(
      f"strategy {type(strategy).__name__} with "
      f"{strategy.num_replicas_in_sync} replica(s)", flush=True)
  print_fn = functools.partial(print, flush=True)
  if FLAGS.cas:
    cas.classification_accuracy_score(
        FLAGS.model_dir, strategy, training_data.real_data_dir,
        training_data.synthetic_dir, recipe, model_factory,
        synthetic_multiplier=training_data.synthetic_multiplier,
        synthetic_split=training_data.synthetic_split,
        global_batch_size=FLAGS.global_batch_size,
        compare_with=FLAGS.compare_with, optimizer_factory=optimizer_factory,
        print_fn=print_fn, data=training_data.data)
  else:
    training_set = input_pipeline.resolve_training_set(training_data)
    trainer.train_classifier(FLAGS.model_dir, strategy, training_set, recipe,
                             model_factory, optimizer_factory=optimizer_factory,
                             global_batch_size=FLAGS.global_batch_size,
                             compare_with=FLAGS.compare_with, print_fn=print_fn)


if __name__ == "__main__":
  command_line.run(main)
