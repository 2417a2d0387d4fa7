"""Sweeps the sampler settings of one cascade stage and scores every point.

  # the embedded Fashion-MNIST base model, scored with a Fashion-MNIST
  # classifier's features (a Keras file)
  python tools/sweep.py --gin_file=gin/sweeps/fashion_mnist_base_guidance.gin \
      --real_data_dir=data/fashion_mnist --output_dir=runs/sweep_base \
      --feature_network=classifier --classifier_model=runs/clf/model.keras

  # Azizi et al.'s 64x64 base sweep, FID Inception features, IS on the 2015
  # Inception's 1008 logits (pytorch-fid's weights file, a local path), TPU
  python tools/sweep.py \
      --gin_file=gin/sweeps/azizi_base64_guidance_logvar.gin \
      --gin_bindings='BASE_MODEL_DIR = "gs://bucket/exports/base64"' \
      --real_data_dir=gs://bucket/imagenet \
      --output_dir=gs://bucket/sweeps/base \
      --is_inception_weights=pt_inception-2015-12-05-6726825d.pth \
      --strategy=tpu --tpu=my-tpu --mixed_precision=bfloat16

  # with the Classification Accuracy Score of every point: add the CAS
  # classifier's gin (model and recipe)
  ... --cas --gin_file=gin/classifiers/resnet50_cas.gin

The grid, the swept stage and the number of images per point are bound in
the gin file (``sweep.SweepSettings``, see ``cdm_tf/sweeps/sweep.py``); the
cascade and the generation settings come from the generation gin it
includes. Killed and restarted with the same flags, the sweep skips the
finished points and resumes the one it was generating. Writes
<output_dir>/sweep.csv (one row per point) and <output_dir>/plots/.
--dry_run prints the points and the network evaluations they cost;
--plots_only rewrites the CSV and plots of the finished points.

Exit status 2: bad flags or configuration; 3: the output directory holds a
sweep (or a point's set) made with other settings.
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf.data import class_names
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.metrics import networks
from cdm_tf.metrics import sample_scores
from cdm_tf.sweeps import grid
from cdm_tf.sweeps import scoring
from cdm_tf.sweeps import sweep
from cdm_tf.training import strategies

flags.DEFINE_multi_string(
    "gin_file", [], "Gin config files (a gin/sweeps "
    "config; with --cas also a gin/classifiers one).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("output_dir", None, "Where the sweep goes.")
flags.DEFINE_string(
    "real_data_dir", None, "Real data in ImageNet format: "
    "the class table (classes.json, else ImageNet's) and the "
    "reference splits of FID, KID and precision/recall.")
flags.DEFINE_bool(
    "cas", False, "Also compute each point's Classification "
    "Accuracy Score: train the classifier and recipe the gin "
    "files bind (models.create_classifier, "
    "recipes.ClassifierRecipe) on the point's images, test on "
    "the real validation split.")
flags.DEFINE_bool("dry_run", False, "Print the points and their cost, exit.")
flags.DEFINE_bool(
    "plots_only", False, "Rewrite the CSV and plots of the "
    "finished points; generate nothing.")
networks.define_flags()
strategies.define_flags()
flags.mark_flags_as_required(["output_dir", "real_data_dir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)

  def print_fn(line):
    print(line, flush=True)

  # Checked before any model, data or feature network is loaded.
  stages = cascade_lib.configured_stages()
  stage_names = grid.configured_stage_names()
  settings = sweep.configured_settings()
  index, points = settings.checked_points(stages, stage_names)
  if FLAGS.dry_run:
    print(
        grid.describe(stages, index, points, settings.num_images,
                      settings.reuses_earlier(stages, index, points),
                      stage_names))
    return
  classes = class_names.load_classes(FLAGS.real_data_dir)
  references = sample_scores.ReferenceSpec(data_dir=FLAGS.real_data_dir)
  extractor, classifier = networks.from_flags(FLAGS)
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  cas_fn, cas_name = None, scoring.DEFAULT_CAS_NAME
  if FLAGS.cas:
    cas_fn, cas_name = scoring.configured_cas_fn(strategy, FLAGS.real_data_dir,
                                                 print_fn)
  scorer = scoring.PointScorer(extractor, references, classifier, cas_fn,
                               cas_name)
  dtype_policy = strategies.dtype_policy(FLAGS.mixed_precision)

  def make_cascade(point_stages):
    return cascade_lib.Cascade(stages=point_stages, strategy=strategy,
                               dtype_policy=dtype_policy)

  sweep.Sweep(FLAGS.output_dir, settings, stages, make_cascade, classes, scorer,
              synthetic_dataset.GenerationSettings(), stage_names,
              print_fn).run(plots_only=FLAGS.plots_only)


if __name__ == "__main__":
  command_line.run(main)
