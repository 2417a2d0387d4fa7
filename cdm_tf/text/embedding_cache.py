"""Text embeddings of a prompt set, encoded once and reused from disk.

A class-conditional cascade needs the embeddings of the same prompts (e.g.
the 1000 ImageNet class names) at every training step and every sampling
run; the encoder is frozen, so they are computed once and stored as an .npz
in a cache directory. The file's name is a digest of its key, and the key is
stored inside too:

  key = encoder name + encoder fingerprint (weights, vocabulary, settings)
        + max_length + the prompts, in order + a format version

so any change of encoder, weights, length or prompts misses the cache and
re-encodes, and a reader checks the stored key before trusting a file.
Files are written atomically (``cdm_tf.files``): a reader never sees half a
file, and concurrent writers of the same key write the same content.
"""

import hashlib
import io
import json
import os
import zipfile

from absl import logging
import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.text import encoder as encoder_lib

FORMAT_VERSION = 1
FILE_PREFIX = "text_embeddings_"


def cache_key(encoder, prompts):
  """The JSON-able key of ``encoder``'s embeddings of ``prompts``."""
  return {
      "format": FORMAT_VERSION,
      "encoder": encoder.name,
      "fingerprint": encoder.fingerprint,
      "max_length": encoder.max_length,
      "prompts": encoder_lib.check_prompts(prompts),
  }


def _key_json(key):
  return json.dumps(key, sort_keys=True, ensure_ascii=False)


def cache_path(cache_dir, key):
  digest = hashlib.sha256(_key_json(key).encode("utf-8")).hexdigest()
  return os.path.join(cache_dir, f"{FILE_PREFIX}{digest[:32]}.npz")


def _serialize(embeddings, key):
  buffer = io.BytesIO()
  # Compressed: for short prompts most of the [B, L, D] tokens are padding
  # zeros.
  np.savez_compressed(buffer, tokens=embeddings.tokens, mask=embeddings.mask,
                      pooled=embeddings.pooled,
                      key=np.array(_key_json(key)))
  return buffer.getvalue()


def load(cache_dir, encoder, prompts):
  """Cached ``TextEmbeddings`` for this key, or None (absent or stale)."""
  key = cache_key(encoder, prompts)
  path = cache_path(cache_dir, key)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      with np.load(io.BytesIO(f.read())) as stored:
        if str(stored["key"]) != _key_json(key):
          logging.warning("%s holds another key; re-encoding", path)
          return None
        embeddings = encoder_lib.TextEmbeddings(
            tokens=stored["tokens"], mask=stored["mask"],
            pooled=stored["pooled"])
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    logging.warning("unreadable embedding cache %s (%s); re-encoding",
                    path, e)
    return None
  if embeddings.tokens.shape != (len(key["prompts"]), encoder.max_length,
                                 encoder.embed_dim):
    logging.warning("%s has shape %s; re-encoding", path,
                    embeddings.tokens.shape)
    return None
  return embeddings


def encode(cache_dir, encoder, prompts, batch_size=64):
  """``encoder.encode(prompts)``, from ``cache_dir`` when cached there.

  Args:
    cache_dir: directory of the .npz files (created when needed).
    encoder: a ``cdm_tf.text.encoder.TextEncoder``.
    prompts: list of str.
    batch_size: prompts per encoder call when encoding.

  Returns:
    ``TextEmbeddings`` of the prompts, in order.
  """
  prompts = encoder_lib.check_prompts(prompts)
  cached = load(cache_dir, encoder, prompts)
  if cached is not None:
    logging.info("reusing %d cached %s prompt embeddings from %s",
                 len(prompts), encoder.name, cache_dir)
    return cached
  embeddings = encoder.encode(prompts, batch_size=batch_size)
  key = cache_key(encoder, prompts)
  path = cache_path(cache_dir, key)
  files.atomic_write_bytes(path, _serialize(embeddings, key))
  logging.info("encoded %d prompts with %s into %s", len(prompts),
               encoder.name, path)
  return embeddings
