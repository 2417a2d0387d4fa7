"""Building blocks of the diffusion U-Net (DDPM / Improved DDPM / ADM / SR3).

All blocks take NHWC tensors. Group normalisation and softmax run in float32
whatever the dtype policy, because bfloat16 statistics over a whole feature
map and bfloat16 attention logits are too coarse to train with.
"""

import math

import keras
from keras import ops

RESAMPLE_MODES = (None, "up", "down")


def group_norm(groups, name):
  """GroupNorm in float32 with the epsilon of the reference implementations."""
  return keras.layers.GroupNormalization(groups=groups, epsilon=1e-5,
                                         dtype="float32", name=name)


def check_group_divisibility(channels, groups, where):
  if channels % groups:
    raise ValueError(
        f"{where}: {channels} channels are not divisible into "
        f"group_norm_groups={groups} groups; choose base_channels, "
        "channel_mult and group_norm_groups so every width is a multiple "
        "of the group count.")


def _resample_layer(mode, dtype, name):
  if mode == "up":
    return keras.layers.UpSampling2D(2, interpolation="nearest", dtype=dtype,
                                     name=name)
  if mode == "down":
    return keras.layers.AveragePooling2D(2, dtype=dtype, name=name)
  return None


@keras.saving.register_keras_serializable(package="cdm_tf")
class ResidualBlock(keras.layers.Layer):
  """ADM residual block with the (time, class, ...) embedding injected.

  GroupNorm -> SiLU -> [resample] -> conv3x3 -> embedding injection ->
  GroupNorm -> SiLU -> dropout -> conv3x3 (zero-initialised), plus a skip path
  (identity, or a 1x1 conv if the width changes).

  Args:
    out_channels: output width.
    embed_dim: width of the embedding passed to `call`.
    dropout: dropout rate before the last conv.
    use_scale_shift_norm: AdaGN, `norm(h) * (1 + scale) + shift` with scale
      and shift projected from the embedding; otherwise the projected
      embedding is added before the second norm (DDPM).
    resample: None, "up" (nearest 2x) or "down" (2x2 average pool), applied
      to both paths between the first norm and conv: BigGAN-style
      up/down-sampling residual blocks.
    group_norm_groups: GroupNorm group count.
  """

  def __init__(self, out_channels, embed_dim, dropout=0.0,
               use_scale_shift_norm=True, resample=None, group_norm_groups=32,
               **kwargs):
    super().__init__(**kwargs)
    if resample not in RESAMPLE_MODES:
      raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got "
                       f"{resample!r}.")
    self.out_channels = int(out_channels)
    self.embed_dim = int(embed_dim)
    self.dropout = float(dropout)
    self.use_scale_shift_norm = bool(use_scale_shift_norm)
    self.resample = resample
    self.group_norm_groups = int(group_norm_groups)
    check_group_divisibility(self.out_channels, self.group_norm_groups,
                             self.name)

    policy = self.dtype_policy
    self.in_norm = group_norm(self.group_norm_groups, "in_norm")
    self.resample_layer = _resample_layer(resample, policy, "resample")
    self.in_conv = keras.layers.Conv2D(self.out_channels, 3, padding="same",
                                       dtype=policy, name="in_conv")
    embed_width = (2 if self.use_scale_shift_norm else 1) * self.out_channels
    self.embed_projection = keras.layers.Dense(embed_width, dtype=policy,
                                               name="embed_projection")
    self.out_norm = group_norm(self.group_norm_groups, "out_norm")
    self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy,
                                              name="dropout")
    # Zero init makes the block the identity (Improved DDPM / Fixup-style).
    self.out_conv = keras.layers.Conv2D(self.out_channels, 3, padding="same",
                                        kernel_initializer="zeros",
                                        dtype=policy, name="out_conv")
    self.skip_projection = None  # Created in build if the width changes.

  def build(self, x_shape, emb_shape):
    in_channels = x_shape[-1]
    check_group_divisibility(in_channels, self.group_norm_groups, self.name)
    batch, height, width = x_shape[0], x_shape[1], x_shape[2]
    if self.resample == "up":
      height, width = height * 2, width * 2
    elif self.resample == "down":
      height, width = height // 2, width // 2
    self.in_norm.build(x_shape)
    self.in_conv.build((batch, height, width, in_channels))
    self.embed_projection.build((None, self.embed_dim))
    out_shape = (batch, height, width, self.out_channels)
    self.out_norm.build(out_shape)
    self.out_conv.build(out_shape)
    if in_channels != self.out_channels:
      self.skip_projection = keras.layers.Conv2D(self.out_channels, 1,
                                                 dtype=self.dtype_policy,
                                                 name="skip_projection")
      self.skip_projection.build((batch, height, width, in_channels))
    self.built = True

  def call(self, x, emb, training=None):
    h = ops.silu(self.in_norm(x))
    if self.resample_layer is not None:
      h = self.resample_layer(h)
      x = self.resample_layer(x)
    h = self.in_conv(h)

    emb_out = self.embed_projection(ops.silu(emb))
    emb_out = ops.cast(emb_out[:, None, None, :], "float32")
    if self.use_scale_shift_norm:
      scale, shift = ops.split(emb_out, 2, axis=-1)
      h = self.out_norm(h) * (1.0 + scale) + shift
    else:
      h = self.out_norm(ops.cast(h, "float32") + emb_out)
    h = ops.silu(h)
    h = self.dropout_layer(h, training=training)
    h = self.out_conv(h)

    skip = x if self.skip_projection is None else self.skip_projection(x)
    return ops.cast(skip, h.dtype) + h

  def compute_output_shape(self, x_shape, emb_shape):
    batch, height, width = x_shape[0], x_shape[1], x_shape[2]
    if self.resample == "up":
      height, width = height * 2, width * 2
    elif self.resample == "down":
      height, width = height // 2, width // 2
    return (batch, height, width, self.out_channels)

  def get_config(self):
    config = super().get_config()
    config.update({
        "out_channels": self.out_channels,
        "embed_dim": self.embed_dim,
        "dropout": self.dropout,
        "use_scale_shift_norm": self.use_scale_shift_norm,
        "resample": self.resample,
        "group_norm_groups": self.group_norm_groups,
    })
    return config


@keras.saving.register_keras_serializable(package="cdm_tf")
class AttentionBlock(keras.layers.Layer):
  """Multi-head self-attention over all pixels, with optional text context.

  GroupNorm -> 1x1 qkv projection -> attention -> 1x1 output projection
  (zero-initialised) -> residual. With `context_dim`, token embeddings are
  projected to extra keys and values that every pixel can attend to,
  alongside the pixels themselves (the GLIDE way of adding cross-attention);
  masked-out tokens get no attention weight.

  Args:
    num_heads: number of heads; or
    head_dim: channels per head (exactly one of the two).
    group_norm_groups: GroupNorm group count.
    context_dim: width of the token embeddings, or None for self-attention
      only.
  """

  def __init__(self, num_heads=None, head_dim=None, group_norm_groups=32,
               context_dim=None, **kwargs):
    super().__init__(**kwargs)
    if (num_heads is None) == (head_dim is None):
      raise ValueError("Give exactly one of num_heads and head_dim, got "
                       f"num_heads={num_heads}, head_dim={head_dim}.")
    self.num_heads = None if num_heads is None else int(num_heads)
    self.head_dim = None if head_dim is None else int(head_dim)
    self.group_norm_groups = int(group_norm_groups)
    self.context_dim = None if context_dim is None else int(context_dim)
    self.norm = group_norm(self.group_norm_groups, "norm")
    # Created in build, once the width is known.
    self.qkv = None
    self.context_kv = None
    self.output_projection = None

  def heads_for(self, channels):
    """(heads, channels per head) for a feature map of `channels`."""
    if self.num_heads is not None:
      if channels % self.num_heads:
        raise ValueError(f"{self.name}: {channels} channels do not split "
                         f"into num_heads={self.num_heads} heads.")
      return self.num_heads, channels // self.num_heads
    if channels % self.head_dim:
      raise ValueError(f"{self.name}: {channels} channels do not split into "
                       f"heads of head_dim={self.head_dim}.")
    return channels // self.head_dim, self.head_dim

  def build(self, input_shape):
    channels = input_shape[-1]
    check_group_divisibility(channels, self.group_norm_groups, self.name)
    self.heads_for(channels)  # Validates the head split.
    policy = self.dtype_policy
    self.norm.build(input_shape)
    self.qkv = keras.layers.Dense(3 * channels, dtype=policy, name="qkv")
    self.qkv.build((None, None, None, channels))
    if self.context_dim is not None:
      self.context_kv = keras.layers.Dense(2 * channels, dtype=policy,
                                           name="context_kv")
      self.context_kv.build((None, None, self.context_dim))
    self.output_projection = keras.layers.Dense(channels,
                                                kernel_initializer="zeros",
                                                dtype=policy,
                                                name="output_projection")
    self.output_projection.build((None, None, None, channels))
    self.built = True

  def _split_heads(self, t, batch, heads, head_dim):
    """[B, N, heads * head_dim] -> [B, heads, N, head_dim]."""
    t = ops.reshape(t, (batch, -1, heads, head_dim))
    return ops.transpose(t, (0, 2, 1, 3))

  def call(self, x, context=None, context_mask=None):
    if (context is None) != (self.context_dim is None):
      raise ValueError(
          f"{self.name}: context is required iff context_dim is set "
          f"(context_dim={self.context_dim}).")
    _, height, width, channels = x.shape
    heads, head_dim = self.heads_for(channels)
    batch = ops.shape(x)[0]

    qkv = self.qkv(self.norm(x))
    # One transpose for q, k and v: [B, N, 3, heads, head_dim] ->
    # [3, B, heads, N, head_dim] (the channel order of a split into q, k, v,
    # each split into heads).
    qkv = ops.reshape(qkv, (batch, height * width, 3, heads, head_dim))
    q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    # The 1/sqrt(head_dim) scale goes on q (N x head_dim values), not on the
    # float32 logits (N x N per head): one pass less over the largest tensor
    # forward and backward. Computed in float32, then rounded once.
    q = ops.cast(ops.cast(q, "float32") * (1.0 / math.sqrt(head_dim)), q.dtype)

    key_mask = None
    if context is not None:
      context_k, context_v = ops.split(self.context_kv(context), 2, axis=-1)
      k = ops.concatenate(
          [k, self._split_heads(context_k, batch, heads, head_dim)], axis=2)
      v = ops.concatenate(
          [v, self._split_heads(context_v, batch, heads, head_dim)], axis=2)
      if context_mask is not None:
        pixel_mask = ops.ones((batch, height * width), dtype="bool")
        key_mask = ops.concatenate(
            [pixel_mask, ops.cast(context_mask, "bool")], axis=1)
        key_mask = key_mask[:, None, None, :]  # [B, 1, 1, N + L]

    logits = ops.cast(ops.einsum("bhqd,bhkd->bhqk", q, k), "float32")
    if key_mask is not None:
      # Pixels are always attendable, so no row is fully masked.
      logits = ops.where(key_mask, logits, ops.full_like(logits, -1e9))
    weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
    attended = ops.einsum("bhqk,bhkd->bhqd", weights, v)
    attended = ops.transpose(attended, (0, 2, 1, 3))
    attended = ops.reshape(attended, (batch, height, width, channels))
    return x + ops.cast(self.output_projection(attended), x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_heads": self.num_heads,
        "head_dim": self.head_dim,
        "group_norm_groups": self.group_norm_groups,
        "context_dim": self.context_dim,
    })
    return config


@keras.saving.register_keras_serializable(package="cdm_tf")
class Downsample(keras.layers.Layer):
  """Stride-2 3x3 conv (used when resblock_updown is off).

  Padded by one pixel on every side (not TF's asymmetric "same") so that the
  sampled grid is centred as in the reference implementations.
  """

  def __init__(self, channels, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.pad = keras.layers.ZeroPadding2D(1, dtype=self.dtype_policy,
                                          name="pad")
    self.conv = keras.layers.Conv2D(self.channels, 3, strides=2,
                                    padding="valid", dtype=self.dtype_policy,
                                    name="conv")

  def build(self, input_shape):
    batch, height, width, channels = input_shape
    self.conv.build((batch, None if height is None else height + 2,
                     None if width is None else width + 2, channels))
    self.built = True

  def call(self, x):
    return self.conv(self.pad(x))

  def compute_output_shape(self, input_shape):
    batch, height, width, _ = input_shape
    return (batch, None if height is None else height // 2,
            None if width is None else width // 2, self.channels)

  def get_config(self):
    config = super().get_config()
    config.update({"channels": self.channels})
    return config


@keras.saving.register_keras_serializable(package="cdm_tf")
class Upsample(keras.layers.Layer):
  """Nearest-neighbour 2x upsampling then a 3x3 conv."""

  def __init__(self, channels, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest",
                                              dtype=self.dtype_policy,
                                              name="upsample")
    self.conv = keras.layers.Conv2D(self.channels, 3, padding="same",
                                    dtype=self.dtype_policy, name="conv")

  def build(self, input_shape):
    batch, height, width, channels = input_shape
    self.conv.build((batch, None if height is None else height * 2,
                     None if width is None else width * 2, channels))
    self.built = True

  def call(self, x):
    return self.conv(self.upsample(x))

  def compute_output_shape(self, input_shape):
    batch, height, width, _ = input_shape
    return (batch, None if height is None else height * 2,
            None if width is None else width * 2, self.channels)

  def get_config(self):
    config = super().get_config()
    config.update({"channels": self.channels})
    return config
