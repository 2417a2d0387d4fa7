"""Classifiers on 64 x 64 data (Azizi et al. Table A.3's 64x64 column): real
images made r x r exactly as the cascade's training data, synthetic ones
passed as they are, the model's crops on top, the checks of r, the gin
files, and a short training run evaluated on downsampled validation
images."""

import collections
import json
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import models
from cdm_tf.classifiers import recipes
from cdm_tf.classifiers import trainer
from cdm_tf.data import class_names
from cdm_tf.data import classifier_preprocessing
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import imagenet_reader
from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import real_photo_records
from tests import synthetic_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "gin", "classifiers")
RESOLUTION = 64
IMAGE_SIZE = 224  # resnet50_64x64.gin's model input


def _write_generated(directory, images_and_labels, classes):
  """A one-shard synthetic set (PNG, so pixels survive) with its manifest."""
  writer = shard_writer.ShardWriter(
      os.path.join(
          directory,
          shard_writer.shard_file_name(input_pipeline.TRAIN_SPLIT, 0, 1)),
      num_classes=len(classes))
  per_class = collections.Counter()
  for image, label in images_and_labels:
    label, index = int(label), per_class[int(label)]
    per_class[label] += 1
    writer.write(
        shard_writer.encode_example(
            np.asarray(image), label, classes, image_format="png",
            provenance=shard_writer.Provenance("test-downsampled-real",
                                               f"{label}-{index}", index,
                                               (label, index))), label)
  writer.close()
  split_manifest.write(directory, input_pipeline.TRAIN_SPLIT, [writer.info],
                       len(classes), "png")
  return directory


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """Real ImageNet photos (at most 160 a side) as train and validation
  splits, and a synthetic set of 64 x 64 images, one per photo: the photo
  made 64 x 64 and flipped upside down (so it is not a real image)."""
  root = tmp_path_factory.mktemp("photos")
  real = str(root / "real")
  loaded = real_photo_records.load_photos(max_side=160)
  for split in (input_pipeline.TRAIN_SPLIT, input_pipeline.VALIDATION_SPLIT):
    real_photo_records.write_photo_shards(real, schema.FORMAT_TPU, loaded,
                                          num_shards=2, split=split)
  generated = [(classifier_preprocessing.as_generator_data(
      e[schema.IMAGE], RESOLUTION)[::-1], e[schema.LABEL])
               for e in imagenet_reader.read_dataset(
                   real, split=input_pipeline.TRAIN_SPLIT, shuffle=False)]
  synthetic = _write_generated(str(root / "synthetic"), generated,
                               class_names.load_classes(real))
  return real, synthetic


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
  """Fashion-MNIST records (stored at 32 x 32) and a synthetic set of
  them (32 x 32)."""
  root = tmp_path_factory.mktemp("fashion")
  real = fashion_mnist_subset.prepared(str(root / "real"), per_class=(4, 2))
  synthetic = str(root / "synthetic")
  synthetic_records.write(real, synthetic, per_class=4)
  return real, synthetic


def _resolve(real, synthetic=None, data=input_pipeline.DATA_REAL):
  return input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data=data, real_data_dir=real,
                                  synthetic_dir=synthetic))


def _generator_images(real_dir, split):
  """{label: [uint8 64 x 64]} of a real split, made by the cascade's own
  training-data path (``cascade_example``)."""
  by_label = collections.defaultdict(list)
  for example in imagenet_reader.read_dataset(real_dir, split=split,
                                              shuffle=False):
    image = diffusion_preprocessing.cascade_example(
        example, (RESOLUTION,))[diffusion_preprocessing.image_key(RESOLUTION)]
    by_label[int(example[schema.LABEL])].append(
        diffusion_preprocessing.to_uint8(image).numpy())
  return by_label


def _no_augmentation(num_classes):
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=4,
                                    optimizer="momentum", learning_rate=0.1,
                                    decay="cosine", weight_decay=None,
                                    warmup_epochs=0)
  return recipes.create_training_augmentation(recipe, num_classes)


# ------------------------------------------------- the 64 x 64 real images


def test_centre_crop_of_the_short_side_hand_computed():
  # 90 x 270: the middle 90 columns are 200, the sides 10. The centre square
  # is exactly the middle, so every pixel at 64 x 64 is 200; a whole-image
  # resize or a random crop would bring in 10s.
  image = np.full([90, 270, 3], 10, np.uint8)
  image[:, 90:180] = 200
  for source in (image, image.transpose(1, 0, 2)):
    out = classifier_preprocessing.as_generator_data(source, RESOLUTION)
    assert out.dtype == tf.uint8 and out.shape == (64, 64, 3)
    assert np.all(out.numpy() == 200)
  # A 64 x 64 image is already its own crop and size: unchanged.
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, [64, 64, 3]).astype(np.uint8)
  np.testing.assert_array_equal(
      classifier_preprocessing.as_generator_data(small, RESOLUTION), small)


def test_real_training_images_are_the_generator_data_exactly(photos):
  real, synthetic = photos
  training_set = _resolve(real, synthetic,
                          input_pipeline.DATA_REAL_AND_SYNTHETIC)
  input_pipeline.check_data_resolution(training_set, RESOLUTION)
  expected_real = _generator_images(real, input_pipeline.TRAIN_SPLIT)
  stored_synthetic = collections.defaultdict(list)
  for e in reader.read(list(training_set.synthetic_paths)).as_numpy_iterator():
    stored_synthetic[int(e[schema.LABEL])].append(e[schema.IMAGE])
  stream = input_pipeline.training_examples(training_set, seed=0,
                                            sampling=mixing.SAMPLING_EXACT,
                                            data_resolution=RESOLUTION)
  seen = collections.Counter()
  for element in stream.dataset.take(stream.epoch_length).as_numpy_iterator():
    image, label = element[schema.IMAGE], int(element[schema.LABEL])
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    if element[schema.SOURCE].decode().startswith(synthetic):
      seen["synthetic"] += 1
      # Passed as it is (upside down: no real image).
      assert any(np.array_equal(image, e) for e in stored_synthetic[label])
    else:
      seen["real"] += 1
      # Bit for bit what the cascade's 64 x 64 stage trains on.
      assert any(np.array_equal(image, e) for e in expected_real[label])
  assert seen == {"real": 20, "synthetic": 20}


def test_validation_batches_are_eval_crops_of_the_generator_data(photos):
  real, _ = photos
  dataset = input_pipeline.validation_dataset(real, IMAGE_SIZE, 1000, 8,
                                              data_resolution=RESOLUTION)
  batches = list(dataset.as_numpy_iterator())
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  assert images.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3)
  expected = _generator_images(real, input_pipeline.VALIDATION_SPLIT)
  full_resolution = np.concatenate([
      b[0] for b in input_pipeline.validation_dataset(real, IMAGE_SIZE, 1000,
                                                      8).as_numpy_iterator()
  ])
  for image, label, full in zip(images, labels, full_resolution):
    # The 64 x 64 image resized to 256 x 256, centre 224 x 224.
    references = [
        classifier_preprocessing.preprocess_for_eval(e, IMAGE_SIZE).numpy()
        for e in expected[int(label)]
    ]
    assert min(np.abs(image - r).max() for r in references) < 1e-6
    # and not the photo's own crop: detail is lost at 64 x 64.
    assert np.abs(image - full).mean() > 1.0 / 255


def test_training_batches_have_the_model_input_size(photos):
  real, _ = photos
  training_set = _resolve(real)
  expected = _generator_images(real, input_pipeline.TRAIN_SPLIT)
  # A crop of the whole (square) image, no flip: the 64 x 64 image resized
  # to 224 x 224, bilinear and anti-aliased.
  images, labels = next(
      iter(
          input_pipeline.training_dataset(training_set, IMAGE_SIZE,
                                          _no_augmentation(1000), 4, seed=0,
                                          data_resolution=RESOLUTION,
                                          crop_area_range=(1.0, 1.0),
                                          random_flip=False)))
  assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
  for image, label in zip(images.numpy(), np.argmax(labels, axis=-1)):
    references = [
        tf.image.resize(e.astype(np.float32), [224, 224],
                        antialias=True).numpy() / 255.0
        for e in expected[int(label)]
    ]
    assert min(np.abs(image - r).max() for r in references) < 1e-5
  # The usual random-resized crops and flips: still the model input size.
  images, _ = next(
      iter(
          input_pipeline.training_dataset(training_set, IMAGE_SIZE,
                                          _no_augmentation(1000), 4, seed=1,
                                          data_resolution=RESOLUTION)))
  assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert 0.0 <= float(tf.reduce_min(images)) <= float(
      tf.reduce_max(images)) <= 1.0


# ------------------------------------------------------------ bad values


@pytest.mark.parametrize("value", [0, -64, 64.0, "64", True])
def test_resolution_must_be_a_positive_integer(fashion, value):
  real, _ = fashion
  with pytest.raises(
      configuration.ConfigError,
      match="data_resolution: the resolution must be a "
      "positive integer"):
    input_pipeline.check_data_resolution(_resolve(real), value)
  with pytest.raises(ValueError, match="positive integer"):
    classifier_preprocessing.as_generator_data(np.zeros([8, 8, 3], np.uint8),
                                               value)


def test_resolution_larger_than_the_stored_images_is_refused(fashion):
  real, _ = fashion
  training_set = _resolve(real)
  for ok in (None, 16, 32):
    input_pipeline.check_data_resolution(training_set, ok)
  with pytest.raises(
      configuration.ConfigError,
      match=r"data_resolution 64 is larger than the stored "
      r"real images: the first image of the real "
      r"'validation' split of .* is 32x32"):
    input_pipeline.check_data_resolution(training_set, 64)


def test_synthetic_images_of_another_resolution_are_refused(fashion, photos):
  real, synthetic = fashion  # 32 x 32 synthetic images
  training_set = _resolve(real, synthetic, input_pipeline.DATA_SYNTHETIC)
  input_pipeline.check_data_resolution(training_set, 32)
  with pytest.raises(
      configuration.ConfigError,
      match=r"the synthetic images of .* are 32x32, not "
      r"data_resolution 16x16"):
    input_pipeline.check_data_resolution(training_set, 16)
  real, synthetic = photos  # 64 x 64 synthetic images
  training_set = _resolve(real, synthetic,
                          input_pipeline.DATA_REAL_AND_SYNTHETIC)
  with pytest.raises(configuration.ConfigError, match="are 64x64, not "
                     "data_resolution 32x32"):
    input_pipeline.check_data_resolution(training_set, 32)


# ------------------------------------------------------------ gin files


@pytest.mark.parametrize("name,base,cited", [
    ("resnet50_64x64", "resnet50", ("68.63", "72.98", "76.39")),
    ("resnet50_cas_64x64", "resnet50_cas", ("64.96", "69.24")),
])
def test_gin_files_bind_the_recipe_and_64x64_data(name, base, cited):
  with open(os.path.join(CONFIG_DIR, f"{name}.gin")) as f:
    text = f.read()
  for value in cited:
    assert value in text
  bound = {}
  for config in (base, name):
    gin.clear_config()
    try:
      configuration.parse_gin([os.path.join(CONFIG_DIR, f"{config}.gin")], [])
      bound[config] = (gin.get_configurable(recipes.ClassifierRecipe)(),
                       _bound("models.create_classifier.image_size"),
                       _bound("trainer.train_classifier.data_resolution"))
    finally:
      gin.clear_config()
  recipe, image_size, data_resolution = bound[name]
  assert (recipe, image_size) == bound[base][:2]  # Table A.1's, at 224
  assert image_size == IMAGE_SIZE
  assert data_resolution == RESOLUTION and bound[base][2] is None


def _bound(binding):
  """A binding's value, following a %MACRO reference; None if unbound."""
  try:
    value = gin.query_parameter(binding)
  except ValueError:
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    value = gin.query_parameter("%" + value.scoped_selector.split("/")[0])
  return value


# ------------------------------------------------------- a short training


def test_training_records_and_evaluates_at_the_data_resolution(
    tmp_path, fashion):
  """Two steps of the tiny ResNet at input 32 on Fashion-MNIST made 16 x 16;
  the final evaluation equals the saved model's accuracy on validation
  images made 16 x 16 then centre cropped, computed here."""
  real, _ = fashion
  training_set = _resolve(real)
  recipe = recipes.ClassifierRecipe(epochs=1, batch_size=8,
                                    optimizer="momentum", learning_rate=0.1,
                                    decay="cosine", weight_decay=None,
                                    warmup_epochs=0)
  lines = []
  outcome = trainer.train_classifier(
      str(tmp_path), tf.distribute.get_strategy(), training_set, recipe,
      lambda: models.create_classifier("resnet50", 10, 32, tiny=True),
      data_resolution=16, num_steps=2, log_every=1, print_fn=lines.append)
  run = json.loads((tmp_path / trainer.RUN_FILE).read_text())
  assert run["data_resolution"] == 16 and run["image_size"] == 32
  assert any("real images made 16x16" in line for line in lines)
  model = keras.models.load_model(tmp_path / trainer.MODEL_FILE)
  hits = total = 0
  for example in imagenet_reader.read_dataset(
      real, split=input_pipeline.VALIDATION_SPLIT, num_classes=10,
      shuffle=False):
    small = classifier_preprocessing.as_generator_data(example[schema.IMAGE],
                                                       16)
    assert small.shape == (16, 16, 3)
    image = classifier_preprocessing.preprocess_for_eval(small, 32)
    logits = model(image[None], training=False)
    hits += int(np.argmax(logits) == int(example[schema.LABEL]))
    total += 1
  assert outcome["eval"].num_examples == total == 20
  assert outcome["eval"].top1 == pytest.approx(hits / total)
  # A mismatched synthetic set or too large an r stops before training.
  with pytest.raises(configuration.ConfigError, match="larger than"):
    trainer.train_classifier(str(tmp_path / "refused"),
                             tf.distribute.get_strategy(), training_set, recipe,
                             lambda: None, data_resolution=64)
  assert not (tmp_path / "refused").exists()
