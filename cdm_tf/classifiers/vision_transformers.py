"""ViT and DeiT backbones of keras-hub's layers, with stochastic depth.

DeiT (Touvron et al. 2021, Table 9) trains with stochastic depth 0.1:
in every transformer block, the attention branch and the MLP branch are each
dropped per example (``stochastic_depth.StochasticDepth``) before they are
added to the residual stream, timm's ``x + drop_path(attn(norm1(x)))`` and
``x + drop_path(mlp(norm2(x)))``, with rates rising from 0 at the first block
to the given rate at the last (``stochastic_depth.LINSPACE``, timm's
``torch.linspace(0, drop_path_rate, depth)``). keras-hub's ``ViTBackbone``
and ``DeiTBackbone`` have no drop-path, and their functional graphs
construct their encoders inside, so these backbones are built here from
keras-hub's own layers:

* the patch + position embeddings (``ViTPatchingAndEmbedding``,
  ``DeiTEmbeddings``, with its class and distillation tokens),
* ``ViTDropPathBlock`` / ``DeiTDropPathBlock``: keras-hub's encoder blocks
  (pre-norm attention and MLP, same weights and initialisers) whose ``call``
  adds the drop-path,
* the final layer norm.

With rate 0 (or at inference) a backbone computes exactly what the keras-hub
backbone of the same sizes computes, with the same variables in the same
order (so ``set_weights`` carries weights across); keras-hub's
zero-rate dropout layers before the blocks are left out. Each backbone maps
images [B, S, S, 3] (already normalised) to tokens [B, N, C]; ``models``
adds pooling and the head.
"""

import keras
from keras_hub.src.models.deit import deit_layers
from keras_hub.src.models.vit import vit_layers

from cdm_tf.classifiers import stochastic_depth

LAYER_NORM_EPSILON = 1e-6  # keras-hub's and timm's ViT / DeiT default


def _block_config(config):
  # keras-hub's blocks report key_dim, which they derive and do not accept.
  config = dict(config)
  config.pop("key_dim", None)
  return config


@keras.saving.register_keras_serializable(package="cdm_tf")
class ViTDropPathBlock(vit_layers.ViTEncoderBlock):
  """keras-hub's ViT encoder block with drop-path on both residual branches.

  Args:
    drop_path_rate: stochastic depth rate of the attention and MLP branches.
    seed: optional int for the drop-path stream.
    **kwargs: ``ViTEncoderBlock`` arguments (num_heads, hidden_dim,
      mlp_dim, ...).
  """

  def __init__(self, drop_path_rate=0.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.drop_path_rate = float(drop_path_rate)
    self.seed = seed
    self.drop_path = stochastic_depth.StochasticDepth(self.drop_path_rate,
                                                      seed=seed,
                                                      dtype=self.dtype_policy,
                                                      name="drop_path")

  def call(self, inputs, training=None):
    # ViTEncoderBlock.call with each branch through drop_path before its sum.
    x = self.layer_norm_1(inputs)
    x = self.mha(x, x)
    x = self.dropout(x)
    x = self.drop_path(x, training=training) + inputs
    y = self.mlp(self.layer_norm_2(x))
    return x + self.drop_path(y, training=training)

  def get_config(self):
    return {
        **_block_config(super().get_config()), "drop_path_rate":
            self.drop_path_rate, "seed": self.seed
    }


@keras.saving.register_keras_serializable(package="cdm_tf")
class DeiTDropPathBlock(deit_layers.DeiTEncoderBlock):
  """keras-hub's DeiT encoder block with drop-path on both residual branches.

  Args:
    drop_path_rate: stochastic depth rate of the attention and MLP branches.
    seed: optional int for the drop-path stream.
    **kwargs: ``DeiTEncoderBlock`` arguments (num_heads, hidden_dim,
      intermediate_dim, ...).

  Returns (output, attention scores or None) like ``DeiTEncoderBlock``.
  """

  def __init__(self, drop_path_rate=0.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.drop_path_rate = float(drop_path_rate)
    self.seed = seed
    self.drop_path = stochastic_depth.StochasticDepth(self.drop_path_rate,
                                                      seed=seed,
                                                      dtype=self.dtype_policy,
                                                      name="drop_path")

  def call(self, hidden_states, attention_mask=None,
           return_attention_scores=False, training=None):
    # DeiTEncoderBlock.call with each branch through drop_path before its
    # sum; DeiTOutput's residual sum is taken apart to reach its branch.
    x = self.layer_norm_1(hidden_states)
    scores = None
    if return_attention_scores:
      x, scores = self.mha(x, x, attention_mask=attention_mask,
                           return_attention_scores=True)
    else:
      x = self.mha(x, x, attention_mask=attention_mask)
    x = self.drop_path(x, training=training) + hidden_states
    y = self.mlp(self.layer_norm_2(x))
    y = self.output_layer.dropout(self.output_layer.dense(y))
    return self.drop_path(y, training=training) + x, scores

  def get_config(self):
    return {
        **_block_config(super().get_config()), "drop_path_rate":
            self.drop_path_rate, "seed": self.seed
    }


class _DropPathTransformer(keras.Model):
  """Embedding, drop-path blocks and a final layer norm (see subclasses).

  Args:
    image_size: input side S (square images); a multiple of patch_size.
    patch_size: patch side P.
    num_layers: transformer blocks L.
    num_heads: attention heads per block.
    hidden_dim: token width C.
    mlp_dim: hidden width of each block's MLP.
    stochastic_depth_rate: drop-path rate of the last block; block l of L
      (1-based) drops with rate * (l - 1) / (L - 1).
    layer_norm_epsilon: epsilon of every layer norm.
    seed: optional int; block i's drop-path stream uses seed + i.
    **kwargs: keras.Model arguments (name, dtype, ...).
  """

  def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim,
               mlp_dim, stochastic_depth_rate=0.0,
               layer_norm_epsilon=LAYER_NORM_EPSILON, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.image_size = int(image_size)
    self.patch_size = int(patch_size)
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of "
                       f"the patch size {self.patch_size}")
    if hidden_dim % num_heads:
      raise ValueError(f"hidden_dim {hidden_dim} is not a multiple of "
                       f"num_heads {num_heads}")
    self.num_layers = int(num_layers)
    self.num_heads = int(num_heads)
    self.hidden_dim = int(hidden_dim)
    self.mlp_dim = int(mlp_dim)
    self.stochastic_depth_rate = float(stochastic_depth_rate)
    self.layer_norm_epsilon = float(layer_norm_epsilon)
    self.seed = seed
    self.drop_path_rates = stochastic_depth.block_rates(
        self.stochastic_depth_rate, self.num_layers, stochastic_depth.LINSPACE)
    self.embedding = self._embedding()
    self.blocks = [
        self._block(rate, None if seed is None else seed + index,
                    f"transformer_block_{index + 1}")
        for index, rate in enumerate(self.drop_path_rates)
    ]
    self.layer_norm = keras.layers.LayerNormalization(
        epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="ln")

  def _embedding(self):
    raise NotImplementedError

  def _block(self, drop_path_rate, seed, name):
    raise NotImplementedError

  def _apply_block(self, block, tokens, training):
    return block(tokens, training=training)

  def build(self, input_shape):
    if tuple(input_shape[1:3]) != (self.image_size, self.image_size):
      raise ValueError(f"{self.name} takes {self.image_size} x "
                       f"{self.image_size} images, got shape {input_shape}")
    self.embedding.build(input_shape)
    token_shape = self.embedding.compute_output_shape(input_shape)
    for block in self.blocks:
      block.build(token_shape)
    self.layer_norm.build(token_shape)
    self.built = True

  def call(self, images, training=None):
    tokens = self.embedding(images, training=training)
    for block in self.blocks:
      tokens = self._apply_block(block, tokens, training)
    return self.layer_norm(tokens)

  def compute_output_shape(self, input_shape):
    return self.embedding.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({
        "name": self.name,
        "image_size": self.image_size,
        "patch_size": self.patch_size,
        "num_layers": self.num_layers,
        "num_heads": self.num_heads,
        "hidden_dim": self.hidden_dim,
        "mlp_dim": self.mlp_dim,
        "stochastic_depth_rate": self.stochastic_depth_rate,
        "layer_norm_epsilon": self.layer_norm_epsilon,
        "seed": self.seed,
    })
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@keras.saving.register_keras_serializable(package="cdm_tf")
class ViTDropPathBackbone(_DropPathTransformer):
  """keras-hub's ViTBackbone (pre-norm ViT, learned position embeddings)
  with stochastic depth.

  Args:
    use_class_token: prepend a learned class token (Beyer et al.'s ViT-S/16
      pools all tokens and has none).
    **kwargs: ``_DropPathTransformer`` arguments.
  """

  def __init__(self, use_class_token=True, **kwargs):
    self.use_class_token = bool(use_class_token)
    super().__init__(**kwargs)

  def _embedding(self):
    return vit_layers.ViTPatchingAndEmbedding(
        image_size=(self.image_size, self.image_size),
        patch_size=(self.patch_size, self.patch_size),
        hidden_dim=self.hidden_dim, use_class_token=self.use_class_token,
        dtype=self.dtype_policy, name="vit_patching_and_embedding")

  def _block(self, drop_path_rate, seed, name):
    return ViTDropPathBlock(drop_path_rate=drop_path_rate, seed=seed,
                            num_heads=self.num_heads,
                            hidden_dim=self.hidden_dim, mlp_dim=self.mlp_dim,
                            layer_norm_epsilon=self.layer_norm_epsilon,
                            dtype=self.dtype_policy, name=name)

  def get_config(self):
    return {**super().get_config(), "use_class_token": self.use_class_token}


@keras.saving.register_keras_serializable(package="cdm_tf")
class DeiTDropPathBackbone(_DropPathTransformer):
  """keras-hub's DeiTBackbone (class and distillation tokens first) with
  stochastic depth.

  Args:
    **kwargs: ``_DropPathTransformer`` arguments; ``mlp_dim`` is DeiT's
      intermediate_dim.
  """

  def _embedding(self):
    return deit_layers.DeiTEmbeddings(
        image_size=(self.image_size, self.image_size),
        patch_size=(self.patch_size, self.patch_size),
        hidden_dim=self.hidden_dim, dtype=self.dtype_policy,
        name="deit_patching_and_embedding")

  def _block(self, drop_path_rate, seed, name):
    return DeiTDropPathBlock(drop_path_rate=drop_path_rate, seed=seed,
                             num_heads=self.num_heads,
                             hidden_dim=self.hidden_dim,
                             intermediate_dim=self.mlp_dim,
                             layer_norm_epsilon=self.layer_norm_epsilon,
                             dtype=self.dtype_policy, name=name)

  def _apply_block(self, block, tokens, training):
    tokens, _ = block(tokens, training=training)  # no attention scores
    return tokens
