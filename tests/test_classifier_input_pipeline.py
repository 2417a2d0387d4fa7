"""Classifier inputs: real + synthetic proportions and class balance, data
checks, the CAS training crop, per-replica batches and padded validation
batches."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import recipes
from cdm_tf.data import classifier_preprocessing
from cdm_tf.data import mixing
from cdm_tf.data import schema
from tests import fashion_mnist_subset
from tests import synthetic_records

REAL_PER_CLASS = 4
SYNTHETIC_PER_CLASS = 10
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("classifier_inputs")
  real = fashion_mnist_subset.prepared(str(root / "real"),
                                       per_class=(REAL_PER_CLASS, 2))
  synthetic = str(root / "synthetic")
  synthetic_records.write(real, synthetic, SYNTHETIC_PER_CLASS)
  return real, synthetic


def _resolve(real, synthetic=None, data=input_pipeline.DATA_REAL,
             multiplier=None):
  return input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data=data, real_data_dir=real,
                                  synthetic_dir=synthetic,
                                  synthetic_multiplier=multiplier))


def _elements(stream, count):
  return list(stream.dataset.take(count).as_numpy_iterator())


def test_real_plus_2x_synthetic_epoch_holds_both_exactly(data):
  real, synthetic = data
  training_set = _resolve(real, synthetic,
                          input_pipeline.DATA_REAL_AND_SYNTHETIC, 2)
  assert training_set.real_size == REAL_PER_CLASS * NUM_CLASSES
  assert training_set.synthetic_size == 2 * REAL_PER_CLASS * NUM_CLASSES
  stream = input_pipeline.training_examples(training_set, seed=3,
                                            sampling=mixing.SAMPLING_EXACT)
  epoch = _elements(stream, training_set.epoch_length)
  is_synthetic = [
      e[schema.SOURCE].decode().startswith(synthetic) for e in epoch
  ]
  assert sum(is_synthetic) == training_set.synthetic_size
  # Every class: 2 x its 4 real examples, the first 8 class indices, each
  # once (pixel (0, 0) holds the class index).
  kept = collections.Counter((int(e[schema.LABEL]), int(e[schema.IMAGE][0, 0,
                                                                        0]))
                             for e, syn in zip(epoch, is_synthetic)
                             if syn)
  assert set(kept) == {
      (c, i) for c in range(NUM_CLASSES) for i in range(2 * REAL_PER_CLASS)
  }
  assert set(kept.values()) == {1}
  real_labels = collections.Counter(
      int(e[schema.LABEL]) for e, syn in zip(epoch, is_synthetic) if not syn)
  assert real_labels == {c: REAL_PER_CLASS for c in range(NUM_CLASSES)}


def test_random_sampling_keeps_the_ratio_in_expectation(data):
  real, synthetic = data
  training_set = _resolve(real, synthetic,
                          input_pipeline.DATA_REAL_AND_SYNTHETIC, 1.5)
  elements = _elements(input_pipeline.training_examples(training_set, seed=0),
                       1200)
  fraction = np.mean(
      [e[schema.SOURCE].decode().startswith(synthetic) for e in elements])
  expected = training_set.synthetic_size / training_set.epoch_length
  assert expected == pytest.approx(0.6)
  assert abs(fraction - expected) < 0.05


def test_synthetic_only_uses_the_whole_set_without_a_multiplier(data):
  real, synthetic = data
  training_set = _resolve(real, synthetic, input_pipeline.DATA_SYNTHETIC)
  assert training_set.real_size == 0
  assert training_set.synthetic_size == SYNTHETIC_PER_CLASS * NUM_CLASSES
  labels = collections.Counter(
      int(e[schema.LABEL])
      for e in _elements(input_pipeline.training_examples(training_set, seed=1),
                         training_set.epoch_length))
  assert set(labels) == set(range(NUM_CLASSES))


@pytest.mark.parametrize("data_choice,synthetic_dir,multiplier,message", [
    ("synthetic", "set", 3, "fewer synthetic examples"),
    ("synthetic", "no_such_dir", None, "manifest"),
    ("real+synthetic", None, None, "needs a synthetic set"),
    ("real", None, 1, "needs synthetic data"),
])
def test_bad_data_choices_are_config_errors(data, tmp_path, data_choice,
                                            synthetic_dir, multiplier, message):
  real, synthetic = data
  if synthetic_dir == "set":
    synthetic_dir = synthetic
  elif synthetic_dir:
    synthetic_dir = str(tmp_path / synthetic_dir)
  with pytest.raises(configuration.ConfigError, match=message):
    _resolve(real, synthetic_dir, data_choice, multiplier)


def test_cas_training_crop_is_the_generated_image_eval_crop(data):
  real, synthetic = data
  training_set = _resolve(real, synthetic, input_pipeline.DATA_SYNTHETIC)
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=8,
                                    optimizer="momentum", learning_rate=0.1,
                                    decay="stepwise", weight_decay=None,
                                    warmup_epochs=0)
  augmentation = recipes.create_training_augmentation(recipe, NUM_CLASSES)
  images, labels = next(
      iter(
          input_pipeline.training_dataset(training_set, 24, augmentation, 8,
                                          seed=0, single_crop=True)))
  assert images.shape == (8, 24, 24, 3) and labels.shape == (8, NUM_CLASSES)
  expected = [
      classifier_preprocessing.preprocess_for_eval(e[schema.IMAGE], 24,
                                                   generated=True).numpy()
      for e in _elements(input_pipeline.training_examples(training_set, seed=0),
                         training_set.epoch_length)
  ]
  for image in images.numpy():
    distances = [np.abs(image - e).max() for e in expected]
    assert min(distances) < 1e-6  # unflipped, uncropped beyond the protocol


def _shifted_equal(image, reference, dy, dx):
  """image[y, x] == reference[y - dy, x - dx] wherever both exist."""
  size = image.shape[0]
  moved = image[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)]
  source = reference[max(-dy, 0):size + min(-dy, 0),
                     max(-dx, 0):size + min(-dx, 0)]
  return np.abs(moved - source).max() < 1e-6


def test_shift_crop_batches_are_shifted_eval_crops(data):
  """With max_shift 0 and no flips the training images are the evaluation
  crops; with max_shift 2 each is one of them moved by at most 2 pixels."""
  real, _ = data
  training_set = _resolve(real)
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=8,
                                    optimizer="momentum", learning_rate=0.1,
                                    decay="stepwise", weight_decay=None,
                                    warmup_epochs=0)
  augmentation = recipes.create_training_augmentation(recipe, NUM_CLASSES)
  expected = [
      classifier_preprocessing.preprocess_for_eval(e[schema.IMAGE], 32).numpy()
      for e in _elements(input_pipeline.training_examples(training_set, seed=0),
                         training_set.epoch_length)
  ]
  for max_shift in (0, 2):
    images, _ = next(
        iter(
            input_pipeline.training_dataset(training_set, 32, augmentation, 8,
                                            seed=0, random_flip=False,
                                            max_shift=max_shift)))
    for image in images.numpy():
      if max_shift == 0:
        assert min(np.abs(image - e).max() for e in expected) < 1e-6
      else:
        # Some shift of some evaluation crop agrees on the overlap.
        assert any(
            _shifted_equal(image, e, dy, dx)
            for e in expected
            for dy in range(-2, 3)
            for dx in range(-2, 3))


def test_batches_are_split_across_replicas(data):
  real, _ = data
  training_set = _resolve(real)
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=8,
                                    optimizer="momentum", learning_rate=0.1,
                                    decay="cosine", weight_decay=None,
                                    warmup_epochs=0, randaugment_magnitude=10)
  augmentation = recipes.create_training_augmentation(recipe, NUM_CLASSES,
                                                      seed=0)
  context = tf.distribute.InputContext(num_input_pipelines=1,
                                       input_pipeline_id=0,
                                       num_replicas_in_sync=2)
  images, labels = next(
      iter(
          input_pipeline.training_dataset(training_set, 32, augmentation, 8,
                                          input_context=context, seed=0)))
  assert images.shape == (4, 32, 32, 3)
  assert images.dtype == tf.float32
  assert 0.0 <= float(tf.reduce_min(images)) <= float(
      tf.reduce_max(images)) <= 1.0
  np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0)


def test_validation_covers_the_split_once(data):
  real, _ = data
  dataset = input_pipeline.validation_dataset(real, 32, NUM_CLASSES, 8)
  # An unknown batch dimension lets tf.distribute hand out partial batches.
  assert dataset.element_spec[0].shape.as_list() == [None, 32, 32, 3]
  batches = list(dataset.as_numpy_iterator())
  assert [b[0].shape for b in batches
         ] == [(8, 32, 32, 3)] * 2 + [(4, 32, 32, 3)]
  labels = np.concatenate([b[1] for b in batches])
  assert np.concatenate([b[2] for b in batches]).tolist() == [1.0] * 20
  assert collections.Counter(labels) == {c: 2 for c in range(NUM_CLASSES)}
  image = batches[0][0][0]
  assert image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
