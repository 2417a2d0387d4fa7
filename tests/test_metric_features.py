"""Feature extractors other than Inception, extraction from datasets, and the
labelled metrics of a generated set (on the embedded Fashion-MNIST)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import fid
from cdm_tf.metrics import sample_quality
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import real_photo_records as records
from tests import synthetic_records


def _small_network(seed=0):
  """A fixed functional classifier on 32x32: conv, 8-d features, 10 logits."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
  features = keras.layers.GlobalAveragePooling2D(name="features")(x)
  hidden = keras.layers.Dense(6, activation="relu", name="hidden")(features)
  logits = keras.layers.Dense(10, name="logits")(hidden)
  return keras.Model(inputs, logits, name="small")


def _images(count, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_named_layer_features_and_logits_of_a_functional_model():
  model = _small_network()
  extractor = features_lib.ClassifierFeatures(model, "small: features",
                                              feature_layer="features")
  images = _images(4)
  features, logits = extractor(images)
  inputs = images.astype(np.float32) / 255.0
  expected = keras.Model(model.input,
                         model.get_layer("features").output)(inputs)
  np.testing.assert_allclose(features, expected, atol=1e-6)
  np.testing.assert_allclose(logits, model(inputs), atol=1e-5)
  assert features.shape == (4, 8) and logits.shape == (4, 10)
  assert extractor.has_logits and extractor.name == "small: features"


def test_default_features_are_what_the_dense_head_reads():
  model = _small_network()
  extractor = features_lib.ClassifierFeatures(model, "small: penultimate")
  features, _ = extractor(_images(3))
  hidden = keras.Model(model.input, model.get_layer("hidden").output)
  np.testing.assert_allclose(features,
                             hidden(_images(3).astype(np.float32) / 255.0),
                             atol=1e-6)


def test_images_of_another_size_are_resized_to_the_model_input():
  extractor = features_lib.ClassifierFeatures(_small_network(), "small",
                                              feature_layer="features")
  prepared = extractor.prepare(tf.constant(_images(1, size=28)[0]))
  assert prepared.shape == (32, 32, 3)
  assert float(tf.reduce_max(prepared)) <= 1.0
  features, _ = extractor(_images(2, size=28))
  assert features.shape == (2, 8)


def test_image_classifier_features_reproduce_its_logits():
  model = models.create_classifier("resnet50", num_classes=10, image_size=32,
                                   tiny=True)
  extractor = features_lib.ClassifierFeatures(
      model, "Fashion-MNIST classifier features: tiny resnet50")
  images = _images(3)
  features, logits = extractor(images)  # the first batch checks the split
  np.testing.assert_allclose(
      logits, model(images.astype(np.float32) / 255.0, training=False),
      atol=1e-5)
  assert features.shape == (3, model.head.kernel.shape[0])


def test_a_model_without_findable_features_is_refused():

  class Opaque(keras.Model):

    def call(self, x):
      return keras.ops.mean(x, axis=(1, 2))

  with pytest.raises(ValueError, match="cannot find its features"):
    features_lib.ClassifierFeatures(Opaque(), "opaque")
  with pytest.raises(ValueError, match="needs a name"):
    features_lib.ClassifierFeatures(_small_network(), "")


def test_fingerprint_follows_the_weights():
  model = _small_network(seed=0)
  before = features_lib.ClassifierFeatures(model, "small").fingerprint
  assert features_lib.ClassifierFeatures(model, "small").fingerprint == before
  model.get_layer("logits").bias.assign(np.ones(10))
  assert features_lib.ClassifierFeatures(model, "small").fingerprint != before


def test_extract_reads_the_first_n_real_images_in_order(tmp_path):
  photos = records.load_photos(max_side=40)
  paths, _ = records.write_photo_shards(str(tmp_path), schema.FORMAT_TPU,
                                        photos, num_shards=2)
  dataset = imagenet_reader.read_dataset(paths, shuffle=False)
  extractor = features_lib.ClassifierFeatures(_small_network(), "small",
                                              feature_layer="features")
  extracted = features_lib.extract(dataset, extractor, num_examples=7,
                                   batch_size=3)
  assert extracted.count == 7 and extracted.network == "small"
  # Photos differ in size; each is resized to 32x32 on its own.
  first = next(iter(dataset))[schema.IMAGE]
  expected, _ = extractor(first[tf.newaxis])
  np.testing.assert_allclose(extracted.features[0], expected[0], atol=1e-6)
  assert extracted.first(2).features.shape == (2, 8)
  with pytest.raises(ValueError, match="fewer than the 30"):
    features_lib.extract(dataset, extractor, num_examples=30)
  fewer = features_lib.extract(dataset, extractor, num_examples=30,
                               allow_fewer=True)
  assert fewer.count == len(photos)


@pytest.fixture(scope="module")
def fashion_mnist_sets(tmp_path_factory):
  """Real Fashion-MNIST records and a synthetic set in the generator format.
  """
  directory = tmp_path_factory.mktemp("fashion_mnist")
  real_dir = fashion_mnist_subset.prepared(str(directory), per_class=(4, 3))
  synthetic_dir = str(directory / "synthetic")
  synthetic_records.write(real_dir, synthetic_dir, per_class=3)
  manifest = split_manifest.read(synthetic_dir, "train")
  return real_dir, manifest.shard_paths(synthetic_dir)


def test_metrics_of_a_generated_set_carry_the_feature_network(
    fashion_mnist_sets):
  real_dir, synthetic_paths = fashion_mnist_sets
  network = "Fashion-MNIST classifier features: small (test)"
  extractor = features_lib.ClassifierFeatures(_small_network(), network,
                                              feature_layer="features")
  references = {
      "validation": fid.reference_statistics(real_dir, extractor,
                                             split="validation", num_classes=10,
                                             keep_features=30)
  }
  generated = reader.read(synthetic_paths)
  result = sample_quality.evaluate(generated, extractor, references,
                                   sample_counts=(20, 30), kid_subsets=5,
                                   kid_subset_size=10)
  labels = [v.label for v in result.values]
  assert labels == [
      f"FID@20 vs validation ({network})",
      f"FID@30 vs validation ({network})",
      f"KID@30 vs validation ({network})",
      f"precision@30 vs validation ({network})",
      f"recall@30 vs validation ({network})",
      f"IS@30 ({network})",
  ]
  assert all(np.isfinite(v.value) for v in result.values)
  assert result.get(f"FID@30 vs validation ({network})").value > 0
  inception_score = result.get(f"IS@30 ({network})").value
  assert 1.0 <= inception_score <= 10.0
  assert 0.0 <= result.get(f"recall@30 vs validation ({network})").value <= 1


def test_inception_score_from_a_separate_classifier(fashion_mnist_sets):
  real_dir, synthetic_paths = fashion_mnist_sets

  class NoLogits(features_lib.FeatureExtractor):
    name = "mean colour"
    fingerprint = "mean-colour"

    def prepare(self, image):
      return tf.cast(image, tf.float32)

    def compute(self, prepared):
      return tf.reduce_mean(prepared, axis=[1, 2]), None

  extractor = NoLogits()
  references = {
      "train": fid.reference_statistics(real_dir, extractor, split="train",
                                        num_classes=10)
  }
  classifier = features_lib.ClassifierFeatures(_small_network(), "scorer")
  result = sample_quality.evaluate(reader.read(synthetic_paths), extractor,
                                   references, sample_counts=(30,),
                                   classifier=classifier)
  assert [v.label for v in result.values
         ] == ["FID@30 vs train (mean colour)", "IS@30 (scorer)"]
