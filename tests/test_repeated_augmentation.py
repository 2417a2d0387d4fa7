"""Repeated augmentation (DeiT's 3 copies): every image exactly 3 times, the
copies in the same step on different replicas, augmented independently, the
epoch as long as before."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import recipes
from tests import fashion_mnist_subset

NUM_CLASSES = 10


def _stream(count):
  """Reader-like elements {image, label}, images of varying sizes."""

  def element(index):
    size = 4 + index % 3
    return {
        "image": tf.fill([size, size, 3], tf.cast(index, tf.uint8)),
        "label": index
    }

  return tf.data.Dataset.range(count).map(element)


def _labels(dataset, count):
  return [int(e["label"]) for e in dataset.take(count).as_numpy_iterator()]


def test_each_image_three_times_per_epoch_of_the_same_length():
  epoch_length, step_examples = 60, 12
  repeated = input_pipeline.repeat_examples(_stream(1000), 3, step_examples)
  epoch = _labels(repeated, epoch_length)
  # The epoch keeps its 60 examples: 20 distinct images, 3 copies each.
  assert collections.Counter(epoch) == {i: 3 for i in range(20)}
  for step in range(epoch_length // step_examples):
    labels = epoch[step * step_examples:(step + 1) * step_examples]
    # Every copy in the same step, 4 examples apart: with 3 replicas of
    # 4 examples each, one copy per replica.
    assert labels == labels[:4] * 3
    replicas = [labels[r * 4:(r + 1) * 4] for r in range(3)]
    assert all(sorted(r) == sorted(replicas[0]) for r in replicas)
  # Images of any size pass through whole.
  for element in repeated.take(6).as_numpy_iterator():
    size = 4 + int(element["label"]) % 3
    assert element["image"].shape == (size, size, 3)
    assert (element["image"] == element["label"]).all()


def test_steps_not_a_multiple_of_three_still_give_three_copies():
  # 8 examples a step: groups of ceil(8 / 3) = 3 images, 9 examples.
  repeated = input_pipeline.repeat_examples(_stream(1000), 3, 8)
  labels = _labels(repeated, 90)
  assert labels[:9] == [0, 1, 2] * 3
  assert collections.Counter(labels) == {i: 3 for i in range(30)}
  assert _labels(input_pipeline.repeat_examples(_stream(10), 1, 8),
                 10) == (list(range(10)))


@pytest.mark.parametrize("repeats,step_examples", [(0, 8), (2.5, 8), (3, 0)])
def test_bad_repeats_are_value_errors(repeats, step_examples):
  with pytest.raises(ValueError):
    input_pipeline.repeat_examples(_stream(10), repeats, step_examples)


def test_recipe_checks_its_repeats():
  values = dict(epochs=1, batch_size=8, optimizer="adamw", learning_rate=0.1,
                decay="cosine", weight_decay=None, warmup_epochs=0)
  assert recipes.ClassifierRecipe(**values).repeated_augmentations is None
  with pytest.raises(ValueError, match="repeated_augmentations"):
    recipes.ClassifierRecipe(**values, repeated_augmentations=0)


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
  real = fashion_mnist_subset.prepared(
      str(tmp_path_factory.mktemp("repeated") / "real"), per_class=(4, 1))
  return input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data=input_pipeline.DATA_REAL,
                                  real_data_dir=real))


def test_copies_are_augmented_independently(training_set):
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=6, optimizer="adamw",
                                    learning_rate=0.1, decay="cosine",
                                    weight_decay=None, warmup_epochs=0,
                                    random_erasing=0.25,
                                    repeated_augmentations=3)
  augmentation = recipes.create_training_augmentation(recipe, NUM_CLASSES,
                                                      seed=0)
  dataset = input_pipeline.training_dataset(
      training_set, 32, augmentation, 6, seed=0,
      repeated_augmentations=recipe.repeated_augmentations)
  # One step of 6: 2 images, each 3 times, copies 2 apart, each with its
  # own crop, flip and erasing (RandAugment's translations can turn a 32 x
  # 32 image all grey, so it is left out here).
  for images, labels in dataset.take(4).as_numpy_iterator():
    classes = labels.argmax(axis=1)
    assert list(classes) == list(classes[:2]) * 3
    for first in range(2):
      copies = images[first::2]
      assert not np.array_equal(copies[0], copies[1])
      assert not np.array_equal(copies[0], copies[2])
      assert not np.array_equal(copies[1], copies[2])
  # The schedule's epoch is the data's: repetition does not stretch it.
  assert input_pipeline.steps_per_epoch(training_set,
                                        6) == (training_set.epoch_length / 6)
