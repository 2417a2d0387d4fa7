"""Sample-quality metrics of one generated set against real data.

  # a set written by tools/generate.py, scored with the FID Inception, and
  # the Inception Score on the 2015 Inception's 1008 logits (pytorch-fid's
  # weights file; without it no IS is reported)
  python tools/evaluate.py --generated_dir=runs/synthetic \
      --real_data_dir=gs://bucket/imagenet --output_dir=runs/synthetic_eval \
      --is_inception_weights=pt_inception-2015-12-05-6726825d.pth

  # the embedded Fashion-MNIST: a Fashion-MNIST classifier's features
  # (the model.keras of a tools/train_classifier.py run)
  python tools/evaluate.py --generated_dir=runs/synthetic \
      --real_data_dir=data/fashion_mnist --output_dir=runs/synthetic_eval \
      --feature_network=classifier --classifier_model=runs/clf/model.keras

  # with the Classification Accuracy Score: add the CAS classifier's gin
  ... --cas --gin_file=gin/classifiers/resnet50_cas.gin

Reports FID@N against each --reference_splits split (statistics at the
generated images' resolution, computed once and cached next to the real
data), KID and precision/recall against the real features kept
(--keep_features), and the Inception Score, each labelled with its feature
network; with --cas also CAS top-1 / top-5 (a classifier trained on the set
in <output_dir>/cas_classifier, resumable). The default N's are CDM's 10K
and 50K where the set has them, and the whole set when it has fewer than
50K images. On the FID Inception the IS needs --is_inception_weights (or
--is_classifier_model); without either, metrics.json and the table carry a
note that no IS is reported and why. Writes <output_dir>/metrics.json and
prints the table.

Exit status 2: bad flags, configuration or missing files; 1: stopped during
CAS training (run again to resume).
"""

import os

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.classifiers import cas
from cdm_tf.metrics import networks
from cdm_tf.metrics import report
from cdm_tf.metrics import sample_quality
from cdm_tf.metrics import sample_scores
from cdm_tf.synthetic_set import reader
from cdm_tf.training import strategies

flags.DEFINE_string(
    "generated_dir", None, "The generated set: shards and "
    "manifest, as tools/generate.py writes them.")
flags.DEFINE_string("split", "train", "Split name of the generated shards.")
flags.DEFINE_string(
    "real_data_dir", None, "Real data in ImageNet format: "
    "the reference splits (and, with --cas, the validation "
    "split the CAS classifier is tested on).")
flags.DEFINE_list(
    "reference_splits", ["train", "validation"], "Real splits "
    "FID (and KID, precision/recall) are computed against.")
flags.DEFINE_integer(
    "reference_examples", None, "Use the first N images of "
    "each reference split; default: all.", lower_bound=2)
flags.DEFINE_list(
    "sample_counts", None, "The N's of FID@N (the first N "
    "generated images); default: 10000 and 50000 where the set "
    "has them, and the set's size when below 50000.")
flags.DEFINE_integer(
    "keep_features", 10_000, "Real features kept per "
    "reference split for KID and precision/recall (0: "
    "neither).", lower_bound=0)
flags.DEFINE_integer("batch_size", None, "Images per feature-network call.",
                     lower_bound=1)
flags.DEFINE_string(
    "stats_cache_dir", None, "Where the reference statistics "
    "are cached when --real_data_dir is not writable.")
flags.DEFINE_string(
    "real_baseline_split", None, "Also score the first N "
    "real images of this split (N = the largest FID@N) the "
    "same way, against the other reference splits: what "
    "real images of that count score on this feature "
    "network, for scale. Written to "
    f"{sample_scores.BASELINE_FILE}.")
flags.DEFINE_string(
    "output_dir", None, f"Where {sample_scores.METRICS_FILE} "
    "(and, with --cas, the CAS classifier) go.")
flags.DEFINE_bool(
    "cas", False, "Also compute the Classification Accuracy "
    "Score: train the classifier and recipe the gin files bind "
    "(models.create_classifier, recipes.ClassifierRecipe) on "
    "the generated images, test on the real validation split.")
flags.DEFINE_multi_string(
    "gin_file", [], "Gin config files (with --cas a "
    "gin/classifiers one).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
networks.define_flags()
strategies.define_flags()
flags.mark_flags_as_required(["generated_dir", "real_data_dir", "output_dir"])
FLAGS = flags.FLAGS


def _with_cas(metrics, cas_score, cas_name, generated_dir, output_dir,
              num_examples, mixed_precision, print_fn):
  """Adds the CAS of the set (its classifier trained in
  <output_dir>/cas_classifier) to ``metrics``."""
  print_fn(metrics.format_table())
  # The CAS classifier trains under the chosen precision; the metrics'
  # networks ran as loaded.
  strategies.set_mixed_precision(mixed_precision)
  scores = cas_score(generated_dir, os.path.join(output_dir,
                                                 cas.CLASSIFIER_DIR))
  if scores is None:
    raise SystemExit(cas.STOPPED_MESSAGE)
  metrics.extend(sample_scores.cas_values(scores, cas_name, num_examples))


def _write(metrics, path, print_fn):
  # Tables are printed before their (atomic) writes: a write that fails
  # still leaves the numbers on the terminal.
  print_fn(metrics.format_table())
  metrics.write_json(path)
  print_fn(f"wrote {path}")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)

  def print_fn(line):
    print(line, flush=True)

  if not FLAGS.reference_splits:
    raise ValueError("--reference_splits is empty")
  manifest = sample_scores.read_complete_manifest(FLAGS.generated_dir,
                                                  FLAGS.split)
  sample_counts = sample_scores.choose_sample_counts(FLAGS.sample_counts,
                                                     manifest.num_examples)
  # CAS tests its classifier on the real validation split.
  sample_scores.check_real_data(FLAGS.real_data_dir, manifest.num_classes,
                                FLAGS.reference_splits,
                                ["validation"] if FLAGS.cas else [],
                                FLAGS.real_baseline_split)
  # Before any work (networks loaded, features extracted): results found
  # unwritable at the end would be lost.
  files.check_writable_directory(FLAGS.output_dir)
  cas_score = None
  if FLAGS.cas:
    strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
    cas_score, cas_name = cas.configured_cas_scorer(strategy,
                                                    FLAGS.real_data_dir,
                                                    print_fn,
                                                    synthetic_split=FLAGS.split)
  extractor, classifier = networks.from_flags(FLAGS)
  generated = reader.read(manifest.shard_paths(FLAGS.generated_dir))
  resolution = sample_scores.image_resolution(generated, FLAGS.generated_dir)

  counts = ", ".join(report.count_label(n) for n in sample_counts)
  print_fn(f"{manifest.num_examples} generated images at {resolution}x"
           f"{resolution}; FID@{counts} against "
           f"{', '.join(FLAGS.reference_splits)} with {extractor.name}")
  if classifier is not None and not extractor.has_logits:
    print_fn(f"IS with {classifier.name}")
  references = sample_scores.ReferenceSpec(
      FLAGS.real_data_dir,
      tuple(FLAGS.reference_splits),
      FLAGS.reference_examples,
      FLAGS.keep_features,
      FLAGS.stats_cache_dir,
  ).statistics(extractor, resolution, manifest.num_classes, FLAGS.batch_size)
  metrics = sample_quality.evaluate(generated, extractor, references,
                                    sample_counts=sample_counts,
                                    classifier=classifier,
                                    batch_size=FLAGS.batch_size)
  if cas_score is not None:
    _with_cas(metrics, cas_score, cas_name, FLAGS.generated_dir,
              FLAGS.output_dir, manifest.num_examples, FLAGS.mixed_precision,
              print_fn)
  if FLAGS.real_baseline_split:
    count = max(sample_counts)
    baseline = sample_scores.real_baseline(FLAGS.real_data_dir,
                                           FLAGS.real_baseline_split, extractor,
                                           classifier, references, count,
                                           resolution, manifest.num_classes,
                                           FLAGS.batch_size)
    print_fn(f"for scale, {count} real {FLAGS.real_baseline_split} images:")
    _write(baseline, os.path.join(FLAGS.output_dir,
                                  sample_scores.BASELINE_FILE), print_fn)
  _write(metrics, os.path.join(FLAGS.output_dir, sample_scores.METRICS_FILE),
         print_fn)


if __name__ == "__main__":
  command_line.run(main)
