"""Stochastic depth (Huang et al. 2016): residual branches dropped per example.

While training, the residual branch of a block is replaced by zeros for a
random subset of the examples of a batch (drop-path), and kept branches are
scaled by 1 / (1 - rate) so the expected output equals the inference output;
at inference the layer is the identity. ResNet-RS (``resnet_rs``) and the
vision transformers (``vision_transformers``) use the same layer.

Deeper blocks drop more often. Two linear rules are in use, and each model
keeps the one of the recipe it reproduces (``block_rates``):

* "proportional": block l of L (1-based) drops with rate * l / L, the linear
  decay rule of Huang et al. (2016); the first block already drops rate / L.
  ResNet-RS.
* "linspace": rate * (l - 1) / (L - 1), from 0 at the first block to the
  full rate at the last, timm's ``torch.linspace(0, drop_path_rate, depth)``
  that DeiT (Touvron et al. 2021) trains its vision transformers with.
"""

import keras
from keras import ops

PROPORTIONAL = "proportional"
LINSPACE = "linspace"
RULES = (PROPORTIONAL, LINSPACE)


def block_rates(rate, num_blocks, rule=PROPORTIONAL):
  """Per-block drop rates rising linearly to ``rate`` at the last block.

  Args:
    rate: drop rate of the last block, in [0, 1).
    num_blocks: number of residual blocks L.
    rule: one of ``RULES`` (see the module docstring).

  Returns:
    A list of L floats.
  """
  if rule not in RULES:
    raise ValueError(f"stochastic depth rule must be one of {RULES}, got "
                     f"{rule!r}")
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
  if num_blocks < 1:
    raise ValueError(f"num_blocks must be positive, got {num_blocks}")
  if rule == PROPORTIONAL:
    return [rate * (index + 1) / num_blocks for index in range(num_blocks)]
  if num_blocks == 1:
    return [0.0]  # torch.linspace(0, rate, 1) is [0]
  return [rate * index / (num_blocks - 1) for index in range(num_blocks)]


@keras.saving.register_keras_serializable(package="cdm_tf")
class StochasticDepth(keras.layers.Layer):
  """Drops a residual branch per example while training (drop-path).

  Kept branches are scaled by 1 / (1 - rate) so the expected output equals
  the inference output, which is the identity.

  Args:
    rate: probability of dropping the branch of one example.
    seed: optional int for the layer's random stream.
    **kwargs: keras.layers.Layer arguments.
  """

  def __init__(self, rate, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
    self.rate = float(rate)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs, training=None):
    if not training or self.rate == 0.0:
      return inputs
    keep_probability = 1.0 - self.rate
    shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    keep = ops.floor(keep_probability + keras.random.uniform(
        shape, seed=self.seed_generator, dtype=inputs.dtype))
    return inputs / keep_probability * keep

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "rate": self.rate, "seed": self.seed}
