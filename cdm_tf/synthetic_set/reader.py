"""Reading our synthetic records back, with the provenance readers use.

Any ImageNet reader reads a synthetic shard (it is in the TPU tool's
schema); these functions also parse ``cdm/class_index``, the example's
index within its class, which class-balanced sampling
(``mixing.class_balanced_subset``) filters on. Images may stay encoded
while filtering and shuffling (``decode=False``), which keeps a shuffle
buffer small, and are decoded afterwards with ``decode_images``.
"""

import tensorflow as tf

from cdm_tf.data import schema


def _features():
  return {
      schema.TPU_IMAGE: tf.io.FixedLenFeature([], tf.string),
      schema.TPU_LABEL: tf.io.FixedLenFeature([], tf.int64),
      schema.CLASS_INDEX: tf.io.FixedLenFeature([], tf.int64),
  }


def parse_record(serialized, decode=True):
  """Parses one of our synthetic records, with its class index.

  Args:
    serialized: Scalar string tensor, a TPU-schema example written by
      ``shard_writer.encode_example`` with provenance.
    decode: Whether to decode the image; without decoding the element keeps
      the encoded bytes under ``schema.TPU_IMAGE`` (cheap to filter first).

  Returns:
    ``{schema.IMAGE: uint8 [H, W, 3], schema.LABEL: int32 0-based,
    schema.CLASS_INDEX: int64}``, or ``schema.TPU_IMAGE`` instead of
    ``schema.IMAGE`` when ``decode`` is False.
  """
  parsed = tf.io.parse_single_example(serialized, _features())
  element = {
      schema.LABEL: tf.cast(parsed[schema.TPU_LABEL] - schema.TPU_LABEL_OFFSET,
                            tf.int32),
      schema.CLASS_INDEX: parsed[schema.CLASS_INDEX],
  }
  if decode:
    element[schema.IMAGE] = decode_image(parsed[schema.TPU_IMAGE])
  else:
    element[schema.TPU_IMAGE] = parsed[schema.TPU_IMAGE]
  return element


def decode_image(encoded):
  """Decodes JPEG or PNG bytes to uint8 [H, W, 3]."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _records_of(path, decode, num_parallel_calls=None):
  """The parsed records of one shard, each with its ``schema.SOURCE``."""
  return tf.data.TFRecordDataset(path).map(
      lambda r: dict(parse_record(r, decode), **{schema.SOURCE: path}),
      num_parallel_calls=num_parallel_calls)


def read(paths, decode=True, num_parallel_calls=tf.data.AUTOTUNE):
  """Our synthetic records from ``paths`` with class index and source.

  Args:
    paths: Shard paths, e.g. ``Manifest.shard_paths(directory)``.
    decode: See ``parse_record``; with False, call ``decode_images`` after
      filtering.
    num_parallel_calls: Parallelism of the parse map.

  Returns:
    A dataset of ``parse_record`` elements plus ``schema.SOURCE`` (the
    shard path), in file order.
  """
  paths = list(paths)
  if not paths:
    raise ValueError("no synthetic shard paths given")
  return tf.data.Dataset.from_tensor_slices(paths).flat_map(
      lambda path: _records_of(path, decode, num_parallel_calls))


def read_interleaved(paths, seed, cycle_length):
  """Undecoded records of ``paths`` (as ``read(paths, decode=False)``),
  the files shuffled and their records interleaved one by one.

  For training: a generated split may be written class by class, and a
  shuffle buffer over files in order would not mix it.

  Args:
    paths: Shard paths (at least one).
    seed: Seed of the file order (reshuffled each pass), or None; with a
      seed the interleaving is deterministic too.
    cycle_length: At most this many files are read at once.
  """
  paths = list(paths)
  shuffled = tf.data.Dataset.from_tensor_slices(paths).shuffle(
      len(paths), seed=seed, reshuffle_each_iteration=True)
  return shuffled.interleave(lambda path: _records_of(path, decode=False),
                             cycle_length=min(cycle_length, len(paths)),
                             num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=seed is not None)


def decode_images(dataset, num_parallel_calls=tf.data.AUTOTUNE):
  """Decodes the ``schema.TPU_IMAGE`` bytes of undecoded elements."""

  def decode(element):
    element = dict(element)
    element[schema.IMAGE] = decode_image(element.pop(schema.TPU_IMAGE))
    return element

  return dataset.map(decode, num_parallel_calls=num_parallel_calls)
