"""ResNet-RS backbones (Bello et al. 2021, "Revisiting ResNets").

Azizi et al. (2023, Table 3) train ResNet-RS-50/101/152 from scratch; Keras
and keras-hub ship no ResNet-RS, so it is built here from the paper's
definition:

* ResNet-D stem: three 3x3 convolutions (32, 32, 64 filters, the first with
  stride 2) instead of the 7x7 convolution; the stem's 3x3 max pool is
  removed, so the first bottleneck block of every stage downsamples (stage
  strides 2, 2, 2, 2; the total stride stays 32).
* Bottleneck blocks with the stride on the 3x3 convolution (ResNet v1.5 /
  ResNet-D) and, on downsampling shortcuts, a 2x2 stride-2 average pool
  followed by a stride-1 1x1 convolution (ResNet-D) instead of a strided 1x1
  convolution that would skip three quarters of the input.
* Squeeze-and-excitation in every block with ratio 0.25 of the block's
  output width.
* Stochastic depth: the residual branch of block l of L is dropped per
  example with rate ``stochastic_depth_rate * l / L`` (the linear rule of
  Huang et al. 2016; ``stochastic_depth``'s "proportional" rule), so the
  last block has the full rate.
* ReLU activations by default (the paper's ResNet-D); ``activation`` can be
  set to e.g. "swish", which the TF Model Garden's ResNet-RS configs use.

The backbone outputs the last feature map [B, H/32, W/32, 2048 * width];
``cdm_tf.classifiers.models.ImageClassifier`` adds pooling, dropout and the
head. Every layer has ``get_config`` and is registered for saving; nothing
is global (random state lives in each layer's ``SeedGenerator``).
"""

import keras
from keras import ops

from cdm_tf.classifiers import stochastic_depth

# Bottleneck blocks per stage for each depth (Bello et al. 2021, Table 7).
BLOCKS_PER_STAGE = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STEM_FILTERS = (32, 32, 64)
STAGE_FILTERS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
SE_RATIO = 0.25
# Batch-norm settings of the TPU ResNet family the paper builds on.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _conv(filters, kernel_size, strides=1, dtype=None, name=None):
  # He-normal (fan-out) init as in the ResNet papers; BN follows, so no bias.
  return keras.layers.Conv2D(
      filters, kernel_size, strides=strides, padding="same", use_bias=False,
      kernel_initializer=keras.initializers.VarianceScaling(
          2.0, mode="fan_out",
          distribution="untruncated_normal"), dtype=dtype, name=name)


def _batch_norm(momentum, epsilon, zero_gamma=False, dtype=None, name=None):
  return keras.layers.BatchNormalization(
      momentum=momentum, epsilon=epsilon,
      gamma_initializer="zeros" if zero_gamma else "ones", dtype=dtype,
      name=name)


@keras.saving.register_keras_serializable(package="cdm_tf")
class SqueezeExcitation(keras.layers.Layer):
  """Channel gating of Hu et al. (2018): global pool, bottleneck, sigmoid.

  Args:
    filters: channels of the input and of the gate.
    ratio: bottleneck width as a fraction of ``filters``.
    **kwargs: keras.layers.Layer arguments.
  """

  def __init__(self, filters, ratio=SE_RATIO, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.ratio = float(ratio)
    self.reduced_filters = max(1, int(self.filters * self.ratio))
    self.reduce = keras.layers.Conv2D(self.reduced_filters, 1,
                                      activation="relu",
                                      dtype=self.dtype_policy, name="reduce")
    self.expand = keras.layers.Conv2D(self.filters, 1, activation="sigmoid",
                                      dtype=self.dtype_policy, name="expand")

  def build(self, input_shape):
    pooled_shape = (input_shape[0], 1, 1, input_shape[-1])
    self.reduce.build(pooled_shape)
    self.expand.build(pooled_shape[:-1] + (self.reduced_filters,))

  def call(self, inputs):
    gate = ops.mean(inputs, axis=(1, 2), keepdims=True)
    return inputs * self.expand(self.reduce(gate))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {
        **super().get_config(), "filters": self.filters, "ratio": self.ratio
    }


@keras.saving.register_keras_serializable(package="cdm_tf")
class BottleneckBlock(keras.layers.Layer):
  """ResNet-D bottleneck block with squeeze-excitation and drop-path.

  Residual branch: 1x1 conv -> 3x3 conv with ``strides`` -> 1x1 conv to
  ``BOTTLENECK_EXPANSION * filters`` (each with batch norm; activation after
  the first two) -> squeeze-excitation -> stochastic depth. Shortcut: identity,
  or, when ``project_shortcut``, [2x2 stride-2 average pool if strides > 1]
  -> stride-1 1x1 conv -> batch norm. Output: activation(shortcut +
  residual).

  Args:
    filters: bottleneck width; the block outputs 4x as many channels.
    strides: 1 or 2, applied by the 3x3 conv and the shortcut's pool.
    project_shortcut: project the shortcut (first block of a stage).
    se_ratio: squeeze-excitation ratio of the output width; 0 disables it.
    drop_rate: stochastic depth rate of the residual branch.
    zero_init_residual: start the last batch norm's gamma at 0 so that each
      block starts as the identity (Goyal et al. 2017).
    bn_momentum: batch norm moving-average momentum.
    bn_epsilon: batch norm epsilon.
    activation: name of the nonlinearity.
    seed: optional int seeding the drop-path stream.
    **kwargs: keras.layers.Layer arguments.
  """

  def __init__(self, filters, strides=1, project_shortcut=False,
               se_ratio=SE_RATIO, drop_rate=0.0, zero_init_residual=True,
               bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON,
               activation="relu", seed=None, **kwargs):
    super().__init__(**kwargs)
    if strides not in (1, 2):
      raise ValueError(f"strides must be 1 or 2, got {strides}")
    if strides > 1 and not project_shortcut:
      raise ValueError("a downsampling block needs project_shortcut=True")
    self.filters = int(filters)
    self.strides = int(strides)
    self.project_shortcut = bool(project_shortcut)
    self.se_ratio = float(se_ratio)
    self.drop_rate = float(drop_rate)
    self.zero_init_residual = bool(zero_init_residual)
    self.bn_momentum = float(bn_momentum)
    self.bn_epsilon = float(bn_epsilon)
    self.activation = activation
    self.activation_fn = keras.activations.get(activation)
    self.seed = seed
    out_filters = BOTTLENECK_EXPANSION * self.filters

    dtype = self.dtype_policy

    def conv(filters, kernel_size, name, strides=1):
      return _conv(filters, kernel_size, strides, dtype=dtype, name=name)

    def bn(name, zero_gamma=False):
      return _batch_norm(self.bn_momentum, self.bn_epsilon, zero_gamma,
                         dtype=dtype, name=name)

    self.conv1 = conv(self.filters, 1, "conv1")
    self.bn1 = bn("bn1")
    self.conv2 = conv(self.filters, 3, "conv2", strides=self.strides)
    self.bn2 = bn("bn2")
    self.conv3 = conv(out_filters, 1, "conv3")
    self.bn3 = bn("bn3", zero_gamma=self.zero_init_residual)
    self.squeeze_excitation = (SqueezeExcitation(out_filters, self.se_ratio,
                                                 dtype=dtype, name="se")
                               if self.se_ratio > 0 else None)
    self.stochastic_depth = stochastic_depth.StochasticDepth(
        self.drop_rate, seed=seed, dtype=dtype, name="stochastic_depth")
    self.shortcut_pool = None
    self.shortcut_conv = None
    self.shortcut_bn = None
    if self.project_shortcut:
      if self.strides > 1:
        self.shortcut_pool = keras.layers.AveragePooling2D(
            pool_size=2, strides=self.strides, padding="same", dtype=dtype,
            name="shortcut_pool")
      self.shortcut_conv = conv(out_filters, 1, "shortcut_conv")
      self.shortcut_bn = bn("shortcut_bn")

  def build(self, input_shape):
    batch, height, width, channels = input_shape
    if not self.project_shortcut and (channels
                                      != BOTTLENECK_EXPANSION * self.filters):
      raise ValueError(f"identity shortcut needs {4 * self.filters} input "
                       f"channels, got {channels}")

    def down(side):
      return None if side is None else -(-side // self.strides)

    out_height, out_width = down(height), down(width)
    self.conv1.build(input_shape)
    self.bn1.build((batch, height, width, self.filters))
    self.conv2.build((batch, height, width, self.filters))
    self.bn2.build((batch, out_height, out_width, self.filters))
    self.conv3.build((batch, out_height, out_width, self.filters))
    out_shape = (batch, out_height, out_width,
                 BOTTLENECK_EXPANSION * self.filters)
    self.bn3.build(out_shape)
    if self.squeeze_excitation is not None:
      self.squeeze_excitation.build(out_shape)
    if self.project_shortcut:
      self.shortcut_conv.build((batch, out_height, out_width, channels))
      self.shortcut_bn.build(out_shape)

  def call(self, inputs, training=None):
    x = self.activation_fn(self.bn1(self.conv1(inputs), training=training))
    x = self.activation_fn(self.bn2(self.conv2(x), training=training))
    x = self.bn3(self.conv3(x), training=training)
    if self.squeeze_excitation is not None:
      x = self.squeeze_excitation(x)
    x = self.stochastic_depth(x, training=training)
    shortcut = inputs
    if self.project_shortcut:
      if self.shortcut_pool is not None:
        shortcut = self.shortcut_pool(shortcut)
      shortcut = self.shortcut_bn(self.shortcut_conv(shortcut),
                                  training=training)
    return self.activation_fn(shortcut + x)

  def compute_output_shape(self, input_shape):
    batch, height, width, _ = input_shape
    if self.strides > 1:
      height = None if height is None else -(-height // self.strides)
      width = None if width is None else -(-width // self.strides)
    return (batch, height, width, BOTTLENECK_EXPANSION * self.filters)

  def get_config(self):
    return {
        **super().get_config(), "filters": self.filters,
        "strides": self.strides, "project_shortcut": self.project_shortcut,
        "se_ratio": self.se_ratio, "drop_rate": self.drop_rate,
        "zero_init_residual": self.zero_init_residual,
        "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
        "activation": self.activation, "seed": self.seed
    }


@keras.saving.register_keras_serializable(package="cdm_tf")
class ResNetRS(keras.Model):
  """ResNet-RS feature extractor: ResNet-D stem and SE bottleneck stages.

  Args:
    depth: 50, 101 or 152 (sets ``BLOCKS_PER_STAGE``), or None with
      ``blocks_per_stage`` given.
    blocks_per_stage: blocks of each stage; overrides ``depth`` (tiny
      test models).
    stem_filters: widths of the three stem convolutions.
    stage_filters: bottleneck width of each stage.
    se_ratio: squeeze-excitation ratio.
    stochastic_depth_rate: drop rate of the last block; earlier blocks get
      linearly smaller rates.
    zero_init_residual: zero-initialise each block's last batch-norm gamma.
    bn_momentum: batch norm momentum.
    bn_epsilon: batch norm epsilon.
    activation: name of the nonlinearity.
    seed: optional int; block i's drop-path stream uses seed + i.
    **kwargs: keras.Model arguments (name, dtype, ...).

  Call on images [B, H, W, 3] (already normalised); returns features
  [B, ceil(H/32), ceil(W/32), 4 * stage_filters[-1]].
  """

  def __init__(self, depth=50, blocks_per_stage=None, stem_filters=STEM_FILTERS,
               stage_filters=STAGE_FILTERS, se_ratio=SE_RATIO,
               stochastic_depth_rate=0.0, zero_init_residual=True,
               bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON,
               activation="relu", seed=None, **kwargs):
    super().__init__(**kwargs)
    if blocks_per_stage is None:
      if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"depth must be one of {sorted(BLOCKS_PER_STAGE)},"
                         f" got {depth}")
      blocks_per_stage = BLOCKS_PER_STAGE[depth]
    if len(blocks_per_stage) != len(stage_filters):
      raise ValueError("blocks_per_stage and stage_filters differ in length")
    if len(stem_filters) != 3:
      raise ValueError("the ResNet-D stem has three convolutions")
    self.depth = depth
    self.blocks_per_stage = tuple(int(b) for b in blocks_per_stage)
    self.stem_filters = tuple(int(f) for f in stem_filters)
    self.stage_filters = tuple(int(f) for f in stage_filters)
    self.se_ratio = float(se_ratio)
    self.stochastic_depth_rate = float(stochastic_depth_rate)
    self.zero_init_residual = bool(zero_init_residual)
    self.bn_momentum = float(bn_momentum)
    self.bn_epsilon = float(bn_epsilon)
    self.activation = activation
    self.activation_fn = keras.activations.get(activation)
    self.seed = seed

    self.stem_convs = []
    self.stem_norms = []
    for index, filters in enumerate(self.stem_filters):
      self.stem_convs.append(
          _conv(filters, 3, strides=2 if index == 0 else 1,
                dtype=self.dtype_policy, name=f"stem_conv{index + 1}"))
      self.stem_norms.append(
          _batch_norm(self.bn_momentum, self.bn_epsilon,
                      dtype=self.dtype_policy, name=f"stem_bn{index + 1}"))

    rates = stochastic_depth.block_rates(self.stochastic_depth_rate,
                                         sum(self.blocks_per_stage))
    self.blocks = []
    for stage, (filters, count) in enumerate(
        zip(self.stage_filters, self.blocks_per_stage)):
      for index in range(count):
        block_number = len(self.blocks)
        self.blocks.append(
            BottleneckBlock(filters, strides=2 if index == 0 else 1,
                            project_shortcut=index == 0, se_ratio=self.se_ratio,
                            drop_rate=rates[block_number],
                            zero_init_residual=self.zero_init_residual,
                            bn_momentum=self.bn_momentum,
                            bn_epsilon=self.bn_epsilon,
                            activation=self.activation,
                            seed=None if seed is None else seed + block_number,
                            dtype=self.dtype_policy,
                            name=f"stage{stage + 1}_block{index + 1}"))

  def build(self, input_shape):
    shape = tuple(input_shape)
    for conv, norm in zip(self.stem_convs, self.stem_norms):
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
      norm.build(shape)
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)
    self.built = True

  def call(self, inputs, training=None):
    x = inputs
    for conv, norm in zip(self.stem_convs, self.stem_norms):
      x = self.activation_fn(norm(conv(x), training=training))
    for block in self.blocks:
      x = block(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    for conv in self.stem_convs:
      shape = conv.compute_output_shape(shape)
    for block in self.blocks:
      shape = block.compute_output_shape(shape)
    return shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "name": self.name,
        "depth": self.depth,
        "blocks_per_stage": list(self.blocks_per_stage),
        "stem_filters": list(self.stem_filters),
        "stage_filters": list(self.stage_filters),
        "se_ratio": self.se_ratio,
        "stochastic_depth_rate": self.stochastic_depth_rate,
        "zero_init_residual": self.zero_init_residual,
        "bn_momentum": self.bn_momentum,
        "bn_epsilon": self.bn_epsilon,
        "activation": self.activation,
        "seed": self.seed,
    })
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)
