"""The ImageNet classifiers of Azizi et al. (2023, Table 3), from scratch.

``create_classifier(name, ...)`` is the one factory gin files bind. Every
model is randomly initialised (nothing is downloaded) and is an
``ImageClassifier``: input normalisation, a backbone, pooling, dropout and a
float32 dense head, so logits are float32 [B, num_classes] under a
``mixed_bfloat16`` policy too.

Architectures:

* resnet50 / resnet101 / resnet152: keras-hub ``ResNetBackbone`` configured
  as ResNet v1.5 (7x7 stem, max pool, bottleneck blocks with the stride on
  the 3x3 convolution, strided 1x1 projection shortcuts).
* resnet_rs50 / resnet_rs101 / resnet_rs152: ``resnet_rs.ResNetRS`` (built
  here; keras-hub has no ResNet-RS).
* vit_s16: keras-hub's ViT (``vision_transformers.ViTDropPathBackbone``) at
  ViT-S/16 size (width 384, depth 12, 6 heads, MLP 1536, patch 16) as Beyer
  et al. (2022) train it: no class token, global average pooling of the
  tokens, zero-initialised head.
* deit_s / deit_b: keras-hub's DeiT
  (``vision_transformers.DeiTDropPathBackbone``) at the DeiT paper's sizes
  (Touvron et al. 2021, Table 1): S = 384 / 12 / 6 heads / MLP 1536,
  B = 768 / 12 / 12 / 3072, patch 16, classified from the class token.
* deit_l: the DeiT paper defines no "L"; Table 3's 307M parameters are
  ViT-L/16-sized (304M), so DeiT-L takes ViT-L/16's sizes (1024 / 24 / 16 /
  4096).

keras-hub's DeiT embedding always carries a distillation token; trained
without a teacher (as here) it is one more learned token that the head does
not read.

Stochastic depth (``stochastic_depth_rate``): ResNet-RS and the
transformers have it (the transformers' backbones are keras-hub's layers
with drop-path added, ``vision_transformers``; at rate 0 they compute
exactly what keras-hub's ``ViTBackbone`` / ``DeiTBackbone`` compute); the
keras-hub ResNets have none.

``tiny=True`` keeps each family's code path and structure at 20-110K
parameters (e.g. at 32 x 32, patch 8), for tests that train a few steps on
CPU.
"""

import keras
import keras_hub

from cdm_tf.classifiers import resnet_rs
from cdm_tf.classifiers import vision_transformers

# ImageNet channel statistics for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Beyer et al. (2022) feed ViTs pixels scaled to [-1, 1].
MINUS_ONE_TO_ONE_MEAN = (0.5, 0.5, 0.5)
MINUS_ONE_TO_ONE_STD = (0.5, 0.5, 0.5)

RESNET_BLOCKS = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}
RESNET_RS_DEPTHS = {"resnet_rs50": 50, "resnet_rs101": 101, "resnet_rs152": 152}
# (hidden width, depth, heads, MLP width); patch 16 throughout.
TRANSFORMER_SIZES = {
    "vit_s16": (384, 12, 6, 1536),
    "deit_s": (384, 12, 6, 1536),
    "deit_b": (768, 12, 12, 3072),
    "deit_l": (1024, 24, 16, 4096),
}
PATCH_SIZE = 16
CLASSIFIER_NAMES = (tuple(RESNET_BLOCKS) + tuple(RESNET_RS_DEPTHS) +
                    tuple(TRANSFORMER_SIZES))

# Tiny versions for tests: same code paths, minimal widths and depths
# (keras-hub requires 64 filters in the first ResNet stage).
TINY_RESNET = dict(input_conv_filters=[16],
                   stackwise_num_filters=[64, 16, 16, 16],
                   stackwise_num_blocks=[1, 1, 1, 1])
# What ``create_classifier(resnet_sizes=...)`` may change in a ResNet.
RESNET_SIZE_KEYS = ("input_conv_filters", "stackwise_num_filters",
                    "stackwise_num_blocks", "stackwise_num_strides")
TINY_RESNET_RS = dict(blocks_per_stage=(1, 1, 1, 1), stem_filters=(8, 8, 16),
                      stage_filters=(8, 8, 16, 16))
TINY_TRANSFORMER = (32, 2, 2, 64)
TINY_PATCH_SIZE = 8


@keras.saving.register_keras_serializable(package="cdm_tf")
class ImageClassifier(keras.Model):
  """Normalise, extract features, pool, dropout, float32 dense logits.

  Args:
    backbone: a keras.Model mapping images [B, H, W, 3] to a feature map
      [B, h, w, C] or a token sequence [B, N, C].
    num_classes: number of logits.
    pooling: "average" (mean over all feature positions or tokens) or
      "first_token" (the class token of a ViT/DeiT sequence).
    dropout_rate: dropout on the pooled features, before the head.
    input_mean: per-channel mean subtracted from inputs in [0, 1].
    input_std: per-channel standard deviation inputs are divided by.
    head_initializer: kernel initializer of the head (serialisable).
    **kwargs: keras.Model arguments (name, dtype, ...).

  Call on images [B, H, W, 3] in [0, 1] (the output of
  ``cdm_tf.data.classifier_preprocessing``); returns float32 logits
  [B, num_classes]. Once built, ``input_image_shape`` is the (H, W) it was
  built for, which the input pipeline crops to.
  """

  def __init__(self, backbone, num_classes, pooling="average", dropout_rate=0.0,
               input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD,
               head_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if pooling not in ("average", "first_token"):
      raise ValueError(f"unknown pooling {pooling!r}")
    self.backbone = backbone
    self.num_classes = int(num_classes)
    self.pooling = pooling
    self.dropout_rate = float(dropout_rate or 0.0)
    self.input_mean = tuple(float(m) for m in input_mean)
    self.input_std = tuple(float(s) for s in input_std)
    self.head_initializer = keras.initializers.get(head_initializer)
    self.dropout = keras.layers.Dropout(self.dropout_rate,
                                        dtype=self.dtype_policy,
                                        name="head_dropout")
    # A float32 head keeps logits (and the softmax) out of bfloat16.
    self.head = keras.layers.Dense(self.num_classes,
                                   kernel_initializer=self.head_initializer,
                                   dtype="float32", name="head")
    self.input_image_shape = None

  def build(self, input_shape):
    self.input_image_shape = tuple(input_shape[1:3])
    if not self.backbone.built:  # a deserialised backbone comes built
      self.backbone.build(input_shape)
    feature_shape = self.backbone.compute_output_shape(input_shape)
    self.head.build((input_shape[0], feature_shape[-1]))
    self.built = True

  def call(self, images, training=None):
    images = keras.ops.cast(images, self.compute_dtype)
    mean = keras.ops.convert_to_tensor(self.input_mean, self.compute_dtype)
    std = keras.ops.convert_to_tensor(self.input_std, self.compute_dtype)
    features = self.backbone((images - mean) / std, training=training)
    if self.pooling == "first_token":
      pooled = features[:, 0]
    else:
      pooled = keras.ops.mean(features,
                              axis=tuple(range(1,
                                               len(features.shape) - 1)))
    pooled = self.dropout(pooled, training=training)
    return self.head(pooled)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "name": self.name,
        "backbone": keras.saving.serialize_keras_object(self.backbone),
        "num_classes": self.num_classes,
        "pooling": self.pooling,
        "dropout_rate": self.dropout_rate,
        "input_mean": list(self.input_mean),
        "input_std": list(self.input_std),
        "head_initializer": keras.initializers.serialize(self.head_initializer),
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["backbone"] = keras.saving.deserialize_keras_object(
        config["backbone"])
    config["head_initializer"] = keras.initializers.deserialize(
        config["head_initializer"])
    return cls(**config)


def _resnet_backbone(name, image_size, tiny, resnet_sizes=None):
  if tiny:
    sizes = dict(TINY_RESNET)
  else:
    sizes = dict(input_conv_filters=[64],
                 stackwise_num_filters=[64, 128, 256, 512],
                 stackwise_num_blocks=list(RESNET_BLOCKS[name]))
  sizes["stackwise_num_strides"] = [1, 2, 2, 2]
  unknown = set(resnet_sizes or {}) - set(RESNET_SIZE_KEYS)
  if unknown:
    raise ValueError(f"resnet_sizes: unknown keys {sorted(unknown)}; "
                     f"expected some of {RESNET_SIZE_KEYS}")
  sizes.update({k: list(v) for k, v in (resnet_sizes or {}).items()})
  return keras_hub.models.ResNetBackbone(
      input_conv_kernel_sizes=[7] * len(sizes["input_conv_filters"]),
      # "bottleneck_block" puts the stride on the 3x3 convolution: v1.5.
      block_type="bottleneck_block",
      use_pre_activation=False,
      image_shape=(image_size, image_size, 3),
      name=f"{name}_backbone",
      **sizes)


def _transformer_backbone(name, image_size, tiny, stochastic_depth_rate, seed):
  width, depth, heads, mlp = TINY_TRANSFORMER if tiny else (
      TRANSFORMER_SIZES[name])
  patch = TINY_PATCH_SIZE if tiny else PATCH_SIZE
  if image_size % patch:
    raise ValueError(f"{name}: image_size {image_size} is not a multiple "
                     f"of the patch size {patch}")
  sizes = dict(image_size=image_size, patch_size=patch, num_layers=depth,
               num_heads=heads, hidden_dim=width, mlp_dim=mlp,
               stochastic_depth_rate=stochastic_depth_rate, seed=seed,
               name=f"{name}_backbone")
  if name == "vit_s16":
    return vision_transformers.ViTDropPathBackbone(use_class_token=False,
                                                   **sizes)
  return vision_transformers.DeiTDropPathBackbone(**sizes)


def model_name(name, tiny=False, resnet_sizes=None):
  """What a built classifier is called (reports and run files show it):
  ``name``, with "_tiny" for the tiny version and "_resized" when
  ``resnet_sizes`` changed the architecture, so that no table calls a
  100K-parameter network "resnet50"."""
  return name + ("_tiny" if tiny else "") + ("_resized" if resnet_sizes else "")


def create_classifier(name, num_classes=1000, image_size=224, dropout_rate=0.0,
                      stochastic_depth_rate=0.0, tiny=False, seed=None,
                      resnet_sizes=None):
  """Builds one of ``CLASSIFIER_NAMES``, randomly initialised.

  Args:
    name: "resnet50", "resnet101", "resnet152", "resnet_rs50",
      "resnet_rs101", "resnet_rs152", "vit_s16", "deit_s", "deit_b" or
      "deit_l".
    num_classes: number of logits.
    image_size: input side S (Table 3: 224; ResNet-RS-50/101 160, RS-101
      also 190; DeiT-B also 384); transformers need a multiple of 16.
    dropout_rate: dropout before the head (Table A.1 "Dropout rate"); None
      means 0.
    stochastic_depth_rate: drop-path rate of the last block, in [0, 1);
      earlier blocks drop less (ResNet-RS: rate * l / L, transformers: 0 at
      the first block, as DeiT). The keras-hub ResNets have no stochastic
      depth and reject a non-zero rate.
    tiny: a minimal version of the same architecture for tests.
    seed: optional int for the drop-path streams (ResNet-RS, transformers).
    resnet_sizes: ResNets only: {key of ``RESNET_SIZE_KEYS``: list}
      replacing the architecture's (or the tiny version's) widths, depths
      or stage strides, e.g. to keep more resolution on 32 x 32 inputs.

  Returns:
    A built ``ImageClassifier``.
  """
  if name not in CLASSIFIER_NAMES:
    raise ValueError(f"unknown classifier {name!r}; expected one of "
                     f"{CLASSIFIER_NAMES}")
  image_size = int(image_size)
  stochastic_depth_rate = float(stochastic_depth_rate or 0.0)
  if resnet_sizes and name not in RESNET_BLOCKS:
    raise ValueError(f"resnet_sizes is for {tuple(RESNET_BLOCKS)}, not {name}")
  if not 0.0 <= stochastic_depth_rate < 1.0:
    raise ValueError(f"stochastic_depth_rate must be in [0, 1), got "
                     f"{stochastic_depth_rate}")
  if stochastic_depth_rate and name in RESNET_BLOCKS:
    raise ValueError(f"{name} has no stochastic depth; ResNet-RS and the "
                     "transformers do")
  head_initializer = keras.initializers.RandomNormal(stddev=0.01)
  input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD
  pooling = "average"
  if name in RESNET_BLOCKS:
    backbone = _resnet_backbone(name, image_size, tiny, resnet_sizes)
  elif name in RESNET_RS_DEPTHS:
    sizes = TINY_RESNET_RS if tiny else {}
    backbone = resnet_rs.ResNetRS(depth=RESNET_RS_DEPTHS[name],
                                  stochastic_depth_rate=stochastic_depth_rate,
                                  seed=seed, name=f"{name}_backbone", **sizes)
  else:
    backbone = _transformer_backbone(name, image_size, tiny,
                                     stochastic_depth_rate, seed)
    if name == "vit_s16":
      head_initializer = keras.initializers.Zeros()
      input_mean, input_std = MINUS_ONE_TO_ONE_MEAN, MINUS_ONE_TO_ONE_STD
    else:
      head_initializer = keras.initializers.TruncatedNormal(stddev=0.02)
      pooling = "first_token"
  model = ImageClassifier(backbone, num_classes, pooling=pooling,
                          dropout_rate=dropout_rate, input_mean=input_mean,
                          input_std=input_std,
                          head_initializer=head_initializer,
                          name=model_name(name, tiny, resnet_sizes))
  model.build((None, image_size, image_size, 3))
  return model
