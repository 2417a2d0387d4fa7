"""Text embeddings of a prompt set, encoded once and reused from disk.

A class-conditional cascade needs the embeddings of the same prompts (e.g.
the 1000 ImageNet class names) at every training step and every sampling
run; the encoder is frozen, so they are computed once and stored as an .npz
in a cache directory (a ``content_cache`` entry). The file's name is a
digest of its key, and the key's digest is stored inside too:

  key = encoder name + encoder fingerprint (weights, vocabulary, settings)
        + max_length + the prompts, in order + a format version

so any change of encoder, weights, length or prompts misses the cache and
re-encodes, and a reader checks the stored key before trusting a file.
Files are written atomically: a reader never sees half a file, and
concurrent writers of the same key write the same content.
"""

from absl import logging

from cdm_tf import content_cache
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


def _entry(cache_dir, key):
  return content_cache.Entry.of(key, prefix=FILE_PREFIX,
                                extension=content_cache.NPZ,
                                directories=[cache_dir], what="embedding cache")


def cache_path(cache_dir, key):
  return _entry(cache_dir, key).paths[0]


def _check_shape(encoder, num_prompts):
  expected = (num_prompts, encoder.max_length, encoder.embed_dim)

  def check(arrays):
    if not {"tokens", "mask", "pooled"} <= set(arrays):
      return "it lacks tokens, mask or pooled"
    if arrays["tokens"].shape != expected:
      return f"its tokens have shape {arrays['tokens'].shape}, not {expected}"
    return None

  return check


def load(cache_dir, encoder, prompts):
  """Cached ``TextEmbeddings`` for this key, or None (absent or stale)."""
  key = cache_key(encoder, prompts)
  stored, _ = _entry(cache_dir,
                     key).read(_check_shape(encoder, len(key["prompts"])))
  if stored is None:
    return None
  return encoder_lib.TextEmbeddings(tokens=stored["tokens"],
                                    mask=stored["mask"],
                                    pooled=stored["pooled"])


def encode(cache_dir, encoder, prompts, batch_size=64):
  """``encoder.encode(prompts)``, from ``cache_dir`` when cached there.

  Args:
    cache_dir: directory of the .npz files (created when needed; if it
      cannot be written the embeddings are returned uncached, with a
      warning).
    encoder: a ``cdm_tf.text.encoder.TextEncoder``.
    prompts: list of str.
    batch_size: prompts per encoder call when encoding.

  Returns:
    ``TextEmbeddings`` of the prompts, in order.
  """
  prompts = encoder_lib.check_prompts(prompts)
  cached = load(cache_dir, encoder, prompts)
  if cached is not None:
    logging.info("reusing %d cached %s prompt embeddings from %s", len(prompts),
                 encoder.name, cache_dir)
    return cached
  embeddings = encoder.encode(prompts, batch_size=batch_size)
  path = _entry(cache_dir, cache_key(encoder, prompts)).write({
      "tokens": embeddings.tokens, "mask": embeddings.mask,
      "pooled": embeddings.pooled
  })
  logging.info("encoded %d prompts with %s into %s", len(prompts), encoder.name,
               path or "no cache (not writable)")
  return embeddings
