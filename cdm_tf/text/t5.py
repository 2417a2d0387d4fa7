"""T5 encoders (Imagen's text encoder is a frozen T5-XXL) on keras-hub.

Imagen conditions every stage of its cascade on a frozen T5 encoder's
last-layer token embeddings, and its 64x64 base model also on a pooled
vector; Azizi et al. keep that text encoder unchanged while fine-tuning.
Here the encoder half of ``keras_hub.models.T5Backbone`` is cut out as its
own Keras model (token ids + padding mask -> encoder output after the final
layer norm) and frozen; prompts are tokenized by ``T5Tokenizer`` (a
SentencePiece model run by tensorflow-text), followed by </s>, padded with
<pad> to ``max_length``. Pooled embedding = mean over valid tokens.

No registry ships T5 weights, so nothing is downloaded: the user gives a
local keras-hub preset directory (``T5Encoder.from_preset``) or a backbone
config, a ``.weights.h5`` file and a SentencePiece model
(``T5Encoder.from_files``). keras-hub's T5Backbone always builds the decoder
too; its weights stay in memory unused (for T5-XXL, load in bfloat16).
"""

import hashlib
import json
import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from cdm_tf import fingerprints
from cdm_tf.text import encoder

DEFAULT_MAX_LENGTH = 64


def _preset_files(preset_dir):
  return [
      os.path.join(root, name)
      for root, _, names in tf.io.gfile.walk(preset_dir)
      for name in names
  ]


def _backbone_kwargs(config):
  """T5Backbone arguments from a dict or a JSON file.

  Accepts plain constructor arguments or keras-hub's serialized form
  ({"class_name": "T5Backbone", "config": {...}}, as in a preset's
  config.json).
  """
  if isinstance(config, (str, os.PathLike)):
    with tf.io.gfile.GFile(os.fspath(config)) as f:
      config = json.load(f)
  config = dict(config)
  if "config" in config and "class_name" in config:
    if config["class_name"] != "T5Backbone":
      raise ValueError(f"expected a T5Backbone config, got "
                       f"{config['class_name']}")
    config = dict(config["config"])
  # Serialization bookkeeping, not constructor arguments.
  for key in ("name", "trainable", "dtype"):
    config.pop(key, None)
  return config


class T5Encoder(encoder.TextEncoder):
  """The frozen encoder half of a keras-hub T5 model as a ``TextEncoder``.

  Args:
    backbone: a built ``keras_hub.models.T5Backbone`` holding the weights.
    tokenizer: its ``keras_hub.tokenizers.T5Tokenizer``.
    max_length: tokens per prompt including the closing </s>.
    source_files: files the weights and vocabulary came from; they
      identify the encoder in cache keys (else its weights are hashed).
    name: a short name for reports, e.g. "t5-v1_1-xxl".
  """

  def __init__(self, backbone, tokenizer, max_length=DEFAULT_MAX_LENGTH,
               source_files=(), name="t5"):
    super().__init__(max_length)
    if not isinstance(backbone, keras_hub.models.T5Backbone):
      raise TypeError(f"expected a T5Backbone, got {type(backbone)}")
    self._name = name
    self._source_files = tuple(os.fspath(p) for p in source_files)
    self._backbone_config = backbone.get_config()
    self._tokenizer = tokenizer
    self._packer = keras_hub.layers.StartEndPacker(
        sequence_length=self.max_length, end_value=tokenizer.end_token_id,
        pad_value=tokenizer.pad_token_id, return_padding_mask=True)
    # The encoder output depends on the encoder inputs only, so this
    # sub-graph of the functional backbone is the whole text encoder.
    inputs = backbone.input
    self._encoder = keras.Model(
        inputs={
            key: inputs[key]
            for key in ("encoder_token_ids", "encoder_padding_mask")
        }, outputs=backbone.output["encoder_sequence_output"],
        name="t5_encoder")
    self._encoder.trainable = False
    self._embed_dim = backbone.hidden_dim

  @classmethod
  def from_preset(cls, preset_dir, max_length=DEFAULT_MAX_LENGTH,
                  dtype="float32", name=None):
    """Loads a local keras-hub T5 preset directory (never downloads).

    A preset directory is what ``T5Backbone.save_to_preset`` and
    ``T5Tokenizer.save_to_preset`` write: config.json, model.weights.h5,
    tokenizer.json and assets/tokenizer/vocabulary.spm.
    """
    preset_dir = os.fspath(preset_dir)
    # keras-hub reads a bare name as a hub handle; only a directory is local.
    if not tf.io.gfile.isdir(preset_dir):
      raise FileNotFoundError(f"{preset_dir} is not a local preset directory")
    backbone = keras_hub.models.T5Backbone.from_preset(preset_dir, dtype=dtype)
    tokenizer = keras_hub.tokenizers.T5Tokenizer.from_preset(preset_dir)
    return cls(backbone, tokenizer, max_length=max_length,
               source_files=_preset_files(preset_dir), name=name or
               os.path.basename(os.path.normpath(preset_dir)))

  @classmethod
  def from_files(cls, config, weights_path, spm_path,
                 max_length=DEFAULT_MAX_LENGTH, dtype="float32", name="t5"):
    """Builds the backbone from ``config`` and loads a weights file.

    Args:
      config: T5Backbone arguments, as a dict or a JSON file (plain or
        keras-hub's {"class_name", "config"} form).
      weights_path: a Keras ``.weights.h5`` file of that backbone.
      spm_path: the SentencePiece model (serialized ModelProto) of its
        vocabulary, with T5's <pad>=0, </s>=1, <unk>=2.
      max_length: tokens per prompt including </s>.
      dtype: variable and compute dtype (outputs are float32 either way).
      name: a short name for reports.
    """
    kwargs = _backbone_kwargs(config)
    backbone = keras_hub.models.T5Backbone(**kwargs, dtype=dtype)
    backbone.load_weights(os.fspath(weights_path))
    with tf.io.gfile.GFile(os.fspath(spm_path), "rb") as f:
      tokenizer = keras_hub.tokenizers.T5Tokenizer(proto=f.read())
    return cls(backbone, tokenizer, max_length=max_length,
               source_files=(weights_path, spm_path), name=name)

  @property
  def name(self):
    return self._name

  @property
  def embed_dim(self):
    return self._embed_dim

  @property
  def model(self):
    return self._encoder

  def _compute_fingerprint(self):
    settings = {
        "max_length": self.max_length, "pooling": "mean",
        "backbone": self._backbone_config
    }
    if self._source_files:
      return encoder.fingerprint("t5", settings, self._source_files)
    # No files: hash the weights and the vocabulary themselves.
    settings["weights"] = fingerprints.of_arrays(self._encoder.get_weights())
    settings["vocabulary"] = hashlib.sha256(self._tokenizer.proto).hexdigest()
    return encoder.fingerprint("t5", settings, ())

  def tokenize(self, prompts):
    prompts = encoder.check_prompts(prompts)
    token_ids, mask = self._packer(self._tokenizer(prompts))
    return (np.asarray(token_ids, np.int32), np.asarray(mask, bool))

  def _token_embeddings(self, token_ids, mask):
    outputs = self._encoder(
        {
            "encoder_token_ids": token_ids, "encoder_padding_mask": mask.astype(
                np.int32)
        }, training=False)
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")))
