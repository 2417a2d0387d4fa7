"""Writing a synthetic set's shards: TFRecords in the TPU tool's schema.

Each example is a ``tf.train.Example`` with exactly the fields the TPU /
tf-models conversion tool writes (see ``schema.TPU_*``; the label is 1-based
in the record), so any ImageNet reader consumes synthetic shards unchanged.
Our provenance fields (``schema.PROVENANCE_PREFIX``) ride along and are
ignored by other readers.

JPEG is the default image format because some readers decode with
``tf.image.decode_and_crop_jpeg``, which rejects PNG; PNG is lossless and is
read by any reader that uses ``tf.io.decode_image`` / ``decode_jpeg``.

Files of a split ``train`` in an output directory::

  train-00000-of-00064 ... train-00063-of-00064   complete shards
  .tmp-<hex>-train-00007-of-00064                 a shard being written
  manifest-train.json                             counts and settings

Only complete shards match the readers' ``train-*`` patterns: a training job
may read the directory while generation is still running. The manifest is
``split_manifest``'s.

Typical use::

  with ShardWriter(os.path.join(out, shard_file_name("train", i, n)),
                   num_classes=len(classes)) as writer:
    for image, label, provenance in samples:
      writer.write(encode_example(image, label, classes,
                                  provenance=provenance), label)
  infos.append(writer.info)
  ...
  split_manifest.write(out, "train", infos, num_classes=len(classes),
                       image_format="jpeg", settings={"generator": ...})
"""

import dataclasses
import hashlib
import os
import re
import time
import uuid

import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.data import schema

IMAGE_FORMATS = ("png", "jpeg")
# Value of ``image/format`` and extension of ``image/filename`` per format;
# the TPU tool writes "JPEG" and ImageNet file names end in ".JPEG".
_FORMAT_FIELD = {"png": "PNG", "jpeg": "JPEG"}
FILE_EXTENSIONS = {"png": ".png", "jpeg": ".JPEG"}
COLORSPACE = "RGB"
CHANNELS = 3

# A prefix, so no ``train-*`` pattern of a reader matches a partial shard.
TMP_PREFIX = ".tmp-"
# cdm_tf.files' atomic writes (the manifest) use this suffix.
TMP_SUFFIX_MARKER = ".tmp-"
_SHARD_NAME_RE = re.compile(
    r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<num>\d{5})$")


@dataclasses.dataclass(frozen=True)
class Provenance:
  """Where a synthetic example came from (stored under ``cdm/``).

  Attributes:
    generator_config_id: Id of the generator configuration (cascade, sampler
      settings) that produced the example.
    example_id: Stable id of the example, unique within the set.
    class_index: Index of the example within its class (0, 1, ...); lets a
      reader select a class-balanced prefix of a larger set.
    seed: The per-example sampler seed, two ints.
    stage_resolutions: Output resolution of each cascade stage.
    guidance: Guidance weight per stage.
    sampler: Sampler name per stage, e.g. ``"ddpm-1000"``.
    logvar_coeff: Log-variance mixing coefficient per stage.
    noise_augmentation: Conditioning noise level per super-resolution stage
      (one fewer than the stages).
  """
  generator_config_id: str
  example_id: str
  class_index: int
  seed: tuple[int, int]
  stage_resolutions: tuple[int, ...] = ()
  guidance: tuple[float, ...] = ()
  sampler: tuple[str, ...] = ()
  logvar_coeff: tuple[float, ...] = ()
  noise_augmentation: tuple[float, ...] = ()

  def validate(self):
    """Raises ValueError if the fields are inconsistent."""
    if not self.example_id:
      raise ValueError("provenance.example_id must be non-empty")
    if int(self.class_index) < 0:
      raise ValueError(f"provenance.class_index must be >= 0, got "
                       f"{self.class_index}")
    if len(self.seed) != 2:
      raise ValueError(f"provenance.seed must have 2 ints, got {self.seed!r}")
    num_stages = len(self.stage_resolutions)
    for field in ("guidance", "sampler", "logvar_coeff"):
      values = getattr(self, field)
      if values and len(values) != num_stages:
        raise ValueError(f"provenance.{field} has {len(values)} values for "
                         f"{num_stages} stages")
    if self.noise_augmentation and (len(self.noise_augmentation) != max(
        num_stages - 1, 0)):
      raise ValueError(
          f"provenance.noise_augmentation has {len(self.noise_augmentation)} "
          f"values for {num_stages - 1} super-resolution stages")


def _bytes_feature(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[
      v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values
  ]))


def _int_feature(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(
      value=[int(v) for v in values]))


def _float_feature(values):
  return tf.train.Feature(float_list=tf.train.FloatList(
      value=[float(v) for v in values]))


def _validate_image(image):
  """Returns ``image`` as a uint8 [H, W, 3] numpy array or raises."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"image must be uint8, got {image.dtype}")
  if image.ndim != 3 or image.shape[-1] != CHANNELS:
    raise ValueError(f"image must have shape [H, W, 3], got {image.shape}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"image must not be empty, got {image.shape}")
  return image


def encode_image(image_uint8, image_format="jpeg", jpeg_quality=95):
  """Encodes a uint8 [H, W, 3] image as PNG or JPEG bytes."""
  image = _validate_image(image_uint8)
  if image_format == "png":
    return tf.io.encode_png(image).numpy()
  if image_format == "jpeg":
    if not 1 <= int(jpeg_quality) <= 100:
      raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    # 4:4:4 chroma: halving the colour resolution costs ~3 dB PSNR on small
    # (64x64) samples, for ~25% smaller files.
    return tf.io.encode_jpeg(image, format="rgb", quality=int(jpeg_quality),
                             chroma_downsampling=False).numpy()
  raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got "
                   f"{image_format!r}")


def encode_example(image_uint8, label, classes, image_format="jpeg",
                   jpeg_quality=95, provenance=None, file_name=None):
  """Serializes one synthetic image as a TPU-schema ``tf.train.Example``.

  Args:
    image_uint8: uint8 array [H, W, 3], RGB.
    label: 0-based class label; stored 1-based as the TPU tool does.
    classes: The class table, a sequence of ``ClassInfo`` in label order.
    image_format: "jpeg" or "png".
    jpeg_quality: JPEG quality 1..100 (ignored for PNG).
    provenance: Optional ``Provenance``; its fields are added under ``cdm/``.
    file_name: Value of ``image/filename``. Default: the provenance's example
      id plus the format's extension, else a content hash plus extension.

  Returns:
    The serialized example, bytes.

  Raises:
    ValueError: on an invalid image, label, format or provenance.
  """
  if isinstance(label,
                (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
    raise ValueError(f"label must be an int, got {label!r}")
  if not 0 <= int(label) < len(classes):
    raise ValueError(f"label {label} is outside 0..{len(classes) - 1} of the "
                     f"class table")
  image = _validate_image(image_uint8)
  encoded = encode_image(image, image_format, jpeg_quality)
  if file_name is None:
    stem = (provenance.example_id if provenance is not None else
            hashlib.sha1(encoded).hexdigest()[:16])
    file_name = stem + FILE_EXTENSIONS[image_format]
  info = classes[int(label)]
  feature = {
      schema.TPU_IMAGE: _bytes_feature([encoded]),
      schema.TPU_LABEL: _int_feature([int(label) + schema.TPU_LABEL_OFFSET]),
      schema.TPU_SYNSET: _bytes_feature([info.synset]),
      schema.TPU_TEXT: _bytes_feature([info.name]),
      schema.TPU_HEIGHT: _int_feature([image.shape[0]]),
      schema.TPU_WIDTH: _int_feature([image.shape[1]]),
      schema.TPU_CHANNELS: _int_feature([CHANNELS]),
      schema.TPU_COLORSPACE: _bytes_feature([COLORSPACE]),
      schema.TPU_FORMAT: _bytes_feature([_FORMAT_FIELD[image_format]]),
      schema.TPU_FILENAME: _bytes_feature([file_name]),
  }
  if provenance is not None:
    provenance.validate()
    feature.update({
        schema.GENERATOR_CONFIG_ID: _bytes_feature(
            [provenance.generator_config_id]),
        schema.EXAMPLE_ID: _bytes_feature([provenance.example_id]),
        schema.CLASS_INDEX: _int_feature([provenance.class_index]),
        schema.SEED: _int_feature(provenance.seed),
        schema.STAGE_RESOLUTIONS: _int_feature(provenance.stage_resolutions),
        schema.GUIDANCE: _float_feature(provenance.guidance),
        schema.SAMPLER: _bytes_feature(provenance.sampler),
        schema.LOGVAR_COEFF: _float_feature(provenance.logvar_coeff),
        schema.NOISE_AUGMENTATION: _float_feature(provenance.noise_augmentation
                                                 ),
    })
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString(
          deterministic=True)  # sorted map keys: same bytes in any process


# ----------------------------------------------------------------- shards


def shard_file_name(split, index, num_shards):
  """``train-00007-of-00064``: the TPU tool's shard naming."""
  schema.check_split_name(split)
  if not 0 <= index < num_shards or num_shards > 99999:
    raise ValueError(f"shard index {index} outside 0..{num_shards - 1} "
                     f"(at most 99999 shards)")
  return f"{split}-{index:05d}-of-{num_shards:05d}"


def parse_shard_file_name(name):
  """``(split, index, num_shards)`` of a final shard name, else None."""
  match = _SHARD_NAME_RE.match(os.path.basename(name))
  if not match:
    return None
  return match["split"], int(match["index"]), int(match["num"])


def complete_shards(directory, split):
  """Sorted paths of the complete (renamed) shards of ``split``."""
  schema.check_split_name(split)
  paths = files.glob_in(directory, f"{split}-*-of-*")
  return sorted(
      p for p in paths if (parse_shard_file_name(p) or (None,))[0] == split)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  """What one complete shard holds.

  Attributes:
    file_name: Base name of the shard, e.g. ``train-00007-of-00064``.
    num_examples: Number of records.
    class_counts: Records per 0-based class, a tuple of length num_classes.
  """
  file_name: str
  num_examples: int
  class_counts: tuple[int, ...]

  def to_json(self):
    return {
        "file_name": self.file_name, "num_examples": self.num_examples,
        "class_counts": list(self.class_counts)
    }

  @classmethod
  def from_json(cls, obj):
    return cls(file_name=str(obj["file_name"]),
               num_examples=int(obj["num_examples"]),
               class_counts=tuple(int(c) for c in obj["class_counts"]))


class ShardWriter:
  """Writes one TFRecord shard that appears under its name only when complete.

  Records go to ``.tmp-<hex>-<name>`` in the same directory (so the final
  rename stays within one file system / bucket, and shard patterns such as
  ``train-*`` do not match it); a successful ``close`` (or
  leaving the ``with`` block normally) renames it to ``path``. On an
  exception the temporary file is removed and ``path`` is left untouched.
  A killed process leaves a temporary file behind, which
  ``remove_stale_temporaries`` deletes.
  """

  def __init__(self, path, num_classes, overwrite=False):
    """Opens the temporary file.

    Args:
      path: Final path of the shard (local or ``gs://``).
      num_classes: Size of the class table, for the per-class counts.
      overwrite: Whether an existing shard at ``path`` may be replaced.
    """
    if num_classes <= 0:
      raise ValueError(f"num_classes must be positive, got {num_classes}")
    if not overwrite and tf.io.gfile.exists(path):
      raise FileExistsError(f"shard {path} already exists")
    self.path = path
    self.num_classes = num_classes
    self._overwrite = overwrite
    directory = os.path.dirname(path)
    if directory:
      tf.io.gfile.makedirs(directory)
    self.temporary_path = os.path.join(
        directory, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    self._writer = tf.io.TFRecordWriter(self.temporary_path)
    self._class_counts = np.zeros([num_classes], np.int64)
    self._num_examples = 0
    self._info = None

  def write(self, serialized_example, label):
    """Appends one serialized example whose 0-based label is ``label``."""
    if self._writer is None:
      raise ValueError(f"shard {self.path} is already closed")
    if not 0 <= int(label) < self.num_classes:
      raise ValueError(f"label {label} outside 0..{self.num_classes - 1}")
    self._writer.write(serialized_example)
    self._class_counts[int(label)] += 1
    self._num_examples += 1

  def close(self):
    """Finishes the shard: flushes and renames it to its final name."""
    if self._writer is None:
      return self._info
    self._writer.close()
    self._writer = None
    tf.io.gfile.rename(self.temporary_path, self.path,
                       overwrite=self._overwrite)
    self._info = ShardInfo(
        file_name=os.path.basename(self.path), num_examples=self._num_examples,
        class_counts=tuple(int(c) for c in self._class_counts))
    return self._info

  def abort(self):
    """Discards the shard: nothing appears under the final name."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if tf.io.gfile.exists(self.temporary_path):
      tf.io.gfile.remove(self.temporary_path)

  @property
  def info(self):
    """The ``ShardInfo``; available once the shard is closed."""
    if self._info is None:
      raise ValueError(f"shard {self.path} is not closed yet")
    return self._info

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


def temporary_shard_target(path):
  """The final shard name a ``ShardWriter`` temporary file stands for."""
  name = os.path.basename(path)
  if not name.startswith(TMP_PREFIX):
    return None
  # .tmp-<32 hex digits>-<final name>
  return name[len(TMP_PREFIX) + 33:] or None


def remove_stale_temporaries(directory, older_than_seconds=0.0,
                             shard_names=None):
  """Deletes temporary files left in ``directory`` by killed writers.

  Only call this when no live writer uses the directory, or give
  ``older_than_seconds`` longer than a shard takes to write, or restrict it
  to ``shard_names`` no live writer works on, so that the temporary files
  of live writers survive.

  Args:
    directory: The output directory.
    older_than_seconds: Only files last modified at least this long ago are
      removed.
    shard_names: If given, only the temporaries of these final shard names
      (e.g. one worker's shards) are removed.

  Returns:
    The sorted paths that were removed.
  """
  now_ns = time.time_ns()
  removed = []
  candidates = set(files.glob_in(directory, f"{TMP_PREFIX}*"))
  candidates.update(files.glob_in(directory, f"*{TMP_SUFFIX_MARKER}*"))
  if shard_names is not None:
    shard_names = set(shard_names)
    candidates = {
        p for p in candidates if temporary_shard_target(p) in shard_names
    }
  for path in sorted(candidates):
    age_seconds = (now_ns - tf.io.gfile.stat(path).mtime_nsec) / 1e9
    if age_seconds >= older_than_seconds:
      tf.io.gfile.remove(path)
      removed.append(path)
  return removed
