"""A split's manifest, ``manifest-<split>.json``: what its shards hold.

Written once every shard of a split is complete (by generation, the
Fashion-MNIST conversion, a real subset); its per-shard and per-class
counts are what class-balanced sampling and the TFDS builder trust, so
``read`` checks that they add up and ``read_checked`` also checks them
against one label scan of the shards. ``rebuild`` writes it again from the
shards of a restarted job.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.data import class_counts
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer

PREFIX = "manifest-"
EXTENSION = ".json"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
  """Contents of a split's manifest (``manifest-<split>.json``).

  Attributes:
    split: Split name.
    num_classes: Size of the class table.
    image_format: "jpeg" or "png".
    shards: ``ShardInfo`` of each complete shard, sorted by name.
    num_shards: Shards the split is meant to have (from the shard names).
    num_examples: Total records.
    class_counts: Records per class over all shards.
    settings: Free-form JSON-able dict (generator config, ...).
  """
  split: str
  num_classes: int
  image_format: str
  shards: tuple[shard_writer.ShardInfo, ...]
  num_shards: int
  num_examples: int
  class_counts: tuple[int, ...]
  settings: dict

  @property
  def complete(self):
    """Whether all ``num_shards`` shards are present."""
    return len(self.shards) == self.num_shards

  def shard_paths(self, directory):
    return [os.path.join(directory, s.file_name) for s in self.shards]

  def to_json(self):
    return {
        "version": VERSION,
        "record_format": schema.FORMAT_TPU,
        "split": self.split,
        "num_classes": self.num_classes,
        "image_format": self.image_format,
        "num_shards": self.num_shards,
        "complete": self.complete,
        "num_examples": self.num_examples,
        "class_counts": list(self.class_counts),
        "shards": [s.to_json() for s in self.shards],
        "settings": self.settings,
    }

  @classmethod
  def from_json(cls, obj):
    if obj.get("version") != VERSION:
      raise ValueError(f"unsupported manifest version {obj.get('version')}")
    split = schema.check_split_name(obj["split"])
    shards = tuple(shard_writer.ShardInfo.from_json(s) for s in obj["shards"])
    for shard in shards:
      # A name is joined to the set's directory: one that is not a plain
      # shard name of this split (../x, /abs/path) would be read from
      # outside the set.
      parsed = shard_writer.parse_shard_file_name(shard.file_name)
      if (os.path.basename(shard.file_name) != shard.file_name or
          parsed is None or parsed[0] != split):
        raise ValueError(
            f"shard name {shard.file_name!r} is not a file of split "
            f"{split!r} in the set's directory (expected e.g. "
            f"{shard_writer.shard_file_name(split, 0, 1)}); rebuild the "
            "manifest with split_manifest.rebuild")
    manifest = cls(split=split, num_classes=int(obj["num_classes"]),
                   image_format=obj["image_format"], shards=shards,
                   num_shards=int(obj["num_shards"]),
                   num_examples=int(obj["num_examples"]),
                   class_counts=tuple(int(c) for c in obj["class_counts"]),
                   settings=dict(obj.get("settings") or {}))
    manifest.check_totals()
    return manifest

  def check_totals(self):
    """Raises ValueError unless the counts add up: each shard's classes to
    its examples, the shards to the split's totals."""
    totals = np.zeros([self.num_classes], np.int64)
    for shard in self.shards:
      if (len(shard.class_counts) != self.num_classes or
          sum(shard.class_counts) != shard.num_examples):
        raise ValueError(f"shard {shard.file_name}'s class counts do not add "
                         f"up to its {shard.num_examples} examples")
      totals += shard.class_counts
    if self.complete and (tuple(int(t) for t in totals) != self.class_counts or
                          int(totals.sum()) != self.num_examples):
      raise ValueError("the split's class counts and example count are not "
                       "the sums of its shards'")


def file_path(directory, split):
  """``<directory>/manifest-<split>.json``."""
  schema.check_split_name(split)
  return os.path.join(directory, f"{PREFIX}{split}{EXTENSION}")


def splits(directory):
  """Names of the splits that have a manifest in ``directory``, sorted."""
  names = files.glob_in(directory, f"{PREFIX}*{EXTENSION}")
  return sorted(os.path.basename(n)[len(PREFIX):-len(EXTENSION)] for n in names)


def make(split, shard_infos, num_classes, image_format, settings=None):
  """Builds (and checks) a ``Manifest`` from the shards' infos."""
  if image_format not in shard_writer.IMAGE_FORMATS:
    raise ValueError(f"image_format must be one of "
                     f"{shard_writer.IMAGE_FORMATS}, got {image_format!r}")
  shards = tuple(sorted(shard_infos, key=lambda s: s.file_name))
  if not shards:
    raise ValueError(f"split {split!r} has no shards")
  num_shards = set()
  for shard in shards:
    parsed = shard_writer.parse_shard_file_name(shard.file_name)
    if parsed is None or parsed[0] != split:
      raise ValueError(f"{shard.file_name} is not a shard name of split "
                       f"{split!r}")
    num_shards.add(parsed[2])
    if len(shard.class_counts) != num_classes:
      raise ValueError(f"{shard.file_name}: {len(shard.class_counts)} class "
                       f"counts for {num_classes} classes")
    if sum(shard.class_counts) != shard.num_examples:
      raise ValueError(f"{shard.file_name}: class counts sum to "
                       f"{sum(shard.class_counts)}, not {shard.num_examples}")
  if len(num_shards) != 1:
    raise ValueError(f"split {split!r} mixes shard totals {sorted(num_shards)}")
  if len({s.file_name for s in shards}) != len(shards):
    raise ValueError(f"split {split!r} lists a shard twice")
  class_counts = np.sum([s.class_counts for s in shards], axis=0)
  json.dumps(settings or {})  # Fails early on settings JSON can't hold.
  return Manifest(split=split, num_classes=num_classes,
                  image_format=image_format, shards=shards,
                  num_shards=num_shards.pop(),
                  num_examples=int(class_counts.sum()),
                  class_counts=tuple(int(c) for c in class_counts),
                  settings=dict(settings or {}))


def write(directory, split, shard_infos, num_classes, image_format,
          settings=None):
  """Writes ``<directory>/manifest-<split>.json`` atomically.

  Args:
    directory: The output directory of the shards.
    split: Split name, e.g. "train".
    shard_infos: ``ShardInfo`` of every complete shard of the split.
    num_classes: Size of the class table.
    image_format: "jpeg" or "png".
    settings: Free-form JSON-able dict, e.g. the generator config.

  Returns:
    The written ``Manifest``.
  """
  manifest = make(split, shard_infos, num_classes, image_format, settings)
  files.atomic_write_json(file_path(directory, split), manifest.to_json())
  return manifest


def read(directory, split):
  """Reads a split's manifest back as a ``Manifest``."""
  path = file_path(directory, split)
  obj = files.read_json(path)
  try:
    return Manifest.from_json(obj)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: malformed manifest ({e})") from e


def scan_shard(path, num_classes):
  """Counts the records of one shard per class, reading its labels.

  Returns:
    ``(ShardInfo, image_format)``; the format is None for an empty shard.

  Raises:
    ValueError: if a label is out of range or image formats differ.
  """
  features = {
      schema.TPU_LABEL: tf.io.FixedLenFeature([], tf.int64),
      schema.TPU_FORMAT: tf.io.FixedLenFeature([], tf.string),
  }
  counts = np.zeros([num_classes], np.int64)
  formats = set()
  records = tf.data.TFRecordDataset(path).batch(1024).map(
      lambda r: tf.io.parse_example(r, features))
  for batch in records.as_numpy_iterator():
    labels = batch[schema.TPU_LABEL] - schema.TPU_LABEL_OFFSET
    if labels.min() < 0 or labels.max() >= num_classes:
      raise ValueError(f"{path}: label outside 1..{num_classes}")
    counts += np.bincount(labels, minlength=num_classes)
    formats.update(f.decode("utf-8").lower() for f in batch[schema.TPU_FORMAT])
  if len(formats) > 1:
    raise ValueError(f"{path}: mixed image formats {sorted(formats)}")
  info = shard_writer.ShardInfo(file_name=os.path.basename(path),
                                num_examples=int(counts.sum()),
                                class_counts=tuple(int(c) for c in counts))
  return info, (formats.pop() if formats else None)


def rebuild(directory, split, num_classes, settings=None):
  """Rewrites a split's manifest by scanning its complete shards.

  For a restarted job: temporary files are ignored, the image format is read
  from the records, and the settings of an existing manifest are kept unless
  ``settings`` is given.

  Returns:
    The written ``Manifest``.
  """
  paths = shard_writer.complete_shards(directory, split)
  if not paths:
    raise ValueError(f"no complete shards of split {split!r} in {directory}")
  if settings is None and tf.io.gfile.exists(file_path(directory, split)):
    settings = read(directory, split).settings
  infos, formats = [], set()
  for path in paths:
    info, image_format = scan_shard(path, num_classes)
    infos.append(info)
    if image_format is not None:
      formats.add(image_format)
  if len(formats) != 1:
    raise ValueError(f"split {split!r} has image formats {sorted(formats)}")
  return write(directory, split, infos, num_classes, formats.pop(), settings)


def read_checked(directory, split):
  """The complete split's manifest, its counts checked against its shards.

  Class-balanced sampling trusts the manifest's counts, so they are
  compared with one label scan of the shards (``class_counts``, cached
  next to the set).

  Raises:
    ConfigError: no manifest, a malformed or incomplete one, unreadable
      shards, or counts that differ from the shards'.
  """
  path = file_path(directory, split)
  if not tf.io.gfile.exists(path):
    raise configuration.ConfigError(
        f"{path} not found: a synthetic set needs its manifest (written by "
        "tools/generate.py; split_manifest.rebuild rebuilds it from the "
        "shards)")
  try:
    manifest = read(directory, split)
  except ValueError as e:
    raise configuration.ConfigError(str(e)) from e
  if not manifest.complete:
    raise configuration.ConfigError(
        f"synthetic set {directory} is incomplete: {len(manifest.shards)} of "
        f"{manifest.num_shards} shards (generation still running?)")
  try:
    counts = class_counts.count_per_class(manifest.shard_paths(directory),
                                          num_classes=manifest.num_classes)
  except ValueError as e:
    raise configuration.ConfigError(str(e)) from e
  differing = [
      c for c in range(manifest.num_classes)
      if counts[c] != manifest.class_counts[c]
  ]
  if differing:
    c = differing[0]
    raise configuration.ConfigError(
        f"{path} disagrees with its shards: class {c} has "
        f"{manifest.class_counts[c]} examples in the manifest, {counts[c]} "
        f"in the shards ({len(differing)} classes differ); rebuild the "
        "manifest with split_manifest.rebuild")
  return manifest
