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
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.data import synthetic_writer
from cdm_tf.generation import sweep
from cdm_tf.metrics import features
from cdm_tf.metrics import fid
from cdm_tf.metrics import networks
from cdm_tf.metrics import report
from cdm_tf.metrics import sample_quality
from cdm_tf.training import strategies

METRICS_FILE = "metrics.json"
BASELINE_FILE = "metrics_real_baseline.json"
CAS_DIR = "cas_classifier"

flags.DEFINE_string("generated_dir", None, "The generated set: shards and "
                    "manifest, as tools/generate.py writes them.")
flags.DEFINE_string("split", "train", "Split name of the generated shards.")
flags.DEFINE_string("real_data_dir", None, "Real data in ImageNet format: "
                    "the reference splits (and, with --cas, the validation "
                    "split the CAS classifier is tested on).")
flags.DEFINE_list("reference_splits", ["train", "validation"], "Real splits "
                  "FID (and KID, precision/recall) are computed against.")
flags.DEFINE_integer("reference_examples", None, "Use the first N images of "
                     "each reference split; default: all.", lower_bound=2)
flags.DEFINE_list("sample_counts", None, "The N's of FID@N (the first N "
                  "generated images); default: 10000 and 50000 where the set "
                  "has them, and the set's size when below 50000.")
flags.DEFINE_integer("keep_features", 10_000, "Real features kept per "
                     "reference split for KID and precision/recall (0: "
                     "neither).", lower_bound=0)
flags.DEFINE_integer("batch_size", None, "Images per feature-network call.",
                     lower_bound=1)
flags.DEFINE_string("stats_cache_dir", None, "Where the reference statistics "
                    "are cached when --real_data_dir is not writable.")
flags.DEFINE_string("real_baseline_split", None, "Also score the first N "
                    "real images of this split (N = the largest FID@N) the "
                    "same way, against the other reference splits: what "
                    "real images of that count score on this feature "
                    "network, for scale. Written to "
                    f"{BASELINE_FILE}.")
flags.DEFINE_string("output_dir", None, "Where metrics.json (and, with "
                    "--cas, the CAS classifier) go.")
flags.DEFINE_bool("cas", False, "Also compute the Classification Accuracy "
                  "Score: train the classifier and recipe the gin files bind "
                  "(models.create_classifier, recipes.ClassifierRecipe) on "
                  "the generated images, test on the real validation split.")
flags.DEFINE_multi_string("gin_file", [], "Gin config files (with --cas a "
                          "gin/classifiers one).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
networks.define_flags()
strategies.define_flags()
flags.mark_flags_as_required(["generated_dir", "real_data_dir", "output_dir"])
FLAGS = flags.FLAGS




def _read_manifest():
  try:
    manifest = synthetic_writer.read_manifest(FLAGS.generated_dir, FLAGS.split)
  except FileNotFoundError as e:
    raise ValueError(
        f"no manifest of split {FLAGS.split!r} in {FLAGS.generated_dir} "
        f"({synthetic_writer.manifest_path(FLAGS.generated_dir, FLAGS.split)}"
        "; a directory written by tools/generate.py)") from e
  if not manifest.complete:
    raise ValueError(
        f"{FLAGS.generated_dir} holds {len(manifest.shards)} of the "
        f"{manifest.num_shards} shards of split {FLAGS.split!r}: finish "
        "generating it first")
  return manifest


def _sample_counts(num_images):
  if not FLAGS.sample_counts:
    return sample_quality.default_sample_counts(num_images)
  try:
    counts = tuple(sorted({int(n) for n in FLAGS.sample_counts}))
  except ValueError as e:
    raise ValueError(f"--sample_counts must be integers: {e}") from e
  if counts[0] < 2 or counts[-1] > num_images:
    raise ValueError(f"--sample_counts {list(counts)} must be in "
                     f"2..{num_images} (the set's size)")
  return counts


def _resolution(generated):
  """The generated images' side: the real images are cropped and resized
  to it before their statistics are computed."""
  for element in generated.take(1):
    height, width = element[schema.IMAGE].shape[:2]
    if height != width:
      raise ValueError(f"the generated images are {height}x{width}, not "
                       "square")
    return int(height)
  raise ValueError(f"{FLAGS.generated_dir} holds no images")


def _check_real_data(num_classes):
  classes = class_names.load_classes(FLAGS.real_data_dir)
  if len(classes) != num_classes:
    raise ValueError(f"the generated set has {num_classes} classes, "
                     f"{FLAGS.real_data_dir} {len(classes)}")
  # CAS tests its classifier on the real validation split.
  for split in FLAGS.reference_splits + (["validation"] if FLAGS.cas else []):
    imagenet_reader.list_files(FLAGS.real_data_dir, split)
  baseline = FLAGS.real_baseline_split
  if baseline:
    imagenet_reader.list_files(FLAGS.real_data_dir, baseline)
    if not set(FLAGS.reference_splits) - {baseline}:
      raise ValueError(f"--real_baseline_split={baseline} needs another "
                       "reference split to be compared with")


def _real_baseline(extractor, classifier, references, count, resolution,
                   num_classes):
  """The metrics of the first ``count`` real images of the baseline split,
  prepared like the reference images, against the other splits."""
  split = FLAGS.real_baseline_split
  real = imagenet_reader.read_dataset(
      imagenet_reader.list_files(FLAGS.real_data_dir, split),
      num_classes=num_classes, shuffle=False)
  extracted = features.extract(
      real, extractor, num_examples=count, batch_size=FLAGS.batch_size,
      preprocess=features.center_crop_resize(resolution))
  others = {name: r for name, r in references.items() if name != split}
  # The IS from the extractor's logits, or from logits that follow from its
  # features (the 2015 Inception's); a separate classifier's would take a
  # second pass over the real images, which the baseline does not make.
  separate = classifier is not None and (
      not sample_quality.scores_from_features(classifier, extractor))
  baseline = sample_quality.evaluate(
      extracted, extractor, others, sample_counts=(count,),
      classifier=None if separate else classifier)
  if separate:
    baseline.notes = [f"IS not reported for the real images: {classifier.name}"
                      " would need a second pass over them."]
  return baseline


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  print_fn = lambda line: print(line, flush=True)
  if not FLAGS.reference_splits:
    raise ValueError("--reference_splits is empty")
  manifest = _read_manifest()
  sample_counts = _sample_counts(manifest.num_examples)
  _check_real_data(manifest.num_classes)
  # Before any work (networks loaded, features extracted): results found
  # unwritable at the end would be lost.
  files.check_writable_directory(FLAGS.output_dir)
  cas_score = None
  if FLAGS.cas:
    strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
    cas_score, cas_name = cas.configured_cas_scorer(
        strategy, FLAGS.real_data_dir, print_fn,
        synthetic_split=FLAGS.split)
  extractor, classifier = networks.from_flags(FLAGS)
  generated = mixing.read_synthetic(
      manifest.shard_paths(FLAGS.generated_dir))
  resolution = _resolution(generated)

  counts = ", ".join(report.count_label(n) for n in sample_counts)
  print_fn(f"{manifest.num_examples} generated images at {resolution}x"
           f"{resolution}; FID@{counts} against "
           f"{', '.join(FLAGS.reference_splits)} with {extractor.name}")
  if classifier is not None and not extractor.has_logits:
    print_fn(f"IS with {classifier.name}")
  references = {
      split: fid.reference_statistics(
          FLAGS.real_data_dir, extractor, split=split,
          num_examples=FLAGS.reference_examples, resolution=resolution,
          num_classes=manifest.num_classes, batch_size=FLAGS.batch_size,
          keep_features=FLAGS.keep_features,
          cache_dir=FLAGS.stats_cache_dir)
      for split in FLAGS.reference_splits}
  metrics = sample_quality.evaluate(
      generated, extractor, references, sample_counts=sample_counts,
      classifier=classifier, batch_size=FLAGS.batch_size)
  if cas_score is not None:
    print_fn(metrics.format_table())
    # The CAS classifier trains under the chosen precision; the metrics'
    # networks above ran as loaded.
    strategies.set_mixed_precision(FLAGS.mixed_precision)
    scores = cas_score(FLAGS.generated_dir,
                       os.path.join(FLAGS.output_dir, CAS_DIR))
    if scores is None:
      raise SystemExit("stopped during CAS training; run again to resume")
    metrics.extend(sweep.cas_values(scores, cas_name, manifest.num_examples))
  if FLAGS.real_baseline_split:
    baseline = _real_baseline(extractor, classifier, references,
                              max(sample_counts), resolution,
                              manifest.num_classes)
    # Tables are printed before their (atomic) writes: a write that fails
    # still leaves the numbers on the terminal.
    print_fn(f"for scale, {max(sample_counts)} real "
             f"{FLAGS.real_baseline_split} images:\n" + baseline.format_table())
    path = os.path.join(FLAGS.output_dir, BASELINE_FILE)
    baseline.write_json(path)
    print_fn(f"wrote {path}")
  print_fn(metrics.format_table())
  path = os.path.join(FLAGS.output_dir, METRICS_FILE)
  metrics.write_json(path)
  print_fn(f"wrote {path}")


if __name__ == "__main__":
  command_line.run(main)
