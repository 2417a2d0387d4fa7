"""sha256 fingerprints: the one way this package tells whether weights,
files or settings are the ones something was made with.

Every record that must notice a change (an export's weights, a generated
set's stages, a cache's inputs, a text encoder's files) hashes through
these three functions, so two records of the same thing always agree.
"""

import hashlib
import json

import numpy as np
import tensorflow as tf

# Files up to this size are hashed whole; larger ones (multi-GB encoder
# checkpoints) by their size and evenly spaced chunks, which tells apart
# any two different releases in seconds instead of minutes.
FULL_HASH_MAX_BYTES = 1 << 30
SAMPLED_HASH_CHUNKS = 64
SAMPLED_HASH_CHUNK_BYTES = 1 << 20


def of_arrays(values):
  """sha256 (hex) of arrays or variables, in order, bytes as stored.

  Values only: the same weights loaded into a model whose layers Keras
  named differently give the same fingerprint.
  """
  digest = hashlib.sha256()
  for value in values:
    digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
  return digest.hexdigest()


def of_file(path, sampled_above=None):
  """sha256 (hex) of a file's bytes.

  With ``sampled_above`` (bytes), a larger file is hashed by its size and
  ``SAMPLED_HASH_CHUNKS`` evenly spaced chunks instead of whole.
  """
  size = tf.io.gfile.stat(path).length
  sampled = sampled_above is not None and size > sampled_above
  digest = hashlib.sha256(
      str(size).encode() if sampled_above is not None else b"")
  with tf.io.gfile.GFile(path, "rb") as f:
    if not sampled:
      while chunk := f.read(1 << 22):
        digest.update(chunk)
    else:
      step = (size - SAMPLED_HASH_CHUNK_BYTES) // (SAMPLED_HASH_CHUNKS - 1)
      for i in range(SAMPLED_HASH_CHUNKS):
        f.seek(i * step)
        digest.update(f.read(SAMPLED_HASH_CHUNK_BYTES))
  return digest.hexdigest()


def of_json(value):
  """sha256 (hex) of a JSON-like value, keys sorted (key order and tuples
  versus lists do not change it)."""
  text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()
