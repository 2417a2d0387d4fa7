"""Sweeps the sampler settings of one cascade stage and scores every point.

  # the embedded Fashion-MNIST base model, scored with a Fashion-MNIST
  # classifier's features (a Keras file)
  python tools/sweep.py --gin_file=gin/sweeps/fashion_mnist_base_guidance.gin \
      --real_data_dir=data/fashion_mnist --output_dir=runs/sweep_base \
      --feature_network=classifier --classifier_model=runs/clf/model.keras

  # Azizi et al.'s 64x64 base sweep, FID Inception features, IS on the 2015
  # Inception's 1008 logits (pytorch-fid's weights file, a local path), TPU
  python tools/sweep.py --gin_file=gin/sweeps/azizi_base64_guidance_logvar.gin \
      --gin_bindings='BASE_MODEL_DIR = "gs://bucket/exports/base64"' \
      --real_data_dir=gs://bucket/imagenet --output_dir=gs://bucket/sweeps/base \
      --is_inception_weights=pt_inception-2015-12-05-6726825d.pth \
      --strategy=tpu --tpu=my-tpu --mixed_precision=bfloat16

  # with the Classification Accuracy Score of every point: add the CAS
  # classifier's gin (model and recipe)
  ... --cas --gin_file=gin/classifiers/resnet50_cas.gin

The grid, the swept stage and the number of images per point are bound in
the gin file (``sweep.run``, see ``cdm_tf/generation/sweep.py``); the
cascade and the generation settings come from the generation gin it
includes. Killed and restarted with the same flags, the sweep skips the
finished points and resumes the one it was generating. Writes
<output_dir>/sweep.csv (one row per point) and <output_dir>/plots/.
--dry_run prints the points and the network evaluations they cost;
--plots_only rewrites the CSV and plots of the finished points.

Exit status 2: bad flags or configuration; 3: the output directory holds a
sweep (or a point's set) made with other settings.
"""

import os

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging
import gin

from cdm_tf import configuration
from cdm_tf.classifiers import cas
from cdm_tf.data import class_names
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import sweep
from cdm_tf.generation import synthetic_dataset
from cdm_tf.metrics import networks
from cdm_tf.training import strategies

CAS_DIR = "cas_classifier"

flags.DEFINE_multi_string("gin_file", [], "Gin config files (a gin/sweeps "
                          "config; with --cas also a gin/classifiers one).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("output_dir", None, "Where the sweep goes.")
flags.DEFINE_string("real_data_dir", None, "Real data in ImageNet format: "
                    "the class table (classes.json, else ImageNet's) and the "
                    "reference splits of FID, KID and precision/recall.")
flags.DEFINE_bool("cas", False, "Also compute each point's Classification "
                  "Accuracy Score: train the classifier and recipe the gin "
                  "files bind (models.create_classifier, "
                  "recipes.ClassifierRecipe) on the point's images, test on "
                  "the real validation split.")
flags.DEFINE_bool("dry_run", False, "Print the points and their cost, exit.")
flags.DEFINE_bool("plots_only", False, "Rewrite the CSV and plots of the "
                  "finished points; generate nothing.")
networks.define_flags()
strategies.define_flags()
flags.mark_flags_as_required(["output_dir", "real_data_dir"])
FLAGS = flags.FLAGS




def _cas_fn(strategy, print_fn):
  """``synthetic_dir -> {"top1", "top5"}`` with the gin-bound CAS recipe,
  trained in the point's directory."""
  score, name = cas.configured_cas_scorer(strategy, FLAGS.real_data_dir,
                                          print_fn,
                                          trained_on="the point's images")

  def point_score(synthetic_dir):
    result = score(synthetic_dir, os.path.join(synthetic_dir, CAS_DIR))
    if result is None:
      raise SystemExit("stopped during CAS training; run again to resume")
    return result
  return point_score, name


def _bound(name):
  """The value bound to ``name``, a macro (``%NUM``) resolved."""
  value = gin.query_parameter(name)
  if isinstance(value, gin.config.ConfigurableReference) and (
      value.configurable.name == "macro"):
    return value.scoped_configurable_fn()
  return value


def _checked_sweep():
  """The stages, stage names, swept stage and points gin binds, checked
  before any model, data or feature network is loaded."""
  stages = cascade_lib.configured_stages()
  stage_names = sweep.configured_stage_names()
  try:
    stage = _bound("sweep.run.stage")
    grid = _bound("sweep.run.grid")
    _bound("sweep.run.num_images")
  except ValueError as e:
    raise ValueError("bind sweep.run.stage, sweep.run.grid and "
                     f"sweep.run.num_images ({e})") from e
  index = sweep.resolve_stage(stage, len(stages), stage_names)
  points = sweep.expand_grid(grid)
  for point in points:
    sweep.point_stages(stages, index, point.parameters)
  return stages, stage_names, index, points


def _dry_run(stages, stage_names, index, points):
  try:
    reuse = _bound("sweep.run.reuse_earlier")
  except ValueError:  # not bound: the default
    reuse = True
  print(sweep.describe(
      stages, index, points, _bound("sweep.run.num_images"),
      reuse and sweep.reuses_earlier_stages(stages, index, points),
      stage_names))


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  print_fn = lambda line: print(line, flush=True)
  stages, stage_names, index, points = _checked_sweep()
  if FLAGS.dry_run:
    _dry_run(stages, stage_names, index, points)
    return
  classes = class_names.load_classes(FLAGS.real_data_dir)
  settings = synthetic_dataset.GenerationSettings()
  references = sweep.ReferenceSpec(data_dir=FLAGS.real_data_dir)
  extractor, classifier = networks.from_flags(FLAGS)
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  cas_fn, cas_name = None, sweep.DEFAULT_CAS_NAME
  if FLAGS.cas:
    cas_fn, cas_name = _cas_fn(strategy, print_fn)

  def make_cascade(point_stages):
    return cascade_lib.Cascade(
        stages=point_stages, strategy=strategy,
        dtype_policy=strategies.dtype_policy(FLAGS.mixed_precision))

  sweep.run(FLAGS.output_dir, stages, make_cascade, classes, extractor,
            references, settings, classifier=classifier, cas_fn=cas_fn,
            cas_name=cas_name, stage_names=stage_names,
            plots_only=FLAGS.plots_only, print_fn=print_fn)


if __name__ == "__main__":
  command_line.run(main)
