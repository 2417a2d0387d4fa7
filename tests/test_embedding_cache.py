"""Prompt embeddings are reused from disk and re-encoded when the key moves."""

import os

import numpy as np

from cdm_tf.text import embedding_cache
from cdm_tf.text import encoder as encoder_lib


class CountingEncoder(encoder_lib.TextEncoder):
  """Deterministic stand-in that counts how many prompts it encoded."""

  def __init__(self, max_length=6, weights_version="v1", name="counting"):
    super().__init__(max_length)
    self._weights_version = weights_version
    self._name = name
    self.encoded = 0

  @property
  def name(self):
    return self._name

  @property
  def embed_dim(self):
    return 3

  @property
  def model(self):
    return None

  def _compute_fingerprint(self):
    return f"weights-{self._weights_version}"

  def tokenize(self, prompts):
    lengths = [min(len(p.split()) + 1, self.max_length) for p in prompts]
    mask = np.arange(self.max_length)[None] < np.array(lengths)[:, None]
    ids = np.where(mask, 5, 0).astype(np.int32)
    return ids, mask

  def _token_embeddings(self, token_ids, mask):
    self.encoded += len(token_ids)
    positions = np.arange(self.max_length, dtype=np.float32)
    return (token_ids[..., None] * positions[None, :, None] +
            np.arange(3, dtype=np.float32)).astype(np.float32)


def _npz_files(directory):
  return sorted(f for f in os.listdir(directory))


def test_second_call_reuses_the_file(tmp_path):
  encoder = CountingEncoder()
  prompts = ["tench", "great white shark"]
  first = embedding_cache.encode(str(tmp_path), encoder, prompts)
  assert encoder.encoded == 2
  [name] = _npz_files(tmp_path)
  assert name.startswith("text_embeddings_") and name.endswith(".npz")
  mtime = os.path.getmtime(tmp_path / name)

  second = embedding_cache.encode(str(tmp_path), encoder, prompts)
  assert encoder.encoded == 2
  assert os.path.getmtime(tmp_path / name) == mtime
  np.testing.assert_array_equal(second.tokens, first.tokens)
  np.testing.assert_array_equal(second.mask, first.mask)
  np.testing.assert_array_equal(second.pooled, first.pooled)
  assert second.mask.dtype == bool and second.tokens.dtype == np.float32

  # A new encoder object with the same weights reuses it too.
  other = CountingEncoder()
  embedding_cache.encode(str(tmp_path), other, prompts)
  assert other.encoded == 0


def test_any_change_of_the_key_re_encodes(tmp_path):
  prompts = ["tench", "great white shark"]
  embedding_cache.encode(str(tmp_path), CountingEncoder(), prompts)
  changes = [
      (CountingEncoder(), ["tench", "goldfish"]),
      (CountingEncoder(), ["great white shark", "tench"]),
      (CountingEncoder(), prompts + ["goldfish"]),
      (CountingEncoder(max_length=8), prompts),
      (CountingEncoder(weights_version="v2"), prompts),
      (CountingEncoder(name="renamed"), prompts),
  ]
  for encoder, changed_prompts in changes:
    embeddings = embedding_cache.encode(str(tmp_path), encoder, changed_prompts)
    assert encoder.encoded == len(changed_prompts)
    assert embeddings.tokens.shape == (len(changed_prompts), encoder.max_length,
                                       3)
  assert len(_npz_files(tmp_path)) == 1 + len(changes)


def test_a_damaged_or_foreign_file_is_re_encoded_and_replaced(tmp_path):
  prompts = ["tench"]
  encoder = CountingEncoder()
  path = embedding_cache.cache_path(str(tmp_path),
                                    embedding_cache.cache_key(encoder, prompts))
  os.makedirs(tmp_path, exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"not an npz")
  embedding_cache.encode(str(tmp_path), encoder, prompts)
  assert encoder.encoded == 1
  assert embedding_cache.load(str(tmp_path), encoder, prompts) is not None

  # Another key's file under this key's name is not trusted.
  foreign = CountingEncoder()
  foreign_path = embedding_cache.cache_path(
      str(tmp_path), embedding_cache.cache_key(foreign, ["goldfish"]))
  embedding_cache.encode(str(tmp_path), foreign, ["goldfish"])
  os.replace(foreign_path, path)
  assert embedding_cache.load(str(tmp_path), encoder, prompts) is None
  embedding_cache.encode(str(tmp_path), encoder, prompts)
  assert encoder.encoded == 2
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_encoder_pads_zeroes_and_pools_over_valid_tokens():
  encoder = CountingEncoder(max_length=4)
  embeddings = encoder.encode(["a b", "a b c d e f"])
  assert embeddings.mask.tolist() == [[True, True, True, False],
                                      [True, True, True, True]]
  assert not embeddings.tokens[0, 3].any()
  np.testing.assert_allclose(embeddings.pooled[0],
                             embeddings.tokens[0, :3].mean(0))
  np.testing.assert_allclose(
      embeddings.gather([1, 0]).pooled, embeddings.pooled[::-1])
