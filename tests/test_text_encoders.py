"""Frozen text encoders: MiniLM against an independent reference, tiny T5.

tests/data/minilm_reference.json was written by
tools/make_minilm_reference.py (a NumPy BERT and a plain-Python WordPiece,
no keras-hub). The T5 path has no installable weights, so it runs a tiny
randomly initialised T5 with a SentencePiece vocabulary trained here.
"""

import io
import json
import math
import pathlib

import keras
import keras_hub
import numpy as np
import pytest
import sentencepiece

from cdm_tf.text import class_prompts
from cdm_tf.text import minilm
from cdm_tf.text import t5

REFERENCE = pathlib.Path(__file__).parent / "data" / "minilm_reference.json"
TOLERANCE = 1e-4
# keras-hub's T5 layers warn about Keras masks they do not use; T5 masks
# attention through its padding-mask input instead.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Layer '.*' \\(of type T5MultiHeadAttention\\):UserWarning")
T5_CORPUS = [
    "a photo of a tench",
    "great white shark",
    "a goldfish in a bowl",
    "T-shirt and trouser",
    "ankle boot",
    "sneaker",
    "a leather bag",
    "a coat and a dress",
    "pullover, shirt and sandal",
]


@pytest.fixture(scope="module")
def reference():
  return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def minilm_encoder(reference):
  return minilm.MiniLMEncoder(max_length=reference["max_length"])


@pytest.fixture(scope="module")
def minilm_embeddings(minilm_encoder, reference):
  return minilm_encoder.encode([e["prompt"] for e in reference["examples"]])


def test_minilm_tokens_match_the_reference(minilm_encoder, reference):
  prompts = [e["prompt"] for e in reference["examples"]]
  token_ids, mask = minilm_encoder.tokenize(prompts)
  assert token_ids.shape == mask.shape == (len(prompts), 64)
  for example, ids, valid in zip(reference["examples"], token_ids, mask):
    n = len(example["token_ids"])
    assert ids[valid].tolist() == example["token_ids"], example["prompt"]
    assert valid.tolist() == [True] * n + [False] * (64 - n)
    assert not ids[~valid].any()  # [PAD] is 0


def test_minilm_embeddings_match_the_reference(minilm_embeddings, reference):
  pooled = np.array([e["pooled"] for e in reference["examples"]])
  pooled_error = np.abs(minilm_embeddings.pooled - pooled).max()
  token_error = max(
      np.abs(minilm_embeddings.tokens[s["example"], s["positions"]] -
             np.array(s["values"])).max()
      for s in reference["token_embeddings"])
  print(f"max |difference| vs reference: pooled {pooled_error:.2e}, "
        f"tokens {token_error:.2e}")
  assert pooled_error < TOLERANCE
  assert token_error < TOLERANCE


def test_minilm_shapes_mask_and_pooling(minilm_embeddings, reference):
  n = len(reference["examples"])
  assert minilm_embeddings.tokens.shape == (n, 64, 384)
  assert minilm_embeddings.tokens.dtype == np.float32
  assert minilm_embeddings.mask.shape == (n, 64)
  assert minilm_embeddings.mask.dtype == bool
  assert minilm_embeddings.pooled.shape == (n, 384)
  np.testing.assert_allclose(np.linalg.norm(minilm_embeddings.pooled, axis=-1),
                             1.0, atol=1e-5)
  assert not minilm_embeddings.tokens[~minilm_embeddings.mask].any()


def test_minilm_is_frozen(minilm_encoder):
  model = minilm_encoder.model
  assert not model.trainable
  assert not model.trainable_weights
  assert len(model.non_trainable_weights) == 6 * 16 + 7
  assert minilm_encoder.embed_dim == 384
  with pytest.raises(TypeError):
    minilm_encoder.encode("tench")


def test_exact_gelu_backbone_keeps_its_activation_through_its_config():
  backbone = minilm.ExactGeluBertBackbone(vocabulary_size=10, num_layers=1,
                                          num_heads=2, hidden_dim=4,
                                          intermediate_dim=8,
                                          max_sequence_length=8)
  restored = minilm.ExactGeluBertBackbone.from_config(backbone.get_config())
  for model in (backbone, restored):
    dense = model.transformer_layers[0]._feedforward_intermediate_dense  # pylint: disable=protected-access
    x = np.array([[-1.5, 0.5, 2.0]], np.float32)
    np.testing.assert_allclose(
        dense.activation(x),
        0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))), atol=1e-6)


def test_minilm_truncates_at_max_length(minilm_encoder, reference):
  # The reference's last prompt has more word pieces than fit in 64 tokens;
  # it is cut to 62 and closed with [SEP], as in BERT.
  long_ids = reference["examples"][-1]["token_ids"]
  assert len(long_ids) == minilm_encoder.max_length and long_ids[-1] == 102
  for bad in (1, 513):
    with pytest.raises(ValueError, match="max_length"):
      minilm.MiniLMEncoder(max_length=bad)


def test_minilm_separates_class_names(minilm_encoder):
  names = class_prompts.imagenet_prompt_names()
  pooled = minilm_encoder.encode([names[2], names[3], names[134],
                                  names[517]]).pooled
  similarity = pooled @ pooled.T
  assert similarity[0, 1] > similarity[0, 2]  # two sharks vs a crane bird
  assert similarity[2, 3] < 0.99  # the two cranes are told apart


@pytest.fixture(scope="module")
def spm_proto():
  """A tiny SentencePiece model with T5's <pad>=0, </s>=1, <unk>=2."""
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(T5_CORPUS * 5), model_writer=model, vocab_size=60,
      model_type="unigram", hard_vocab_limit=False, pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
      unk_piece="<unk>", minloglevel=2)
  return model.getvalue()


@pytest.fixture(scope="module")
def tiny_t5(spm_proto):
  keras.utils.set_random_seed(7)
  tokenizer = keras_hub.tokenizers.T5Tokenizer(proto=spm_proto)
  backbone = keras_hub.models.T5Backbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=1, num_heads=2,
      hidden_dim=16, intermediate_dim=32, key_value_dim=8, dropout=0.0,
      activation="gelu", use_gated_activation=True)
  return backbone, tokenizer


def test_t5_encodes_tokens_mask_and_pooled(tiny_t5):
  backbone, tokenizer = tiny_t5
  encoder = t5.T5Encoder(backbone, tokenizer, max_length=24)
  prompts = ["tench", "a goldfish in a bowl", ""]
  token_ids, mask = encoder.tokenize(prompts)
  for prompt, ids, valid in zip(prompts, token_ids, mask):
    pieces = np.asarray(tokenizer(prompt)).tolist()
    assert ids[valid].tolist() == pieces + [1]  # then </s>
    assert valid.tolist(
    ) == [True] * (len(pieces) + 1) + [False] * (24 - len(pieces) - 1)

  embeddings = encoder.encode(prompts)
  assert embeddings.tokens.shape == (3, 24, 16)
  assert embeddings.mask.dtype == bool
  assert embeddings.pooled.shape == (3, 16)
  np.testing.assert_array_equal(embeddings.mask, mask)
  for tokens, valid, pooled in zip(embeddings.tokens, embeddings.mask,
                                   embeddings.pooled):
    np.testing.assert_allclose(pooled, tokens[valid].mean(0), atol=1e-6)
    assert not tokens[~valid].any()
  assert not encoder.model.trainable_weights
  assert encoder.embed_dim == 16

  # Padding is masked out: a longer max_length leaves valid tokens alone.
  longer = t5.T5Encoder(backbone, tokenizer, max_length=32).encode(prompts)
  np.testing.assert_allclose(longer.tokens[:, :24], embeddings.tokens,
                             atol=1e-5)
  np.testing.assert_allclose(longer.pooled, embeddings.pooled, atol=1e-5)


def test_t5_preset_directory_loads_back_identically(tiny_t5, tmp_path):
  backbone, tokenizer = tiny_t5
  prompts = ["great white shark", "ankle boot"]
  expected = t5.T5Encoder(backbone, tokenizer).encode(prompts)
  preset = tmp_path / "tiny_t5"
  backbone.save_to_preset(str(preset))
  tokenizer.save_to_preset(str(preset))

  loaded = t5.T5Encoder.from_preset(str(preset))
  got = loaded.encode(prompts)
  np.testing.assert_array_equal(got.tokens, expected.tokens)
  np.testing.assert_array_equal(got.pooled, expected.pooled)
  assert loaded.name == "tiny_t5"
  assert not loaded.model.trainable_weights
  with pytest.raises(FileNotFoundError):
    t5.T5Encoder.from_preset(str(tmp_path / "t5_small_multi"))


def test_t5_weights_file_loads_back_identically(tiny_t5, spm_proto, tmp_path):
  backbone, tokenizer = tiny_t5
  prompts = ["a leather bag", "sneaker"]
  in_memory = t5.T5Encoder(backbone, tokenizer, max_length=12)
  expected = in_memory.encode(prompts)
  weights = tmp_path / "tiny.weights.h5"
  backbone.save_weights(str(weights))
  config = tmp_path / "config.json"
  config.write_text(json.dumps(keras.saving.serialize_keras_object(backbone)))
  spm = tmp_path / "vocabulary.spm"
  spm.write_bytes(spm_proto)

  loaded = t5.T5Encoder.from_files(str(config), str(weights), str(spm),
                                   max_length=12)
  got = loaded.encode(prompts)
  np.testing.assert_array_equal(got.tokens, expected.tokens)
  np.testing.assert_array_equal(got.mask, expected.mask)
  assert not loaded.model.trainable_weights

  # In memory the weights themselves are hashed: other weights, other id.
  original = in_memory.fingerprint
  variable = backbone.get_layer("encoder_output_layer_norm").weights[0]
  saved = variable.numpy()
  try:
    variable.assign(saved * 2.0)
    changed = t5.T5Encoder(backbone, tokenizer, max_length=12).fingerprint
  finally:
    variable.assign(saved)
  assert changed != original
  assert t5.T5Encoder(backbone, tokenizer,
                      max_length=12).fingerprint == original
