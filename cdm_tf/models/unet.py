"""The diffusion U-Net of CDM (Ho et al., 2021, Fig. 3 and Appendix B).

The architecture follows the DDPM / Improved DDPM / ADM / SR3 lineage:

* input 3x3 conv;
* encoder: per resolution level `num_res_blocks` residual blocks of width
  `base_channels * channel_mult[level]`, each followed by self-attention when
  the feature-map side is in `attention_resolutions`; between levels a 2x
  downsampling (a residual block with average pooling if `resblock_updown`,
  else a stride-2 conv);
* middle: residual block, attention, residual block;
* decoder: mirrors the encoder with `num_res_blocks + 1` residual blocks per
  level, each fed the concatenation of the running features and one saved
  encoder activation, plus 2x upsampling between levels;
* GroupNorm, SiLU, 3x3 output conv (zero-initialised, so an untrained model
  predicts epsilon = 0).

Scalar conditioning enters every residual block through one embedding vector:
the sum of the time embedding, the class embedding (CDM conditions every stage
on the label), the conditioning-augmentation level embedding of a
super-resolution model (CDM Sec. 3.2) and a pooled text embedding. A
super-resolution model concatenates its upsampled low-resolution input with
x_t along channels (CDM Sec. 2.3, as in SR3 and Improved DDPM).
"""

import keras
from keras import ops
import tensorflow as tf

from cdm_tf.models import embeddings
from cdm_tf.models import unet_blocks

LOW_RES_INTERPOLATIONS = ("bicubic", "bilinear")


@keras.saving.register_keras_serializable(package="cdm_tf")
class UNet(keras.Model):
  """Diffusion U-Net predicting epsilon (and optionally the variance).

  Args:
    resolution: side of x_t and of the output, e.g. 32.
    in_channels: image channels.
    base_channels: width of the first level; the time embedding is
      4 * base_channels wide.
    channel_mult: width multiplier per resolution level, e.g. (1, 2, 3, 4);
      level i works at side `resolution / 2**i`.
    num_res_blocks: residual blocks per encoder level (the decoder has one
      more per level).
    attention_resolutions: feature-map sides with self-attention after each
      residual block, e.g. (8, 16). The middle block always has attention.
    num_heads: attention heads; or
    head_dim: channels per attention head (give exactly one).
    dropout: dropout rate inside residual blocks.
    resblock_updown: up/down-sample with residual blocks (BigGAN) instead of
      nearest+conv / stride-2 conv.
    use_scale_shift_norm: AdaGN embedding injection (else additive).
    num_classes: 0 for an unconditional model; otherwise the "label" input
      indexes an embedding with num_classes + 1 rows, row `num_classes` being
      the null label for classifier-free guidance.
    learn_sigma: output 2 * in_channels channels (epsilon, then the
      variance interpolation value v of Improved DDPM), else in_channels.
    low_res_resolution: side of the "low_res" conditioning image of a
      super-resolution model, or None.
    low_res_interpolation: "bicubic" or "bilinear" upsampling of low_res.
    aug_level_conditioning: take an "aug_level" input in [0, 1000] (the
      truncation time s of conditioning augmentation) with its own embedding.
    text_embed_dim: width D of "text_pooled" [B, D] (added to the embedding)
      and "text_tokens" [B, L, D] with "text_mask" [B, L] (attended to in
      every attention block); None for no text.
    group_norm_groups: GroupNorm group count.
    **kwargs: keras.Model arguments (name, dtype, ...).

  Call with a dict: "x_t" [B, H, W, C] float, "time" [B] float in [0, 1000],
  plus "label" [B] int iff num_classes, "low_res" [B, h, w, C] iff
  low_res_resolution, "aug_level" [B] iff aug_level_conditioning, and
  "text_pooled", "text_tokens", "text_mask" iff text_embed_dim. Returns float32
  [B, H, W, out_channels] under any dtype policy.
  """

  def __init__(self, resolution, in_channels=3, base_channels=128,
               channel_mult=(1, 2, 3, 4), num_res_blocks=2,
               attention_resolutions=(16, 8), num_heads=None, head_dim=None,
               dropout=0.0, resblock_updown=True, use_scale_shift_norm=True,
               num_classes=0, learn_sigma=False, low_res_resolution=None,
               low_res_interpolation="bicubic", aug_level_conditioning=False,
               text_embed_dim=None, group_norm_groups=32, **kwargs):
    super().__init__(**kwargs)
    self.resolution = int(resolution)
    self.in_channels = int(in_channels)
    self.base_channels = int(base_channels)
    self.channel_mult = tuple(int(m) for m in channel_mult)
    self.num_res_blocks = int(num_res_blocks)
    self.attention_resolutions = tuple(
        sorted(int(side) for side in attention_resolutions))
    self.num_heads = None if num_heads is None else int(num_heads)
    self.head_dim = None if head_dim is None else int(head_dim)
    self.dropout = float(dropout)
    self.resblock_updown = bool(resblock_updown)
    self.use_scale_shift_norm = bool(use_scale_shift_norm)
    self.num_classes = int(num_classes)
    self.learn_sigma = bool(learn_sigma)
    self.low_res_resolution = (None if low_res_resolution is None else
                               int(low_res_resolution))
    self.low_res_interpolation = low_res_interpolation
    self.aug_level_conditioning = bool(aug_level_conditioning)
    self.text_embed_dim = (None
                           if text_embed_dim is None else int(text_embed_dim))
    self.group_norm_groups = int(group_norm_groups)
    self._validate_config()

    self.embed_dim = 4 * self.base_channels
    self.out_channels = (2 if self.learn_sigma else 1) * self.in_channels
    self._create_layers()

  # ---------------------------------------------------------------- config

  def _validate_config(self):
    levels = len(self.channel_mult)
    if self.resolution <= 0 or levels == 0 or self.num_res_blocks <= 0:
      raise ValueError(
          "resolution, channel_mult and num_res_blocks must be positive, got "
          f"resolution={self.resolution}, channel_mult={self.channel_mult}, "
          f"num_res_blocks={self.num_res_blocks}.")
    if self.resolution % 2**(levels - 1):
      raise ValueError(
          f"resolution={self.resolution} cannot be halved "
          f"{levels - 1} times for channel_mult={self.channel_mult}.")
    if (self.num_heads is None) == (self.head_dim is None):
      raise ValueError("Give exactly one of num_heads and head_dim, got "
                       f"num_heads={self.num_heads}, "
                       f"head_dim={self.head_dim}.")
    sides = self.level_sides()
    unknown = [s for s in self.attention_resolutions if s not in sides]
    if unknown:
      raise ValueError(
          f"attention_resolutions {unknown} are not feature-map sides of this "
          f"model (sides per level: {sides}); attention_resolutions are "
          "sides such as (8, 16), not downsampling factors.")
    if self.num_classes < 0:
      raise ValueError(f"num_classes must be >= 0, got {self.num_classes}.")
    if self.low_res_resolution is not None and not (0 < self.low_res_resolution
                                                    <= self.resolution):
      raise ValueError(
          f"low_res_resolution={self.low_res_resolution} must be in "
          f"(0, resolution={self.resolution}].")
    if self.low_res_interpolation not in LOW_RES_INTERPOLATIONS:
      raise ValueError(
          f"low_res_interpolation must be one of {LOW_RES_INTERPOLATIONS}, "
          f"got {self.low_res_interpolation!r}.")
    if self.text_embed_dim is not None and self.text_embed_dim <= 0:
      raise ValueError(
          f"text_embed_dim must be positive, got {self.text_embed_dim}.")
    if self.dropout < 0.0 or self.dropout >= 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

  def level_sides(self):
    """Feature-map side at each resolution level, e.g. [32, 16, 8, 4]."""
    return [self.resolution // 2**i for i in range(len(self.channel_mult))]

  def get_config(self):
    config = super().get_config()
    config.update({
        "resolution": self.resolution,
        "in_channels": self.in_channels,
        "base_channels": self.base_channels,
        "channel_mult": list(self.channel_mult),
        "num_res_blocks": self.num_res_blocks,
        "attention_resolutions": list(self.attention_resolutions),
        "num_heads": self.num_heads,
        "head_dim": self.head_dim,
        "dropout": self.dropout,
        "resblock_updown": self.resblock_updown,
        "use_scale_shift_norm": self.use_scale_shift_norm,
        "num_classes": self.num_classes,
        "learn_sigma": self.learn_sigma,
        "low_res_resolution": self.low_res_resolution,
        "low_res_interpolation": self.low_res_interpolation,
        "aug_level_conditioning": self.aug_level_conditioning,
        "text_embed_dim": self.text_embed_dim,
        "group_norm_groups": self.group_norm_groups,
    })
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  # ---------------------------------------------------------------- layers

  def _res_block(self, out_channels, name, resample=None):
    return unet_blocks.ResidualBlock(
        out_channels, self.embed_dim, dropout=self.dropout,
        use_scale_shift_norm=self.use_scale_shift_norm, resample=resample,
        group_norm_groups=self.group_norm_groups, dtype=self.dtype_policy,
        name=name)

  def _attention_block(self, name):
    return unet_blocks.AttentionBlock(num_heads=self.num_heads,
                                      head_dim=self.head_dim,
                                      group_norm_groups=self.group_norm_groups,
                                      context_dim=self.text_embed_dim,
                                      dtype=self.dtype_policy, name=name)

  def _create_layers(self):
    self._create_embeddings()
    width = self._create_encoder()
    self.middle_layers = [
        self._res_block(width, "middle_res_0"),
        self._attention_block("middle_attention"),
        self._res_block(width, "middle_res_1"),
    ]
    self._create_decoder()
    self.output_norm = unet_blocks.group_norm(self.group_norm_groups,
                                              "output_norm")
    # float32 output under mixed precision; zero init -> epsilon = 0.
    self.output_conv = keras.layers.Conv2D(self.out_channels, 3, padding="same",
                                           kernel_initializer="zeros",
                                           dtype="float32", name="output_conv")

  def _create_embeddings(self):
    """The layers of the conditioning embedding and the text context."""
    policy = self.dtype_policy
    self.time_embedding = embeddings.ScalarEmbedding(self.base_channels,
                                                     self.embed_dim,
                                                     dtype=policy,
                                                     name="time_embedding")
    self.label_embedding = None
    if self.num_classes:
      # The extra last row is the null label of classifier-free guidance.
      self.label_embedding = keras.layers.Embedding(self.num_classes + 1,
                                                    self.embed_dim,
                                                    dtype=policy,
                                                    name="label_embedding")
    self.aug_level_embedding = None
    if self.aug_level_conditioning:
      self.aug_level_embedding = embeddings.ScalarEmbedding(
          self.base_channels, self.embed_dim, dtype=policy,
          name="aug_level_embedding")
    self.text_pooled_projection = None
    self.text_token_norm = None
    if self.text_embed_dim is not None:
      self.text_pooled_projection = keras.layers.Dense(
          self.embed_dim, dtype=policy, name="text_pooled_projection")
      # Normalises encoder outputs of unknown scale before the per-block
      # key/value projections.
      self.text_token_norm = keras.layers.LayerNormalization(
          epsilon=1e-5, dtype="float32", name="text_token_norm")

  def _create_encoder(self):
    """The input conv and the encoder; returns the encoder's last width.

    The encoder is a flat list of layers; `_encoder_saves_skip[i]` says
    whether the output after layer i is kept for the decoder.
    """
    sides = self.level_sides()
    width = self.base_channels * self.channel_mult[0]
    self.input_conv = keras.layers.Conv2D(width, 3, padding="same",
                                          dtype=self.dtype_policy,
                                          name="input_conv")
    self.encoder_layers = []
    self._encoder_saves_skip = []
    for level, mult in enumerate(self.channel_mult):
      side = sides[level]
      width = self.base_channels * mult
      for block in range(self.num_res_blocks):
        self.encoder_layers.append(
            self._res_block(width, f"encoder_{side}_res_{block}"))
        self._encoder_saves_skip.append(False)
        if side in self.attention_resolutions:
          self.encoder_layers.append(
              self._attention_block(f"encoder_{side}_attention_{block}"))
          self._encoder_saves_skip.append(False)
        self._encoder_saves_skip[-1] = True
      if level != len(self.channel_mult) - 1:
        if self.resblock_updown:
          down = self._res_block(width, f"encoder_{side}_down", resample="down")
        else:
          down = unet_blocks.Downsample(width, dtype=self.dtype_policy,
                                        name=f"encoder_{side}_down")
        self.encoder_layers.append(down)
        self._encoder_saves_skip.append(True)
    return width

  def _create_decoder(self):
    """The decoder: `_decoder_takes_skip[i]` says whether layer i first
    concatenates the most recent unused encoder activation."""
    sides = self.level_sides()
    self.decoder_layers = []
    self._decoder_takes_skip = []
    for level in reversed(range(len(self.channel_mult))):
      side = sides[level]
      width = self.base_channels * self.channel_mult[level]
      for block in range(self.num_res_blocks + 1):
        self.decoder_layers.append(
            self._res_block(width, f"decoder_{side}_res_{block}"))
        self._decoder_takes_skip.append(True)
        if side in self.attention_resolutions:
          self.decoder_layers.append(
              self._attention_block(f"decoder_{side}_attention_{block}"))
          self._decoder_takes_skip.append(False)
      if level > 0:
        if self.resblock_updown:
          up = self._res_block(width, f"decoder_{side}_up", resample="up")
        else:
          up = unet_blocks.Upsample(width, dtype=self.dtype_policy,
                                    name=f"decoder_{side}_up")
        self.decoder_layers.append(up)
        self._decoder_takes_skip.append(False)

  # ---------------------------------------------------------------- inputs

  @property
  def input_dtype(self):
    # Float inputs stay float32 under mixed precision: the time and
    # aug_level scalars must not be rounded to bfloat16 before embedding.
    return "float32"

  def input_names(self):
    """The keys `call` expects, in a fixed order."""
    names = ["x_t", "time"]
    if self.num_classes:
      names.append("label")
    if self.low_res_resolution is not None:
      names.append("low_res")
    if self.aug_level_conditioning:
      names.append("aug_level")
    if self.text_embed_dim is not None:
      names.extend(["text_pooled", "text_tokens", "text_mask"])
    return names

  def dummy_inputs(self, batch_size=1, text_length=8):
    """A dict of zero inputs that `call` accepts (label 0, mask all True)."""
    side, channels = self.resolution, self.in_channels
    inputs = {
        "x_t": tf.zeros((batch_size, side, side, channels), tf.float32),
        "time": tf.zeros((batch_size,), tf.float32),
    }
    if self.num_classes:
      inputs["label"] = tf.zeros((batch_size,), tf.int32)
    if self.low_res_resolution is not None:
      low = self.low_res_resolution
      inputs["low_res"] = tf.zeros((batch_size, low, low, channels), tf.float32)
    if self.aug_level_conditioning:
      inputs["aug_level"] = tf.zeros((batch_size,), tf.float32)
    if self.text_embed_dim is not None:
      inputs["text_pooled"] = tf.zeros((batch_size, self.text_embed_dim),
                                       tf.float32)
      inputs["text_tokens"] = tf.zeros(
          (batch_size, text_length, self.text_embed_dim), tf.float32)
      inputs["text_mask"] = tf.ones((batch_size, text_length), tf.bool)
    return inputs

  def build(self, input_shape=None):
    """Creates all weights by running `call` on symbolic inputs.

    `input_shape` is accepted for Keras (which passes the shapes of the first
    call, or of the saved build config) but not needed: every input's shape
    follows from the configuration, with the batch size and text length
    left free, so `unet.build()` builds the model for `resolution` without
    computing anything. Each block creates its weights when first called,
    with the same names, order and initial values as any other way of
    building the model.
    """
    del input_shape  # The configuration says it all.
    self.call(self._symbolic_inputs())

  def _symbolic_inputs(self):
    """`keras.KerasTensor`s of the inputs `call` expects, batch size free."""
    shapes = self._expected_shapes()
    dtypes = {"label": "int32", "text_mask": "bool"}
    return {
        key: keras.KerasTensor(shapes[key][0], dtype=dtypes.get(key, "float32"))
        for key in self.input_names()
    }

  def _expected_shapes(self):
    """Key -> (expected static shape with None for free dims, description)."""
    side, low = self.resolution, self.low_res_resolution
    text_dim = self.text_embed_dim
    return {
        "x_t": ((None, side, side, self.in_channels), "[B, H, W, C]"),
        "time": ((None,), "[B]"),
        "label": ((None,), "[B]"),
        "low_res": ((None, low, low, self.in_channels), "[B, h, w, C]"),
        "aug_level": ((None,), "[B]"),
        "text_pooled": ((None, text_dim), "[B, D]"),
        "text_tokens": ((None, None, text_dim), "[B, L, D]"),
        "text_mask": ((None, None), "[B, L]"),
    }

  def _validate_inputs(self, inputs):
    """Raises a ValueError naming the problem if `inputs` do not fit."""
    if not isinstance(inputs, dict):
      raise ValueError(
          f"UNet expects a dict with keys {self.input_names()}, got "
          f"{type(inputs).__name__}.")
    expected = self.input_names()
    missing = [k for k in expected if k not in inputs]
    unexpected = sorted(k for k in inputs if k not in expected)
    if missing or unexpected:
      raise ValueError(
          f"UNet inputs must have exactly the keys {expected} for this "
          f"configuration (num_classes={self.num_classes}, "
          f"low_res_resolution={self.low_res_resolution}, "
          f"aug_level_conditioning={self.aug_level_conditioning}, "
          f"text_embed_dim={self.text_embed_dim}); missing {missing}, "
          f"unexpected {unexpected}.")

    shapes = self._expected_shapes()
    batch_sizes = {}
    for key in expected:
      value = inputs[key]
      shape = tuple(value.shape)
      want, description = shapes[key]
      if len(shape) != len(want) or any(
          w is not None and s is not None and s != w
          for s, w in zip(shape, want)):
        readable = tuple("B" if i == 0 else ("?" if w is None else w)
                         for i, w in enumerate(want))
        raise ValueError(
            f"UNet input '{key}' must have shape {description} = {readable}, "
            f"got {shape}.")
      if shape[0] is not None:
        batch_sizes[key] = shape[0]
    if len(set(batch_sizes.values())) > 1:
      raise ValueError(f"UNet inputs disagree on the batch size: "
                       f"{batch_sizes}.")

    if "label" in inputs and not _is_integer(inputs["label"]):
      raise ValueError("UNet input 'label' must be integer class indices in "
                       f"[0, {self.num_classes}] ({self.num_classes} = null "
                       f"label), got dtype {inputs['label'].dtype}.")
    if "text_tokens" in inputs:
      tokens_length = inputs["text_tokens"].shape[1]
      mask_length = inputs["text_mask"].shape[1]
      if (tokens_length is not None and mask_length is not None and
          tokens_length != mask_length):
        raise ValueError(
            f"UNet inputs 'text_tokens' (length {tokens_length}) and "
            f"'text_mask' (length {mask_length}) disagree on L.")

  # ---------------------------------------------------------------- forward

  def _embedding(self, inputs):
    """The conditioning vector [B, embed_dim] (float32) fed to all blocks."""
    emb = ops.cast(self.time_embedding(inputs["time"]), "float32")
    if self.label_embedding is not None:
      labels = ops.cast(inputs["label"], "int32")
      emb += ops.cast(self.label_embedding(labels), "float32")
    if self.aug_level_embedding is not None:
      emb += ops.cast(self.aug_level_embedding(inputs["aug_level"]), "float32")
    if self.text_pooled_projection is not None:
      emb += ops.cast(self.text_pooled_projection(inputs["text_pooled"]),
                      "float32")
    return emb

  def _network_input(self, inputs):
    """x_t, with the upsampled low-resolution image for super-resolution."""
    x = ops.cast(inputs["x_t"], "float32")
    if self.low_res_resolution is None:
      return x
    low_res = ops.cast(inputs["low_res"], "float32")
    if self.low_res_resolution != self.resolution:
      # tf.image.resize as two fixed matrix products: XLA (TPU, jit_compile)
      # has no ResizeBicubic kernel, and matmuls are fast everywhere. Keras
      # ops (the same tf.einsum) also run on `build`'s symbolic inputs.
      matrix = self._upsampling_matrix()
      low_res = ops.einsum("ih,bhwc->biwc", matrix, low_res)
      low_res = ops.einsum("jw,bhwc->bhjc", matrix, low_res)
    return ops.concatenate([x, low_res], axis=-1)

  def _upsampling_matrix(self):
    """[resolution, low_res_resolution] matrix of ``tf.image.resize``.

    Resizing is linear and separable: resizing each one-hot column image
    gives the matrix's columns, so the products reproduce tf.image.resize
    (half-pixel centres, Keys cubic a = -0.5 or bilinear) to float rounding.
    """
    if getattr(self, "_upsampling", None) is None:
      n = self.low_res_resolution
      with tf.init_scope():  # computed once, eagerly, even inside a trace
        impulses = tf.reshape(tf.eye(n), [n, n, 1, 1])  # n images [n, 1, 1]
        columns = tf.image.resize(impulses, (self.resolution, 1),
                                  method=self.low_res_interpolation)
        self._upsampling = tf.transpose(
            tf.reshape(columns, [n, self.resolution])).numpy()
    return self._upsampling

  def call(self, inputs, training=False):
    self._validate_inputs(inputs)
    emb = self._embedding(inputs)
    context = context_mask = None
    if self.text_embed_dim is not None:
      context = self.text_token_norm(inputs["text_tokens"])
      context_mask = ops.cast(inputs["text_mask"], "bool")

    def apply(layer, h):
      if isinstance(layer, unet_blocks.ResidualBlock):
        return layer(h, emb, training=training)
      if isinstance(layer, unet_blocks.AttentionBlock):
        return layer(h, context=context, context_mask=context_mask)
      return layer(h)

    h = self.input_conv(self._network_input(inputs))
    skips = [h]
    for layer, saves_skip in zip(self.encoder_layers, self._encoder_saves_skip):
      h = apply(layer, h)
      if saves_skip:
        skips.append(h)
    for layer in self.middle_layers:
      h = apply(layer, h)
    for layer, takes_skip in zip(self.decoder_layers, self._decoder_takes_skip):
      if takes_skip:
        skip = skips.pop()
        h = ops.concatenate([h, ops.cast(skip, h.dtype)], axis=-1)
      h = apply(layer, h)
    h = ops.silu(self.output_norm(h))
    return self.output_conv(h)

  def compute_output_shape(self, input_shape):
    batch = input_shape["x_t"][0] if isinstance(input_shape, dict) else None
    return (batch, self.resolution, self.resolution, self.out_channels)


def _is_integer(value):
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    return False
  return "int" in str(getattr(dtype, "name", dtype))
