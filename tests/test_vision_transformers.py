"""Stochastic depth in the ViT / DeiT backbones: keras-hub's outputs at rate
0 and at inference, per-example drops of both residual branches at the
expected rate while training, DeiT's linear per-block rates, configs."""

import keras
import keras_hub
import numpy as np
import pytest

from cdm_tf.classifiers import stochastic_depth
from cdm_tf.classifiers import vision_transformers

IMAGE_SIZE = 32
SIZES = dict(image_size=IMAGE_SIZE, patch_size=8, num_layers=2, num_heads=2,
             hidden_dim=32, mlp_dim=64)


def _images(count=3):
  return np.random.default_rng(0).normal(size=(count, IMAGE_SIZE, IMAGE_SIZE,
                                               3)).astype("float32")


def _pair(family, rate):
  """keras-hub's backbone and ours with its weights, same sizes."""
  shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
  if family == "vit":
    reference = keras_hub.models.ViTBackbone(image_shape=shape, patch_size=8,
                                             num_layers=2, num_heads=2,
                                             hidden_dim=32, mlp_dim=64,
                                             use_class_token=False)
    ours = vision_transformers.ViTDropPathBackbone(use_class_token=False,
                                                   stochastic_depth_rate=rate,
                                                   seed=0, **SIZES)
  else:
    reference = keras_hub.models.DeiTBackbone(image_shape=shape, patch_size=8,
                                              num_layers=2, num_heads=2,
                                              hidden_dim=32,
                                              intermediate_dim=64)
    ours = vision_transformers.DeiTDropPathBackbone(stochastic_depth_rate=rate,
                                                    seed=0, **SIZES)
  ours.build((None,) + shape)
  ours.set_weights(reference.get_weights())
  return reference, ours


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_rate_zero_is_keras_hubs_backbone(family):
  reference, ours = _pair(family, 0.0)
  assert ours.count_params() == reference.count_params()
  assert [v.shape for v in ours.weights] == [v.shape for v in reference.weights]
  images = _images()
  for training in (False, True):
    np.testing.assert_array_equal(ours(images, training=training),
                                  reference(images, training=training))


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_drop_path_is_the_identity_at_inference(family):
  reference, ours = _pair(family, 0.5)
  images = _images()
  np.testing.assert_array_equal(ours(images, training=False),
                                reference(images, training=False))
  # While training some branch of some example is dropped: outputs differ.
  assert not np.allclose(ours(images, training=True),
                         reference(images, training=True))


def _branch_kept(block, tokens, rate, family):
  """Per example, whether the attention and the MLP branch were kept in one
  training call: the output must match one of the four keep / drop
  combinations computed from the block's own layers."""
  output = block(tokens, training=True)
  if family == "deit":
    output = output[0]
  output = np.asarray(output)
  normed = block.layer_norm_1(tokens)
  attention = np.asarray(block.mha(normed, normed))

  def mlp(x):
    y = block.mlp(block.layer_norm_2(x))
    if family == "deit":
      y = block.output_layer.dense(y)
    return np.asarray(y)

  kept = {}
  for attention_kept in (True, False):
    x = tokens + attention / (1 - rate) if attention_kept else tokens
    branch = mlp(x)
    for mlp_kept in (True, False):
      candidate = x + branch / (1 - rate) if mlp_kept else x
      kept[attention_kept,
           mlp_kept] = np.all(np.abs(output - candidate) < 1e-4, axis=(1, 2))
  matches = np.stack(list(kept.values()), axis=1)
  assert np.all(matches.sum(axis=1) == 1), "an output matched no combination"
  attention_kept = kept[True, True] | kept[True, False]
  mlp_kept = kept[True, True] | kept[False, True]
  return attention_kept, mlp_kept


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_blocks_drop_each_branch_per_example_at_the_rate(family):
  rate, count = 0.3, 1000
  arguments = dict(drop_path_rate=rate, seed=1, num_heads=2, hidden_dim=8)
  if family == "vit":
    block = vision_transformers.ViTDropPathBlock(mlp_dim=16, **arguments)
  else:
    block = vision_transformers.DeiTDropPathBlock(intermediate_dim=16,
                                                  **arguments)
  block.build((None, 3, 8))
  tokens = np.random.default_rng(2).normal(size=(count, 3, 8)).astype("float32")
  attention_kept, mlp_kept = _branch_kept(block, tokens, rate, family)
  # Survival 0.7 of 1000 examples: binomial standard deviation 0.0145.
  tolerance = 4 * np.sqrt(rate * (1 - rate) / count)
  assert abs(attention_kept.mean() - (1 - rate)) < tolerance
  assert abs(mlp_kept.mean() - (1 - rate)) < tolerance
  # The two branches draw independently: both kept with 0.49.
  assert abs((attention_kept & mlp_kept).mean() - (1 - rate)**2) < (tolerance)


def test_block_rates_rules():
  np.testing.assert_allclose(
      stochastic_depth.block_rates(0.1, 5, stochastic_depth.LINSPACE),
      [0.0, 0.025, 0.05, 0.075, 0.1])
  np.testing.assert_allclose(
      stochastic_depth.block_rates(0.3, 3, stochastic_depth.PROPORTIONAL),
      [0.1, 0.2, 0.3])
  assert stochastic_depth.block_rates(0.1, 1,
                                      stochastic_depth.LINSPACE) == [0.0]
  with pytest.raises(ValueError, match="rule"):
    stochastic_depth.block_rates(0.1, 3, "cosine")
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    stochastic_depth.block_rates(1.0, 3)


@pytest.mark.parametrize("cls", [
    vision_transformers.ViTDropPathBackbone,
    vision_transformers.DeiTDropPathBackbone
])
def test_backbone_rates_rise_linearly_from_zero_as_deit(cls):
  backbone = cls(**dict(SIZES, num_layers=12), stochastic_depth_rate=0.1,
                 seed=5)
  rates = [block.drop_path_rate for block in backbone.blocks]
  # timm's torch.linspace(0, 0.1, 12).
  np.testing.assert_allclose(rates, 0.1 * np.arange(12) / 11, atol=1e-12)
  assert [block.drop_path.rate for block in backbone.blocks] == rates
  assert [block.seed for block in backbone.blocks] == list(range(5, 17))


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_block_and_backbone_configs_round_trip(family):
  _, backbone = _pair(family, 0.2)
  restored = type(backbone).from_config(backbone.get_config())
  restored.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
  assert restored.get_config() == backbone.get_config()
  assert restored.count_params() == backbone.count_params()
  block = backbone.blocks[-1]
  restored_block = type(block).from_config(block.get_config())
  assert restored_block.get_config() == block.get_config()
  assert restored_block.drop_path_rate == pytest.approx(0.2)


def test_bad_backbone_arguments_are_value_errors():
  with pytest.raises(ValueError, match="multiple of the patch size"):
    vision_transformers.DeiTDropPathBackbone(**dict(SIZES, image_size=30))
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    vision_transformers.DeiTDropPathBackbone(stochastic_depth_rate=1.0, **SIZES)
  with pytest.raises(ValueError, match="num_heads"):
    vision_transformers.ViTDropPathBackbone(**dict(SIZES, num_heads=3))
  backbone = vision_transformers.ViTDropPathBackbone(**SIZES)
  with pytest.raises(ValueError, match="32 x 32 images"):
    backbone.build((None, 64, 64, 3))


def test_backbone_trains_under_mixed_bfloat16():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    backbone = vision_transformers.DeiTDropPathBackbone(
        stochastic_depth_rate=0.5, seed=0, **SIZES)
    tokens = backbone(_images(2), training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert tokens.shape == (2, 18, 32)  # class + distillation + 16 patches
  assert np.all(np.isfinite(np.asarray(tokens, "float32")))
