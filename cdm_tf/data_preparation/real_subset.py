"""A class-balanced subset of a real training split, as a data directory.

The low-data experiments (a fraction of the real set, alone or with
synthetic images) and the reference for the Classification Accuracy Score
(a classifier trained on as many real images per class as the synthetic set
holds) train on a subset like on any real set: ``write_subset`` writes it
once, and every binary takes it as ``--real_data_dir``.

The subset is the first ``floor(fraction x count[c])`` (or ``per_class``)
records of each class c in file order, so the source and the size alone fix
it. Records are copied byte for byte in their own format (TPU or TFDS); the
other splits (validation) are symbolic links to the source's files, and
classes.json is copied. The train split's manifest is written last: a
directory with it is complete, and writing again with the same settings
does nothing.
"""

import math
import os

import numpy as np
import tensorflow as tf

from cdm_tf import settings_record
from cdm_tf.data import class_counts
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import mixing
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest

TRAIN_SPLIT = "train"
LINKED_SPLITS = ("validation",)
EXAMPLES_PER_SHARD = 1024
_PARSE_BATCH = 256


def class_limits(counts, fraction=None, per_class=None):
  """Records kept per class: floor(fraction x count) or per_class."""
  counts = np.asarray(counts, np.int64)
  if (fraction is None) == (per_class is None):
    raise ValueError("give one of fraction and per_class")
  if fraction is not None:
    if not 0.0 < fraction <= 1.0:
      raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    # The generator's rounding, so a subset matches a synthetic set of the
    # same multiplier class by class.
    return mixing.class_index_limits(counts, fraction)
  if per_class < 1:
    raise ValueError(f"per_class must be >= 1, got {per_class}")
  short = np.flatnonzero(counts < per_class)
  if short.size:
    raise ValueError(f"{short.size} classes have fewer than {per_class} "
                     f"records, e.g. class {short[0]}: {counts[short[0]]}")
  return np.full_like(counts, per_class)


def _settings(source_dir, fraction, per_class):
  return {
      "source": os.path.abspath(source_dir), "fraction": fraction,
      "per_class": per_class, "selection": "first per class in file order"
  }


def _labelled_records(files, keys):
  """(serialized records [b], 0-based labels [b]) in file order."""
  spec = {keys.label: tf.io.FixedLenFeature([], tf.int64)}
  return tf.data.TFRecordDataset(files).batch(_PARSE_BATCH).map(lambda raw: (
      raw, tf.io.parse_example(raw, spec)[keys.label] - keys.label_offset))


def _link_split(source_dir, output_dir, split):
  for path in imagenet_reader.list_files(source_dir, split):
    link = os.path.join(output_dir, os.path.basename(path))
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(path), link)
  manifest = split_manifest.file_path(source_dir, split)
  if os.path.exists(manifest):
    link = split_manifest.file_path(output_dir, split)
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(manifest), link)


def write_subset(source_dir, output_dir, fraction=None, per_class=None,
                 examples_per_shard=EXAMPLES_PER_SHARD):
  """Writes the subset of ``source_dir``'s train split into ``output_dir``.

  Args:
    source_dir: a real data directory (train and validation shards, and
      classes.json unless it is ImageNet).
    output_dir: the subset's directory (local; created).
    fraction: keep floor(fraction x count) records of each class.
    per_class: or keep this many of each class.
    examples_per_shard: records per output shard.

  Returns:
    The train split's ``split_manifest.Manifest``.

  Raises:
    ValueError: bad sizes, a class with too few records, or an output
      directory holding a subset made with other settings.
    FileNotFoundError: a missing source directory or split.
  """
  source_dir, output_dir = os.fspath(source_dir), os.fspath(output_dir)
  if not os.path.isdir(source_dir):
    raise FileNotFoundError(f"{source_dir}: no such data directory")
  if os.path.abspath(source_dir) == os.path.abspath(output_dir):
    raise ValueError("the subset's directory must differ from the source's")
  settings = _settings(source_dir, fraction, per_class)
  if _check_existing(output_dir, settings):
    return split_manifest.read(output_dir, TRAIN_SPLIT)
  classes = class_names.load_classes(source_dir)
  num_classes = len(classes)
  files = imagenet_reader.list_files(source_dir, TRAIN_SPLIT)
  keys = imagenet_reader.feature_keys(imagenet_reader.detect_format(files[0]))
  limits = class_limits(
      class_counts.count_per_class(files, num_classes=num_classes), fraction,
      per_class)
  total = int(limits.sum())
  if not total:
    raise ValueError(f"fraction {fraction} keeps no record of any class")

  os.makedirs(output_dir, exist_ok=True)
  shard_writer.remove_stale_temporaries(output_dir)
  infos = _write_shards(_labelled_records(files, keys), source_dir, output_dir,
                        limits, num_classes, examples_per_shard)
  for split in LINKED_SPLITS:
    _link_split(source_dir, output_dir, split)
  class_names.write_classes_file(output_dir, classes)
  image_format = _source_image_format(source_dir)
  return split_manifest.write(output_dir, TRAIN_SPLIT, infos, num_classes,
                              image_format, settings)


def _check_existing(output_dir, settings):
  """Whether ``output_dir`` already holds this subset (its manifest is the
  record); refuses one made with other settings."""
  path = split_manifest.file_path(output_dir, TRAIN_SPLIT)

  def compare(manifest, current):
    return settings_record.differences(manifest.get("settings"), current)

  return settings_record.check(
      path, settings, lambda found:
      (f"{output_dir} holds a subset made with other settings "
       f"({settings_record.summary(found)}; see {path}); "
       "choose another directory"), compare=compare)


def _write_shards(records, source_dir, output_dir, limits, num_classes,
                  examples_per_shard):
  """Writes the first ``limits[c]`` records of each class c from
  ``records`` (batches of (serialized, label)) as train shards; returns
  their ``ShardInfo``s."""
  total = int(limits.sum())
  num_shards = max(1, math.ceil(total / examples_per_shard))
  kept = np.zeros_like(limits)
  infos, writer, written = [], None, 0
  try:
    for raw, labels in records.as_numpy_iterator():
      for record, label in zip(raw, labels):
        if not 0 <= label < num_classes:
          raise ValueError(f"{source_dir}: label {label} outside "
                           f"0..{num_classes - 1}")
        if kept[label] >= limits[label]:
          continue
        if writer is None:
          writer = shard_writer.ShardWriter(
              os.path.join(
                  output_dir,
                  shard_writer.shard_file_name(TRAIN_SPLIT, len(infos),
                                               num_shards)), num_classes,
              overwrite=True)
        writer.write(record, int(label))
        kept[label] += 1
        written += 1
        if written % examples_per_shard == 0 or written == total:
          infos.append(writer.close())
          writer = None
      if written == total:
        break
  finally:
    if writer is not None:
      writer.abort()
  return infos


def _source_image_format(source_dir):
  if os.path.exists(split_manifest.file_path(source_dir, TRAIN_SPLIT)):
    return split_manifest.read(source_dir, TRAIN_SPLIT).image_format
  return "jpeg"  # ImageNet's own shards have no manifest
