"""Images per class of a real ImageNet split, counted once and cached.

The scan parses labels only (no image decoding), reads files in parallel
with tf.data, and checks every file was read to its end (a record takes its
length + 16 bytes), so a corrupt or truncated file is reported by name
instead of silently lowering the counts.

The result is cached as JSON next to the data (``class_counts-<key>.json``,
a ``content_cache`` entry). The key hashes the format, the number of
classes and the shard names and sizes, so a changed file list gets a new
cache file. If the data directory is not writable (e.g. a read-only bucket)
the cache goes to ``cache_dir`` when given, else it is not written.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from cdm_tf import content_cache
from cdm_tf.data import imagenet_reader

CACHE_PREFIX = "class_counts-"
_CACHE_VERSION = 1
_BATCH = 1024
_MISSING_LABEL = -(2**62)


def cache_entry(files, sizes, record_format, num_classes, cache_dir=None):
  """The ``content_cache.Entry`` of a file list (names and sizes) and its
  reading: next to the data, then in ``cache_dir``."""
  description = {
      "version": _CACHE_VERSION,
      "format": record_format,
      "num_classes": num_classes,
      "files": [[os.path.basename(f), s] for f, s in zip(files, sizes)],
  }
  return content_cache.Entry.of(
      description, prefix=CACHE_PREFIX, extension=content_cache.JSON,
      directories=content_cache.directories(files, cache_dir),
      what="class-count cache")


def _check_cached(num_classes):

  def check(cached):
    counts = cached.get("counts")
    if not isinstance(counts, list) or len(counts) != num_classes:
      return f"it holds no list of {num_classes} counts"
    return None

  return check


def _label_batches(files, label_key, cycle_length):
  """Per file: batches of (file index, labels, parsed?, count, bytes).

  Parsing runs inside a one-element dataset with ignore_errors() and a
  fallback, so a record that is no tf.train.Example marks its batch instead
  of failing the scan anonymously; the caller then locates it.
  """
  spec = {
      label_key: tf.io.FixedLenFeature([], tf.int64,
                                       default_value=_MISSING_LABEL)
  }

  def parse(file_index, raw, count, num_bytes):
    labels = tf.io.parse_example(raw, spec)[label_key]
    return file_index, labels, tf.constant(True), count, num_bytes

  def unparsable(file_index, raw, count, num_bytes):
    del raw
    return (file_index, tf.zeros([0], tf.int64), tf.constant(False), count,
            num_bytes)

  def attempt_parse(*batch):
    one = tf.data.Dataset.from_tensors(batch)
    return one.map(parse).ignore_errors().concatenate(
        one.map(unparsable)).take(1)

  def batches_of_file(file_index, path):

    def describe(raw):
      count = tf.size(raw, out_type=tf.int64)
      num_bytes = (tf.reduce_sum(tf.cast(tf.strings.length(raw), tf.int64)) +
                   imagenet_reader.RECORD_OVERHEAD_BYTES * count)
      return file_index, raw, count, num_bytes

    raw_batches = tf.data.TFRecordDataset(path).ignore_errors().batch(_BATCH)
    return raw_batches.map(describe).flat_map(attempt_parse)

  table = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(files), dtype=tf.int64), tf.constant(files)))
  return table.interleave(batches_of_file,
                          cycle_length=max(1, min(cycle_length, len(files))),
                          num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=False).prefetch(tf.data.AUTOTUNE)


def _first_unparsable(path, start, count, label_key):
  """Finds which of records start..start+count-1 of path fails to parse."""
  spec = {
      label_key: tf.io.FixedLenFeature([], tf.int64,
                                       default_value=_MISSING_LABEL)
  }
  records = tf.data.TFRecordDataset(path).skip(start).take(count)
  for offset, raw in enumerate(records):
    try:
      tf.io.parse_single_example(raw, spec)
    except tf.errors.OpError as e:
      return start + offset, e.message
  return start, "parsing failed"


def _scan(files, sizes, keys, num_classes, cycle_length, skip_corrupt):
  counts = np.zeros(num_classes, np.int64)
  records_read = [0] * len(files)
  bytes_read = [0] * len(files)

  def problem(message):
    if not skip_corrupt:
      raise ValueError(message)
    logging.warning("class counts: skipping: %s", message)

  for file_index, labels, parsed, count, num_bytes in _label_batches(
      files, keys.label, cycle_length).as_numpy_iterator():
    path = files[file_index]
    start = records_read[file_index]
    records_read[file_index] += int(count)
    bytes_read[file_index] += int(num_bytes)
    if not parsed:
      index, reason = _first_unparsable(path, start, int(count), keys.label)
      problem(f"{path}, record {index}: not a valid tf.train.Example with "
              f"an int64 {keys.label!r} ({reason}); its batch of {int(count)}"
              " records is not counted")
      continue
    labels = labels - keys.label_offset
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
      stored = int(labels[bad[0]]) + keys.label_offset
      what = ("is missing" if stored == _MISSING_LABEL else
              f"= {stored} is outside {keys.label_offset}.."
              f"{keys.label_offset + num_classes - 1}")
      problem(f"{path}, record {start + int(bad[0])}: label {keys.label!r} "
              f"{what} ({bad.size} such records in this batch)")
      labels = np.delete(labels, bad)
    counts += np.bincount(labels, minlength=num_classes)

  for path, size, got, records in zip(files, sizes, bytes_read, records_read):
    if got != size:
      problem(f"{path}: reading stopped at record {records} (byte {got} of "
              f"{size}): the record is corrupt (bad checksum) or the file is "
              "truncated; copy or write the file again")
  return counts


def count_per_class(files, *, split=None, record_format=None, num_classes=1000,
                    cache_dir=None, use_cache=True, cycle_length=16,
                    skip_corrupt=False):
  """Number of examples of each class 0..num_classes-1 in a split.

  Args:
    files: anything ``imagenet_reader.list_files`` accepts (a directory
      needs ``split``).
    split: split name when ``files`` is a directory.
    record_format: ``schema.FORMAT_TPU`` / ``schema.FORMAT_TFDS``; None
      detects it.
    num_classes: labels must lie in 0..num_classes-1 (0-based).
    cache_dir: where to keep the cache if the data directory is not
      writable (it is also searched for an existing cache).
    use_cache: False always rescans (and does not write a cache).
    cycle_length: files read at once.
    skip_corrupt: log and leave out bad records instead of raising.

  Returns:
    int64 numpy array [num_classes].

  Raises:
    ValueError: a label out of range, an unparsable record or a corrupt or
      truncated file; the message names the file (and the record).
  """
  files = imagenet_reader.list_files(files, split)
  if record_format is None:
    record_format = imagenet_reader.detect_format(files[0])
  keys = imagenet_reader.feature_keys(record_format)
  sizes = imagenet_reader.file_sizes(files)
  entry = cache_entry(files, sizes, record_format, num_classes, cache_dir)
  if use_cache:
    cached, _ = entry.read(_check_cached(num_classes))
    if cached is not None:
      return np.asarray(cached["counts"], dtype=np.int64)

  counts = _scan(files, sizes, keys, num_classes, cycle_length, skip_corrupt)
  if use_cache:
    entry.write({
        "record_format": record_format,
        "num_classes": num_classes,
        "num_files": len(files),
        "split": split,
        "total": int(counts.sum()),
        "counts": counts.tolist(),
    })
  return counts
