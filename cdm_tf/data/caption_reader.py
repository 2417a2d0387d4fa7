"""Reading captioned image-text TFRecords, for text-to-image pretraining.

Imagen's stages are pretrained on (image, caption) pairs before Azizi et
al. fine-tune them on ImageNet's class names. Captioned records here are
TPU-schema examples with ``image/encoded`` and ``image/caption``
(``schema.TPU_CAPTION``, UTF-8 bytes); the class label
(``image/class/label``, 1-based) is optional and reads as ``NO_LABEL`` when
absent, since web image-text data has none.

``read_dataset`` lists, shards, interleaves and shuffles files as
``imagenet_reader.read_dataset`` does and yields ``{schema.IMAGE,
schema.CAPTION, schema.LABEL, schema.SOURCE}``. It is a plain reader: a
record without an image or caption, or one the decoder rejects, stops
iteration with TensorFlow's own error (which names the missing feature but
not the file); ``imagenet_reader.explain_record`` diagnoses a single record.
"""

import tensorflow as tf

from cdm_tf.data import image_decoding
from cdm_tf.data import imagenet_reader
from cdm_tf.data import input_sharding
from cdm_tf.data import schema

NO_LABEL = -1


def _features():
  return {
      schema.TPU_IMAGE: tf.io.FixedLenFeature([], tf.string),
      schema.TPU_CAPTION: tf.io.FixedLenFeature([], tf.string),
      # The stored label is 1-based, so a missing one maps to NO_LABEL.
      schema.TPU_LABEL: tf.io.FixedLenFeature(
          [], tf.int64, default_value=NO_LABEL + schema.TPU_LABEL_OFFSET),
  }


def parse_record(serialized, path=""):
  """One captioned record: decoded image, caption and 0-based label."""
  parsed = tf.io.parse_single_example(serialized, _features())
  return {
      schema.IMAGE: image_decoding.decode_rgb(parsed[schema.TPU_IMAGE]),
      schema.CAPTION: parsed[schema.TPU_CAPTION],
      schema.LABEL: tf.cast(parsed[schema.TPU_LABEL] - schema.TPU_LABEL_OFFSET,
                            tf.int32),
      schema.SOURCE: tf.convert_to_tensor(path),
  }


def read_dataset(files, *, split=None, shuffle=True,
                 shuffle_buffer=imagenet_reader.DEFAULT_SHUFFLE_BUFFER,
                 seed=None, cycle_length=imagenet_reader.DEFAULT_CYCLE_LENGTH,
                 repeat=False, input_context=None):
  """A dataset of decoded captioned examples.

  Args:
    files: what ``imagenet_reader.list_files`` accepts (a directory with
      ``split``, a pattern, files).
    split: the split's name when ``files`` is a directory.
    shuffle: shuffle file order and records (seeded by ``seed``).
    shuffle_buffer: records in the shuffle buffer (encoded, so cheap).
    seed: makes file and record order reproducible.
    cycle_length: files read at once.
    repeat: repeat forever (each pass reshuffles).
    input_context: a ``tf.distribute.InputContext``: read only this input
      pipeline's share of the files.

  Returns:
    A dataset of ``{schema.IMAGE: uint8 [H, W, 3], schema.CAPTION: string,
    schema.LABEL: int32 (NO_LABEL if the record has none), schema.SOURCE:
    string file path}``.
  """
  files = input_sharding.shard_files(imagenet_reader.list_files(files, split),
                                     input_context)
  file_list = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    file_list = file_list.shuffle(len(files), seed=seed,
                                  reshuffle_each_iteration=True)
  if repeat:
    file_list = file_list.repeat()
  records = file_list.interleave(
      lambda path: tf.data.TFRecordDataset(path).map(lambda record:
                                                     (record, path)),
      cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle or
      seed is not None)
  if shuffle:
    # Shuffle encoded records: far smaller than decoded images.
    records = records.shuffle(shuffle_buffer,
                              seed=None if seed is None else seed + 1,
                              reshuffle_each_iteration=True)
  return records.map(parse_record, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=not shuffle or seed is not None)
