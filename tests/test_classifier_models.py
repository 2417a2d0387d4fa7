"""The classifiers of Table 3: tiny versions train, ResNet-RS has the
paper's structure, configs round-trip, and full-size parameter counts of the
smaller models match their gin files and the published sizes."""

import gc
import os
import re

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import recipes
from cdm_tf.classifiers import resnet_rs
from cdm_tf.classifiers import stochastic_depth
from cdm_tf.classifiers import vision_transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4
IMAGE_SIZE = 32


def _batch(count=8):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (count, IMAGE_SIZE, IMAGE_SIZE, 3))
  labels = np.arange(count) % NUM_CLASSES
  return (images.astype("float32"), np.eye(NUM_CLASSES,
                                           dtype="float32")[labels])


@pytest.mark.parametrize("name", models.CLASSIFIER_NAMES)
def test_tiny_model_trains_with_falling_loss(name):
  keras.utils.set_random_seed(0)
  # ResNet-RS and the transformers train with drop-path on, to cover its
  # training path too.
  model = models.create_classifier(
      name, NUM_CLASSES, IMAGE_SIZE, tiny=True,
      stochastic_depth_rate=0.0 if name in models.RESNET_BLOCKS else 0.1)
  images, labels = _batch()
  logits = model(images, training=False)
  assert logits.shape == (8, NUM_CLASSES) and logits.dtype == "float32"
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                jit_compile=False, run_eagerly=True)
  history = model.fit(images, labels, batch_size=8, epochs=5, verbose=0)
  losses = history.history["loss"]
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0]


def test_recipe_pieces_train_a_tiny_model():
  """DeiT-S's optimizer, RandAugment, mixup / cutmix and loss in model.fit."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [os.path.join(ROOT, "gin", "classifiers", "deit_s.gin")], [])
  try:
    recipe = gin.get_configurable(recipes.ClassifierRecipe)()
    optimizer = gin.get_configurable(recipes.create_optimizer)(
        recipe, steps_per_epoch=2, global_batch_size=4)
  finally:
    gin.clear_config()
  keras.utils.set_random_seed(0)
  model = models.create_classifier("deit_s", NUM_CLASSES, IMAGE_SIZE,
                                   dropout_rate=recipe.dropout_rate, tiny=True)
  augmentation = recipes.create_training_augmentation(recipe, NUM_CLASSES,
                                                      seed=0)
  images, labels = _batch()
  dataset = augmentation.apply(
      tf.data.Dataset.from_tensor_slices((images, labels.argmax(1))),
      batch_size=4)
  model.compile(optimizer=optimizer, loss=recipes.create_loss(recipe),
                jit_compile=False, run_eagerly=True)
  history = model.fit(dataset, epochs=3, shuffle=False, verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  assert int(optimizer.iterations) == 6


def test_weight_decay_reaches_kernels_and_nothing_else():
  recipe = recipes.ClassifierRecipe(epochs=10, batch_size=8, optimizer="adamw",
                                    learning_rate=0.1, decay="cosine",
                                    weight_decay=0.5, warmup_epochs=0)
  model = models.create_classifier("deit_s", NUM_CLASSES, IMAGE_SIZE, tiny=True)
  variables = model.trainable_variables
  before = [v.numpy().copy() for v in variables]
  optimizer = recipes.create_optimizer(recipe, steps_per_epoch=10)
  optimizer.apply([tf.zeros_like(v) for v in variables], variables)
  for variable, old in zip(variables, before):
    if variable.name == "kernel":
      np.testing.assert_allclose(variable.numpy(), old * (1 - 0.1 * 0.5),
                                 rtol=1e-5, atol=1e-7)
    else:
      np.testing.assert_array_equal(variable.numpy(), old,
                                    err_msg=variable.path)


@pytest.mark.parametrize("name", ["resnet_rs50", "vit_s16"])
def test_logits_are_float32_under_mixed_bfloat16(name):
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = models.create_classifier(name, NUM_CLASSES, IMAGE_SIZE, tiny=True)
    logits = model(_batch(2)[0], training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert logits.dtype == "float32"
  assert model.head.dtype_policy.name == "float32"
  assert np.all(np.isfinite(logits.numpy()))


def test_resnet_rs_stem_and_resnet_d_shortcuts():
  backbone = resnet_rs.ResNetRS(depth=50)
  assert [c.kernel_size for c in backbone.stem_convs] == [(3, 3)] * 3
  assert [c.strides for c in backbone.stem_convs] == [(2, 2), (1, 1), (1, 1)]
  assert [c.filters for c in backbone.stem_convs] == [32, 32, 64]
  assert len(backbone.blocks) == 16
  first_blocks = [b for b in backbone.blocks if b.project_shortcut]
  assert [b.name for b in first_blocks] == [
      "stage1_block1", "stage2_block1", "stage3_block1", "stage4_block1"
  ]
  for block in backbone.blocks:
    if block.project_shortcut:
      # ResNet-D: average pool, then a stride-1 1x1 projection.
      assert isinstance(block.shortcut_pool, keras.layers.AveragePooling2D)
      assert block.shortcut_pool.pool_size == (2, 2)
      assert block.shortcut_pool.strides == (2, 2)
      assert block.shortcut_conv.kernel_size == (1, 1)
      assert block.shortcut_conv.strides == (1, 1)
      # The stride sits on the 3x3 convolution.
      assert block.conv1.strides == (1, 1)
      assert block.conv2.strides == (2, 2) and block.conv2.kernel_size == (3, 3)
    else:
      assert block.shortcut_conv is None and block.strides == 1
  # Total stride 32 without a max pool.
  assert backbone.compute_output_shape(
      (None, 160, 160, 3)) == (None, 5, 5, 2048)
  assert not any(
      isinstance(layer, keras.layers.MaxPooling2D)
      for layer in backbone._flatten_layers())


@pytest.mark.parametrize("depth,blocks", [(50, (3, 4, 6, 3)),
                                          (101, (3, 4, 23, 3)),
                                          (152, (3, 8, 36, 3))])
def test_resnet_rs_depths_and_squeeze_excitation(depth, blocks):
  backbone = resnet_rs.ResNetRS(depth=depth)
  assert backbone.blocks_per_stage == blocks
  counts = [
      sum(b.name.startswith(f"stage{s}_")
          for b in backbone.blocks)
      for s in range(1, 5)
  ]
  assert tuple(counts) == blocks
  for block in backbone.blocks:
    se = block.squeeze_excitation
    assert isinstance(se, resnet_rs.SqueezeExcitation)
    assert se.filters == 4 * block.filters
    assert se.reduced_filters == block.filters  # ratio 0.25 of 4 * filters


def test_stochastic_depth_rates_rise_linearly_to_the_final_rate():
  backbone = resnet_rs.ResNetRS(depth=101, stochastic_depth_rate=0.2)
  rates = np.array([block.drop_rate for block in backbone.blocks])
  assert len(rates) == 33
  np.testing.assert_allclose(rates, 0.2 * np.arange(1, 34) / 33)
  np.testing.assert_allclose(np.diff(rates), 0.2 / 33)
  assert rates[-1] == pytest.approx(0.2)
  assert all(block.stochastic_depth.rate == block.drop_rate
             for block in backbone.blocks)


def test_stochastic_depth_drops_whole_examples_and_keeps_the_mean():
  layer = stochastic_depth.StochasticDepth(0.5, seed=1)
  x = tf.ones((2000, 2, 2, 3))
  np.testing.assert_array_equal(layer(x, training=False), x)
  y = layer(x, training=True).numpy()
  per_example = y.reshape(2000, -1)
  assert np.all(per_example.min(axis=1) == per_example.max(axis=1))
  assert set(np.unique(y)) <= {0.0, 2.0}
  assert abs(y.mean() - 1.0) < 0.1


def test_keras_hub_resnets_reject_stochastic_depth():
  with pytest.raises(ValueError, match="no stochastic depth"):
    models.create_classifier("resnet50", NUM_CLASSES, IMAGE_SIZE,
                             stochastic_depth_rate=0.1, tiny=True)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    models.create_classifier("deit_s", NUM_CLASSES, IMAGE_SIZE,
                             stochastic_depth_rate=1.0, tiny=True)
  with pytest.raises(ValueError):
    models.create_classifier("vit_b16", NUM_CLASSES, IMAGE_SIZE)


@pytest.mark.parametrize("name", ["vit_s16", "deit_l"])
def test_transformers_take_stochastic_depth(name):
  model = models.create_classifier(name, NUM_CLASSES, IMAGE_SIZE, tiny=True,
                                   stochastic_depth_rate=0.2, seed=3)
  backbone = model.backbone
  assert isinstance(backbone, (vision_transformers.ViTDropPathBackbone,
                               vision_transformers.DeiTDropPathBackbone))
  # Tiny: two blocks, 0 then the full rate (DeiT's linspace rule).
  assert [b.drop_path_rate for b in backbone.blocks] == [0.0, 0.2]
  images = _batch(4)[0]
  np.testing.assert_array_equal(model(images, training=False),
                                model(images, training=False))


def test_resnet_sizes_change_widths_and_stage_strides():
  default = models.create_classifier("resnet50", NUM_CLASSES, 32, tiny=True)
  # Stem stride 4, then stages 1, 2, 2, 2: a 1 x 1 map of 4 x 16 channels.
  assert default.backbone.output_shape == (None, 1, 1, 64)
  sized = models.create_classifier(
      "resnet50", NUM_CLASSES, 32, tiny=True, resnet_sizes={
          "input_conv_filters": [32],
          "stackwise_num_filters": [64, 32, 64,
                                    128], "stackwise_num_strides": [1, 1, 2, 2]
      })
  # 32 / 4 / 2 / 2 = 2; the last stage's bottleneck widens 128 x 4.
  assert sized.backbone.output_shape == (None, 2, 2, 512)
  stem = sized.backbone.get_layer("conv1_conv")
  assert stem.filters == 32 and stem.kernel_size == (7, 7)
  assert sized.get_config()["backbone"]["config"]["stackwise_num_strides"] == [
      1, 1, 2, 2
  ]
  # Reports name what was built, not the full-size architecture.
  assert default.name == "resnet50_tiny"
  assert sized.name == "resnet50_tiny_resized"
  with pytest.raises(ValueError, match="unknown keys"):
    models.create_classifier("resnet50", NUM_CLASSES, 32, tiny=True,
                             resnet_sizes={"stem_strides": [1]})
  with pytest.raises(ValueError, match="resnet_sizes"):
    models.create_classifier("deit_s", NUM_CLASSES, 32, tiny=True,
                             resnet_sizes={"stackwise_num_blocks": [1]})


def test_resnet_rs_config_round_trip():
  backbone = resnet_rs.ResNetRS(stochastic_depth_rate=0.1, seed=3,
                                **models.TINY_RESNET_RS)
  backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
  restored = resnet_rs.ResNetRS.from_config(backbone.get_config())
  restored.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
  assert restored.get_config() == backbone.get_config()
  assert restored.count_params() == backbone.count_params()
  block = backbone.blocks[0]
  restored_block = resnet_rs.BottleneckBlock.from_config(block.get_config())
  assert restored_block.get_config() == block.get_config()
  assert restored_block.drop_rate == block.drop_rate


@pytest.mark.parametrize("name", ["resnet_rs50", "deit_b", "vit_s16"])
def test_classifier_saves_and_loads(name, tmp_path):
  model = models.create_classifier(name, NUM_CLASSES, IMAGE_SIZE,
                                   dropout_rate=0.25, tiny=True,
                                   stochastic_depth_rate=0.1, seed=1)
  path = str(tmp_path / f"{name}.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, models.ImageClassifier)
  assert loaded.dropout_rate == 0.25
  assert type(loaded.backbone) is type(model.backbone)
  assert loaded.backbone.get_config() == model.backbone.get_config()
  images = _batch(2)[0]
  np.testing.assert_allclose(loaded(images, training=False),
                             model(images, training=False), rtol=1e-5,
                             atol=1e-5)


# Full size with 1000 classes: the gin file's stated count, and the size
# published for the architecture (ResNet-RS-50: 35.7M, Bello et al. 2021;
# ViT-S/16 and DeiT-S: 22M; ResNet-50: 25.6M trainable).
FULL_SIZE = {
    "resnet_rs50": 35.7e6,
    "vit_s16": 22.05e6,
    "deit_s": 22.05e6,
    "resnet50_cas": 25.56e6,
}


@pytest.mark.parametrize("config", sorted(FULL_SIZE))
def test_full_size_parameter_count(config):
  path = os.path.join(ROOT, "gin", "classifiers", f"{config}.gin")
  with open(path) as f:
    stated = re.search(r"Parameters: ([\d,]+) with 1000 classes", f.read())
  assert stated, f"{path} does not state its parameter count"
  gin.clear_config()
  gin.parse_config_files_and_bindings([path], [])
  try:
    model = gin.get_configurable(models.create_classifier)()
  finally:
    gin.clear_config()
  assert model.count_params() == int(stated.group(1).replace(",", ""))
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert trainable == pytest.approx(FULL_SIZE[config], rel=0.005)
  del model
  gc.collect()
