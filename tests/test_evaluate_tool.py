"""tools/evaluate.py end to end on a tiny Fashion-MNIST subset: the real
validation images presented as a generated set have FID ~0 against the
validation statistics, every label names the feature network, metrics.json
holds the printed values, and bad flags exit with status 2. Also the
library pieces it stands on: its default sample counts and the feature
network choice of ``metrics.networks``."""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cdm_tf.data import class_names
from cdm_tf.metrics import networks
from cdm_tf.metrics import sample_quality
from cdm_tf.metrics import sample_scores
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import synthetic_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "evaluate.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
NETWORK = "tiny test classifier"
TIMEOUT = 300


def _write_real_split_as_generated(real_dir, out_dir, split):
  """The real split's images, unchanged (PNG), as a generated "train" set."""
  classes = class_names.load_classes(real_dir)
  writers = [
      shard_writer.ShardWriter(
          os.path.join(out_dir, shard_writer.shard_file_name("train", i, 2)),
          num_classes=len(classes)) for i in range(2)
  ]
  by_class = synthetic_records.real_images_by_class(real_dir, split)
  position = 0
  for label, images in sorted(by_class.items()):
    for index, image in enumerate(images):
      writers[position % 2].write(
          shard_writer.encode_example(
              image, label, classes, image_format="png",
              provenance=shard_writer.Provenance("test-real-images",
                                                 f"{label}-{index}", index,
                                                 (label, index))), label)
      position += 1
  for writer in writers:
    writer.close()
  split_manifest.write(out_dir, "train", [w.info for w in writers],
                       len(classes), "png")
  return position


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("evaluate_tool")
  real_dir = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(3, 2))
  generated_dir = str(root / "generated")
  count = _write_real_split_as_generated(real_dir, generated_dir, "validation")
  keras.utils.set_random_seed(0)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
  x = keras.layers.GlobalAveragePooling2D(name="features")(x)
  model = keras.Model(inputs, keras.layers.Dense(10)(x))
  classifier = str(root / "classifier.keras")
  model.save(classifier)
  return dict(root=root, real_dir=real_dir, generated_dir=generated_dir,
              count=count, classifier=classifier)


def _command(setup, output_dir, *flags):
  return [
      sys.executable, TOOL, f"--generated_dir={setup['generated_dir']}",
      f"--real_data_dir={setup['real_dir']}", f"--output_dir={output_dir}",
      "--feature_network=classifier",
      f"--classifier_model={setup['classifier']}",
      f"--feature_network_name={NETWORK}", *flags
  ]


def _run(command):
  return subprocess.run(command, capture_output=True, text=True, env=ENV,
                        timeout=TIMEOUT, check=False)


def test_real_validation_images_have_zero_fid_against_validation(setup):
  out = setup["root"] / "metrics"
  result = _run(
      _command(setup, out, "--keep_features=20",
               "--real_baseline_split=validation"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert setup["count"] == 20
  # 20 images: the default FID@N is the whole set.
  metrics = json.loads(
      (out / sample_scores.METRICS_FILE).read_text())["metrics"]
  by_label = {m["label"]: m for m in metrics}
  assert list(by_label) == [
      f"FID@20 vs train ({NETWORK})", f"FID@20 vs validation ({NETWORK})",
      f"KID@20 vs train ({NETWORK})", f"precision@20 vs train ({NETWORK})",
      f"recall@20 vs train ({NETWORK})", f"KID@20 vs validation ({NETWORK})",
      f"precision@20 vs validation ({NETWORK})",
      f"recall@20 vs validation ({NETWORK})", f"IS@20 ({NETWORK})"
  ]
  printed = {
      line[:line.rindex(")") + 1]: line[line.rindex(")") + 1:].split()
      for line in result.stdout.splitlines()
      if line.startswith(("FID@", "KID@", "precision@", "recall@", "IS@"))
  }
  for label, metric in by_label.items():
    assert printed[label][0] == f"{metric['value']:.4f}", label
  # The validation statistics the tool cached next to the data.
  caches = [
      np.load(p)
      for p in glob.glob(os.path.join(setup["real_dir"], "fid_stats-*.npz"))
  ]
  validation = [c for c in caches if str(c["split"]) == "validation"]
  assert len(validation) == 1 and int(validation[0]["count"]) == 20
  scale = float(np.trace(validation[0]["covariance"]))
  assert scale > 0
  assert abs(by_label[f"FID@20 vs validation ({NETWORK})"]["value"]) < (1e-3 *
                                                                        scale)
  assert by_label[f"FID@20 vs train ({NETWORK})"]["value"] > 1e-3 * scale
  assert by_label[f"precision@20 vs validation ({NETWORK})"]["value"] == 1.0
  # The real baseline: the first 20 validation images, read from the real
  # data and prepared like the reference images, against train only. Here
  # they are the "generated" images, so their values must agree.
  baseline = {
      m["label"]: m
      for m in json.loads((out /
                           sample_scores.BASELINE_FILE).read_text())["metrics"]
  }
  assert not any("vs validation" in label for label in baseline)
  for label in (f"FID@20 vs train ({NETWORK})", f"IS@20 ({NETWORK})"):
    np.testing.assert_allclose(baseline[label]["value"],
                               by_label[label]["value"], rtol=1e-3)


@pytest.mark.parametrize(
    "flags,message", [
        (["--sample_counts=10,30"], "must be in 2..20"),
        (["--split=validation"], "no manifest of split 'validation'"),
        (["--reference_splits=train,test"], "no 'test' shards"),
        (["--reference_splits=validation", "--real_baseline_split=validation"
         ], "needs another reference split"),
    ], ids=[
        "too_many_samples", "missing_split", "missing_reference",
        "baseline_without_reference"
    ])
def test_bad_flags_exit_2(setup, flags, message):
  out = setup["root"] / "bad"
  result = _run(_command(setup, out, *flags))
  assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
  assert "error:" in result.stderr and message in result.stderr, (
      result.stderr[-3000:])
  assert not out.exists()


@pytest.mark.parametrize("name", ["a_file", "a_file/metrics"])
def test_unwritable_output_dir_exits_2_before_the_work(setup, name):
  blocker = setup["root"] / "a_file"
  blocker.write_text("not a directory\n")
  result = _run(_command(setup, setup["root"] / name))
  assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
  # TensorFlow's native start-up lines go to stderr too: one error line,
  # no traceback.
  errors = [
      line for line in result.stderr.splitlines() if line.startswith("error:")
  ]
  assert len(errors) == 1 and "Traceback" not in result.stderr, (
      result.stderr[-3000:])
  assert "is not a writable directory" in errors[0], errors[0]
  assert str(setup["root"] / name) in errors[0]
  # Refused before any features were extracted.
  assert "generated images at" not in result.stdout
  assert blocker.read_text() == "not a directory\n"


@pytest.mark.parametrize("size,counts", [(60_000, (10_000, 50_000)),
                                         (50_000, (10_000, 50_000)),
                                         (30_000, (10_000, 30_000)),
                                         (10_000, (10_000,)), (5_000, (5_000,)),
                                         (20, (20,))])
def test_default_sample_counts(size, counts):
  assert sample_quality.default_sample_counts(size) == counts


def test_feature_network_choice(setup):
  with pytest.raises(ValueError, match="needs --feature_network=classifier"):
    networks.feature_extractor("inception", classifier_model="x.keras")
  with pytest.raises(ValueError, match="needs --classifier_model"):
    networks.feature_extractor("classifier")
  extractor = networks.feature_extractor("classifier", setup["classifier"],
                                         feature_layer="features")
  assert extractor.name == f"classifier features: {setup['classifier']}"
  assert extractor.has_logits
  assert networks.inception_score_classifier(extractor, None) is None
  scorer = networks.inception_score_classifier(extractor, setup["classifier"])
  assert scorer.name == f"classifier logits: {setup['classifier']}"
