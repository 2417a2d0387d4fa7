"""Sinusoidal embeddings of scalar conditioning (diffusion time, aug level).

A scalar in [0, 1000] (the step index rescaled to that range, or the noise
level mapped onto it, see `cdm_tf.diffusion.noise_conditioning`) is turned
into a vector of sines and cosines of geometrically spaced frequencies, as in
the Transformer position encoding used by DDPM, then through a two-layer MLP
with SiLU (Improved DDPM / ADM).
"""

import math

import keras
from keras import ops

DEFAULT_MAX_PERIOD = 10000.0


def sinusoidal_embedding(values, dim, max_period=DEFAULT_MAX_PERIOD):
  """Sinusoidal features of a batch of scalars.

  Args:
    values: float tensor [B] (e.g. diffusion times in [0, 1000]).
    dim: number of features; the first half are cosines, the second half
      sines (an odd `dim` gets one zero feature at the end).
    max_period: the longest period; frequencies run geometrically from 1 to
      1 / max_period.

  Returns:
    float32 tensor [B, dim].
  """
  if dim < 2:
    raise ValueError(f"Sinusoidal embedding needs dim >= 2, got {dim}.")
  # Always float32: bfloat16 cannot even represent integers above 256.
  values = ops.cast(values, "float32")
  half = dim // 2
  exponents = ops.arange(half, dtype="float32") / float(half)
  frequencies = ops.exp(-math.log(max_period) * exponents)
  angles = ops.expand_dims(values, -1) * ops.expand_dims(frequencies, 0)
  features = ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1)
  if dim % 2:
    features = ops.pad(features, [[0, 0], [0, 1]])
  return features


@keras.saving.register_keras_serializable(package="cdm_tf")
class ScalarEmbedding(keras.layers.Layer):
  """Sinusoidal features of a scalar followed by Dense -> SiLU -> Dense.

  Used for the diffusion time and for the conditioning-augmentation level of
  a super-resolution model (CDM Sec. 3.2: "an extra time embedding input").

  Args:
    sinusoidal_dim: number of sinusoidal features (ADM: the base channels).
    embed_dim: width of both Dense layers (ADM: 4 * base channels).
    max_period: longest sinusoid period.
  """

  def __init__(self, sinusoidal_dim, embed_dim, max_period=DEFAULT_MAX_PERIOD,
               **kwargs):
    super().__init__(**kwargs)
    self.sinusoidal_dim = int(sinusoidal_dim)
    self.embed_dim = int(embed_dim)
    self.max_period = float(max_period)
    self.hidden = keras.layers.Dense(self.embed_dim, activation="silu",
                                     dtype=self.dtype_policy, name="hidden")
    self.output_projection = keras.layers.Dense(self.embed_dim,
                                                dtype=self.dtype_policy,
                                                name="output_projection")

  @property
  def input_dtype(self):
    # Keep the scalar in float32 under mixed precision; bfloat16 would round
    # a time of 999 to 1000.
    return "float32"

  def build(self, input_shape):
    self.hidden.build((None, self.sinusoidal_dim))
    self.output_projection.build((None, self.embed_dim))
    self.built = True

  def call(self, values):
    features = sinusoidal_embedding(values, self.sinusoidal_dim,
                                    self.max_period)
    return self.output_projection(self.hidden(features))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.embed_dim)

  def get_config(self):
    config = super().get_config()
    config.update({
        "sinusoidal_dim": self.sinusoidal_dim,
        "embed_dim": self.embed_dim,
        "max_period": self.max_period,
    })
    return config
