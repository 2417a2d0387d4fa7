"""Every gin/classifiers config against Tables A.1 / A.2 and Table 3, and the
recipe builders: learning-rate schedules, batch scaling, weight decay,
augmentation and loss."""

import glob
import math
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import randaugment
from cdm_tf.classifiers import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "gin", "classifiers")

FIELDS = ("epochs", "batch_size", "optimizer", "learning_rate", "decay",
          "weight_decay", "warmup_epochs", "label_smoothing", "dropout_rate",
          "randaugment_magnitude", "mixup", "cutmix")

# Azizi et al. (2023), transcribed independently of the gin files, in FIELDS
# order; "-" and rows a table does not have are None.
TABLE_A1 = {
    "ResNet-50 (CAS)": (90, 1024, "momentum", 0.4, "stepwise", 1e-4, 5, None,
                        None, None, None, None),
    "ResNet-50": (130, 4096, "momentum", 1.6, "cosine", 1e-4, 5, 0.1, 0.25, 10,
                  None, None),
    "ResNet-101": (200, 4096, "momentum", 1.6, "cosine", 1e-4, 5, 0.1, 0.25, 15,
                   None, None),
    "ResNet-152": (200, 4096, "momentum", 1.6, "cosine", 1e-4, 5, 0.1, 0.25, 15,
                   None, None),
    "ResNet-RS-50": (350, 4096, "momentum", 1.6, "cosine", 4e-5, 5, 0.1, 0.25,
                     10, None, None),
    "ResNet-RS-101": (350, 4096, "momentum", 1.6, "cosine", 4e-5, 5, 0.1, 0.25,
                      15, None, None),
    "ResNet-RS-152": (350, 4096, "momentum", 1.6, "cosine", 4e-5, 5, 0.1, 0.25,
                      15, None, None),
}
TABLE_A2 = {
    "ViT-S/16": (300, 1024, "adamw", 0.001, "cosine", 0.0001, 10, None, None,
                 10, 0.2, None),
    "DeiT-S":
        (300, 4096, "adamw", 0.004, "cosine", None, 5, 0.1, None, 9, 0.8, 1.0),
    "DeiT-B":
        (300, 4096, "adamw", 0.004, "cosine", None, 5, 0.1, None, 9, 0.8, 1.0),
    "DeiT-L":
        (300, 4096, "adamw", 0.004, "cosine", None, 5, 0.1, None, 9, 0.8, 1.0),
}
TABLES = {**TABLE_A1, **TABLE_A2}

# What the DeiT configs bind beyond Table A.2, from the recipe Azizi et al.
# follow for the DeiT family (Touvron et al. 2021, Table 9, and the DeiT
# code's defaults): weight decay 0.05 where the table has "-", random
# erasing 0.25, 3 repeated augmentations; stochastic depth 0.1, and 0.45 for
# DeiT-L (DeiT III's ViT-L, Touvron et al. 2022: DeiT has no L).
DEIT_TABLE_9 = {
    "weight_decay": 0.05, "random_erasing": 0.25, "repeated_augmentations": 3
}
DEIT_STOCHASTIC_DEPTH = {"DeiT-S": 0.1, "DeiT-B": 0.1, "DeiT-L": 0.45}

# The RandAugment each column's source runs: the TPU code's (ResNets and
# ResNet-RS: tensorflow/tpu; ViT-S/16: big_vision's fork of it) or timm's
# (DeiT); the CAS ResNet-50 has none.
RANDAUGMENT_VARIANTS = {
    "ResNet-50 (CAS)": None,
    "ResNet-50": "tpu",
    "ResNet-101": "tpu",
    "ResNet-152": "tpu",
    "ResNet-RS-50": "tpu",
    "ResNet-RS-101": "tpu",
    "ResNet-RS-152": "tpu",
    "ViT-S/16": "tpu",
    "DeiT-S": "timm",
    "DeiT-B": "timm",
    "DeiT-L": "timm",
}

# Config file -> (table column, model, Table 3 input size, weight-decay
# convention of the recipe the column comes from).
CONFIGS = {
    "resnet50_cas": ("ResNet-50 (CAS)", "resnet50", 224, "l2"),
    "resnet50": ("ResNet-50", "resnet50", 224, "l2"),
    # Table A.3's 64x64 column: 64 x 64 data, 224 input (the gin files say
    # why); tests/test_classifier_data_resolution.py checks the rest.
    "resnet50_64x64": ("ResNet-50", "resnet50", 224, "l2"),
    "resnet50_cas_64x64": ("ResNet-50 (CAS)", "resnet50", 224, "l2"),
    "resnet101": ("ResNet-101", "resnet101", 224, "l2"),
    "resnet152": ("ResNet-152", "resnet152", 224, "l2"),
    "resnet_rs50": ("ResNet-RS-50", "resnet_rs50", 160, "l2"),
    "resnet_rs101_160": ("ResNet-RS-101", "resnet_rs101", 160, "l2"),
    "resnet_rs101_190": ("ResNet-RS-101", "resnet_rs101", 190, "l2"),
    "resnet_rs152": ("ResNet-RS-152", "resnet_rs152", 224, "l2"),
    "vit_s16": ("ViT-S/16", "vit_s16", 224, "decoupled_schedule"),
    "deit_s": ("DeiT-S", "deit_s", 224, "decoupled"),
    "deit_b_224": ("DeiT-B", "deit_b", 224, "decoupled"),
    "deit_b_384": ("DeiT-B", "deit_b", 384, "decoupled"),
    "deit_l": ("DeiT-L", "deit_l", 224, "decoupled"),
}


def _path(name):
  return os.path.join(CONFIG_DIR, f"{name}.gin")


def _bound(binding):
  """A binding's value, following a %MACRO reference."""
  value = gin.query_parameter(binding)
  if isinstance(value, gin.config.ConfigurableReference):
    value = gin.query_parameter("%" + value.scoped_selector.split("/")[0])
  return value


def _recipe(name):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([_path(name)], [])
    return gin.get_configurable(recipes.ClassifierRecipe)()
  finally:
    gin.clear_config()


def test_one_config_per_table_column_and_input_size():
  found = {
      os.path.splitext(os.path.basename(p))[0]
      for p in glob.glob(os.path.join(CONFIG_DIR, "*.gin"))
  }
  assert found == set(CONFIGS)
  assert {column for column, *_ in CONFIGS.values()} == set(TABLES)
  # Table 3's (model, input size) rows, plus the CAS classifier, plus both
  # at 64 x 64 data (Table A.3).
  assert sorted((model, size) for _, model, size, _ in CONFIGS.values()) == (
      sorted([("resnet50", 224)] * 4 +
             [("resnet101", 224), ("resnet152", 224), ("resnet_rs50", 160),
              ("resnet_rs101", 160), ("resnet_rs101", 190),
              ("resnet_rs152", 224), ("vit_s16", 224), ("deit_s", 224),
              ("deit_b", 224), ("deit_b", 384), ("deit_l", 224)]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_has_the_table_values(name):
  column, model, image_size, convention = CONFIGS[name]
  with open(_path(name)) as f:
    first_line = f.readline()
  table = "A.1" if column in TABLE_A1 else "A.2"
  assert first_line.startswith(f'# Table {table}, column "{column}"')
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([_path(name)], [])
    recipe = gin.get_configurable(recipes.ClassifierRecipe)()
    for field, expected in zip(FIELDS, TABLES[column]):
      if column in DEIT_STOCHASTIC_DEPTH:
        expected = DEIT_TABLE_9.get(field, expected)
      actual = getattr(recipe, field)
      if expected is None or isinstance(expected, str):
        assert actual == expected, field
      else:
        assert actual == pytest.approx(expected, rel=1e-12), field
    assert _bound("models.create_classifier.name") == model
    assert _bound("models.create_classifier.image_size") == image_size
    assert _bound("models.create_classifier.num_classes") == 1000
    assert (
        _bound("models.create_classifier.dropout_rate") == recipe.dropout_rate)
    if model.startswith("resnet_rs"):
      assert _bound("models.create_classifier.stochastic_depth_rate") == 0.0
    assert _bound("recipes.create_optimizer.weight_decay_convention") == (
        convention)
  finally:
    gin.clear_config()


def _learning_rates(schedule, epochs):
  return [float(schedule.learning_rate_at_epoch(e)) for e in epochs]


def test_cas_schedule_warms_up_from_zero_then_divides_by_ten():
  recipe = _recipe("resnet50_cas")
  schedule = recipes.learning_rate_schedule(recipe, steps_per_epoch=100)
  epochs = [0, 2.5, 5, 29.99, 30, 59.99, 60, 79.99, 80, 89.99]
  expected = [0.0, 0.2, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004, 0.0004, 0.0004]
  np.testing.assert_allclose(_learning_rates(schedule, epochs), expected,
                             rtol=1e-5, atol=1e-9)
  # In steps: step 0 is 0, step 250 (2.5 epochs) is half the peak.
  assert float(schedule(0)) == 0.0
  assert float(schedule(250)) == pytest.approx(0.2, rel=1e-6)
  assert float(schedule(3000)) == pytest.approx(0.04, rel=1e-6)


@pytest.mark.parametrize("name",
                         ["resnet50", "resnet_rs50", "vit_s16", "deit_b_224"])
def test_cosine_schedule_warmup_midpoint_and_end(name):
  recipe = _recipe(name)
  schedule = recipes.learning_rate_schedule(recipe, steps_per_epoch=10)
  peak, warmup, epochs = (recipe.learning_rate, recipe.warmup_epochs,
                          recipe.epochs)
  middle = (warmup + epochs) / 2
  quarter = warmup + (epochs - warmup) / 4
  got = _learning_rates(schedule,
                        [0, warmup / 2, warmup, quarter, middle, epochs])
  expected = [
      0.0, peak / 2, peak, peak * (1 + math.cos(math.pi / 4)) / 2, peak / 2, 0.0
  ]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  # Monotone: up during warmup, down after.
  rates = _learning_rates(schedule, np.linspace(0, epochs, 200))
  top = int(np.argmax(rates))
  assert np.all(np.diff(rates[:top + 1]) >= 0)
  assert np.all(np.diff(rates[top:]) <= 1e-9)


def test_schedule_round_trips_through_its_config():
  schedule = recipes.learning_rate_schedule(_recipe("resnet50_cas"), 7.5)
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(schedule))
  for step in (0, 10, 300, 700):
    assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_learning_rate_scales_linearly_with_the_global_batch():
  resnet = _recipe("resnet50")  # 1.6 at 4096
  vit = _recipe("vit_s16")  # 0.001 at 1024
  assert recipes.scaled_learning_rate(resnet) == 1.6
  assert recipes.scaled_learning_rate(resnet, 4096) == 1.6
  assert recipes.scaled_learning_rate(resnet, 256) == pytest.approx(0.1)
  assert recipes.scaled_learning_rate(resnet, 1024) == pytest.approx(0.4)
  assert recipes.scaled_learning_rate(vit, 256) == pytest.approx(0.00025)
  schedule = recipes.learning_rate_schedule(resnet, steps_per_epoch=5,
                                            global_batch_size=512)
  assert float(schedule.learning_rate_at_epoch(
      resnet.warmup_epochs)) == (pytest.approx(0.2))
  with pytest.raises(ValueError):
    recipes.scaled_learning_rate(resnet, 0)


def _kernel_and_bias():
  layer = keras.layers.Dense(2, kernel_initializer="ones",
                             bias_initializer="ones")
  layer.build((None, 3))
  return layer.kernel, layer.bias


def test_momentum_recipe_adds_l2_to_kernel_gradients_only():
  recipe = _recipe("resnet_rs50")
  optimizer = recipes.create_optimizer(recipe, steps_per_epoch=10,
                                       global_batch_size=256)
  assert isinstance(optimizer, recipes.L2RegularizedSGD)
  assert optimizer.l2 == 4e-5 and optimizer.momentum == 0.9
  assert not optimizer.nesterov
  kernel, bias = _kernel_and_bias()
  optimizer.build([kernel, bias])
  optimizer.iterations.assign(50)  # end of warmup: the peak rate
  peak = 1.6 * 256 / 4096
  zeros = [tf.zeros_like(kernel), tf.zeros_like(bias)]
  optimizer.apply(zeros, [kernel, bias])
  np.testing.assert_allclose(kernel.numpy(), 1 - peak * 4e-5, rtol=1e-6)
  np.testing.assert_array_equal(bias.numpy(), 1.0)


@pytest.mark.parametrize(
    "name,keras_weight_decay",
    [
        ("vit_s16", 0.0001 / 0.001),  # big_vision: not scaled by the peak rate
        ("deit_s", 0.05),  # Table A.2: "-"; DeiT's Table 9: 0.05, decoupled
    ])
def test_adamw_recipe_decays_kernels_only(name, keras_weight_decay):
  recipe = _recipe(name)
  gin.clear_config()
  gin.parse_config_files_and_bindings([_path(name)], [])
  try:
    optimizer = gin.get_configurable(recipes.create_optimizer)(
        recipe, steps_per_epoch=10)
  finally:
    gin.clear_config()
  assert isinstance(optimizer, keras.optimizers.AdamW)
  assert optimizer.weight_decay == pytest.approx(keras_weight_decay)
  kernel, bias = _kernel_and_bias()
  optimizer.build([kernel, bias])
  optimizer.iterations.assign(int(10 * recipe.warmup_epochs))
  zeros = [tf.zeros_like(kernel), tf.zeros_like(bias)]
  optimizer.apply(zeros, [kernel, bias])
  # Per-step decay of a kernel is the table's weight decay at the peak.
  np.testing.assert_allclose(kernel.numpy(),
                             1 - recipe.learning_rate * keras_weight_decay,
                             rtol=1e-6)
  np.testing.assert_array_equal(bias.numpy(), 1.0)


def test_weight_decay_conventions_are_checked():
  with pytest.raises(ValueError):
    recipes.create_optimizer(_recipe("resnet50"), 10,
                             weight_decay_convention="decoupled")
  with pytest.raises(ValueError):
    recipes.create_optimizer(_recipe("deit_s"), 10,
                             weight_decay_convention="l2")


def test_label_smoothing_is_in_the_loss():
  assert recipes.create_loss(_recipe("resnet50")).label_smoothing == 0.1
  assert recipes.create_loss(_recipe("resnet50_cas")).label_smoothing == 0.0
  loss = recipes.create_loss(_recipe("deit_s"))
  logits = tf.constant([[0.0, 0.0, 0.0, 0.0]])
  # Uniform logits: the loss is log(4) for any (smoothed) target.
  assert float(loss(tf.constant([[1.0, 0, 0, 0]]),
                    logits)) == pytest.approx(math.log(4), rel=1e-5)
  confident = tf.constant([[10.0, 0.0, 0.0, 0.0]])
  smoothed = float(loss(tf.constant([[1.0, 0, 0, 0]]), confident))
  plain = float(
      keras.losses.CategoricalCrossentropy(from_logits=True)(tf.constant(
          [[1.0, 0, 0, 0]]), confident))
  assert smoothed > plain


def _examples(count=8, size=16, num_classes=4):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (count, size, size, 3)).astype("float32")
  labels = np.arange(count) % num_classes
  return tf.data.Dataset.from_tensor_slices((images, labels))


def test_augmentation_layers_follow_the_recipe():
  deit = recipes.create_training_augmentation(_recipe("deit_s"), 4, seed=1)
  assert deit.randaugment == randaugment.RandAugment("timm", 9, num_layers=2)
  assert isinstance(deit.mixup, keras.layers.MixUp)
  assert deit.mixup.alpha == 0.8
  assert isinstance(deit.cutmix, keras.layers.CutMix)
  assert deit.cutmix.factor == (1.0, 1.0)
  vit = recipes.create_training_augmentation(_recipe("vit_s16"), 4)
  assert vit.mixup.alpha == 0.2 and vit.cutmix is None
  assert vit.randaugment == randaugment.RandAugment("tpu", 10)
  rs101 = recipes.create_training_augmentation(_recipe("resnet_rs101_160"), 4)
  assert rs101.randaugment == randaugment.RandAugment("tpu", 15)
  assert rs101.mixup is None and rs101.cutmix is None
  cas = recipes.create_training_augmentation(_recipe("resnet50_cas"), 4)
  assert cas.randaugment is None and cas.mixup is None and cas.cutmix is None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_runs_the_randaugment_of_its_source(name):
  column = CONFIGS[name][0]
  recipe = _recipe(name)
  augmentation = recipes.create_training_augmentation(recipe, 4)
  if RANDAUGMENT_VARIANTS[column] is None:
    assert augmentation.randaugment is None
  else:
    assert recipe.randaugment_variant == RANDAUGMENT_VARIANTS[column]
    assert augmentation.randaugment == randaugment.RandAugment(
        RANDAUGMENT_VARIANTS[column], recipe.randaugment_magnitude)


def test_randaugment_is_reproducible_with_a_seed():

  def images(seed, pipeline_id=0):
    augmentation = recipes.create_training_augmentation(_recipe("resnet50"), 4,
                                                        seed=seed)
    return np.concatenate([
        x.numpy() for x, _ in augmentation.apply(_examples(), batch_size=4,
                                                 pipeline_id=pipeline_id)
    ])

  first = images(7)
  np.testing.assert_array_equal(first, images(7))
  assert not np.array_equal(first, images(8))
  # Input pipelines of one run draw their own augmentations.
  assert not np.array_equal(first, images(7, pipeline_id=1))
  # The images are augmented (magnitude 10 of the TPU code always applies
  # two ops; about 2% of the pairs, e.g. Invert twice, change nothing),
  # each with its own seed.
  augmentation = recipes.create_training_augmentation(_recipe("resnet50"), 4,
                                                      seed=7)
  examples = _examples(count=64)
  augmented = np.concatenate(
      [x.numpy() for x, _ in augmentation.apply(examples, batch_size=8)])
  original = np.stack([x.numpy() for x, _ in examples])
  changed = np.abs(augmented - original).reshape(64, -1).max(axis=1) > 0.01
  assert changed.mean() >= 0.9, changed


def test_augmented_batches_have_mixed_one_hot_labels():
  augmentation = recipes.create_training_augmentation(_recipe("deit_s"), 4,
                                                      seed=3)
  for images, labels in augmentation.apply(_examples(), batch_size=4):
    assert images.shape == (4, 16, 16, 3) and images.dtype == tf.float32
    assert labels.shape == (4, 4) and labels.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(images.numpy()))


def test_no_augmentation_recipe_passes_images_and_one_hot_labels():
  augmentation = recipes.create_training_augmentation(_recipe("resnet50_cas"),
                                                      4)
  examples = _examples(count=4)
  (images, labels), = augmentation.apply(examples, batch_size=4)
  expected_images = np.stack([x.numpy() for x, _ in examples])
  np.testing.assert_array_equal(images.numpy(), expected_images)
  np.testing.assert_array_equal(labels.numpy(), np.eye(4))


def test_recipe_rejects_unknown_optimizer_and_decay():
  values = dict(zip(FIELDS, TABLE_A1["ResNet-50"]))
  with pytest.raises(ValueError):
    recipes.ClassifierRecipe(**{**values, "optimizer": "sgd"})
  with pytest.raises(ValueError):
    recipes.ClassifierRecipe(**{**values, "decay": "linear"})
  with pytest.raises(ValueError, match="randaugment_variant"):
    recipes.ClassifierRecipe(**{**values, "randaugment_variant": "keras"})
  assert recipes.ClassifierRecipe(**values).epochs == 130


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_deit_configs_add_deits_regularisation_and_no_other_does(name):
  column, model, _, _ = CONFIGS[name]
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([_path(name)], [])
    recipe = gin.get_configurable(recipes.ClassifierRecipe)()
    if column in DEIT_STOCHASTIC_DEPTH:
      assert recipe.random_erasing == 0.25
      assert recipe.repeated_augmentations == 3
      assert recipe.dropout_rate is None
      assert _bound("models.create_classifier.stochastic_depth_rate") == (
          DEIT_STOCHASTIC_DEPTH[column])
    else:
      assert recipe.random_erasing is None
      assert recipe.repeated_augmentations is None
    if model == "vit_s16":
      # Beyer et al. (2022): no dropout, no stochastic depth.
      assert recipe.dropout_rate is None
      assert _bound("models.create_classifier.stochastic_depth_rate") == 0.0
  finally:
    gin.clear_config()
  augmentation = recipes.create_training_augmentation(recipe, 4)
  if column in DEIT_STOCHASTIC_DEPTH:
    assert augmentation.random_erasing.probability == 0.25
    assert augmentation.random_erasing.input_mean == models.IMAGENET_MEAN
  else:
    assert augmentation.random_erasing is None


def test_model_names_cover_the_configs():
  assert {model for _, model, _, _ in CONFIGS.values()
         } == set(models.CLASSIFIER_NAMES)
