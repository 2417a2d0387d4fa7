"""Fashion-MNIST, the embedded real dataset, as ImageNet-format TFRecords.

No colour multi-class image dataset ships in a package registry; Debian's
``dataset-fashion-mnist`` ships Fashion-MNIST (60,000 train / 10,000 test
28x28 grayscale images, 10 classes, 6,000 / 1,000 per class) as gzipped IDX
files. Converted to the TPU tool's schema, it runs through exactly the same
readers, preprocessing, training and generation code as ImageNet.
"""

import gzip
import os
import struct
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from cdm_tf import settings_record
from cdm_tf.data import class_names
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SPLIT_FILES = {
    # our split name: (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "validation": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NUM_CLASSES = 10
IMAGE_SIZE = 28
# Shards per split: enough for interleaving and multi-worker sharding tests.
NUM_SHARDS = {"train": 8, "validation": 2}
CLASSES = [
    class_names.ClassInfo(synset=synset, name=name)
    for synset, name in (("tshirt_top", "T-shirt/top"), ("trouser", "trouser"),
                         ("pullover", "pullover"), ("dress", "dress"),
                         ("coat", "coat"), ("sandal", "sandal"),
                         ("shirt", "shirt"), ("sneaker", "sneaker"),
                         ("bag", "bag"), ("ankle_boot", "ankle boot"))
]

_IDX_UBYTE_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_UBYTE_LABELS = 0x00000801  # unsigned bytes, 1 dimension
# Beyond this a 28x28 image is only a small patch in a black frame, and the
# padded split would need gigabytes.
MAX_PAD_TO = 256
# How to fix a damaged source file; ends the messages that name one.
_REPLACE_FILE = ("replace it with an intact copy (download it again or "
                 "reinstall dataset-fashion-mnist)")


def check_pad_to(pad_to):
  """``pad_to`` as an int if it is a usable output size, else ValueError."""
  usable = f"give an image side from {IMAGE_SIZE} to {MAX_PAD_TO}, e.g. 32"
  if isinstance(pad_to,
                (bool, np.bool_)) or not isinstance(pad_to, (int, np.integer)):
    raise ValueError(f"pad_to={pad_to!r} is not an integer (--pad_to); "
                     f"{usable}")
  if pad_to < IMAGE_SIZE:
    raise ValueError(f"pad_to={pad_to} is smaller than the {IMAGE_SIZE}x"
                     f"{IMAGE_SIZE} Fashion-MNIST images (--pad_to); {usable}")
  if pad_to > MAX_PAD_TO:
    raise ValueError(f"pad_to={pad_to} is larger than {MAX_PAD_TO}, which "
                     f"would only frame the {IMAGE_SIZE}x{IMAGE_SIZE} images "
                     f"in black (--pad_to); {usable}")
  return int(pad_to)


def read_idx(path):
  """An IDX file (optionally gzipped) as a uint8 numpy array.

  Raises:
    FileNotFoundError: there is no file at ``path``.
    ValueError: a corrupt or truncated gzip stream, or an IDX header that
      the contents do not match; the message names the file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except FileNotFoundError as e:
    raise FileNotFoundError(f"Fashion-MNIST file {path} does not exist "
                            f"(--source_dir); {_REPLACE_FILE}") from e
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise ValueError(f"corrupt or truncated gzip data ({e}) in {path} "
                     f"(--source_dir); {_REPLACE_FILE}") from e
  if len(data) < 4:
    raise ValueError(f"{len(data)} bytes are too few for an IDX file, in "
                     f"{path} (--source_dir); {_REPLACE_FILE}")
  magic = struct.unpack(">I", data[:4])[0]
  if magic not in (_IDX_UBYTE_IMAGES, _IDX_UBYTE_LABELS):
    raise ValueError(f"not an unsigned-byte IDX file (magic number "
                     f"{magic:#010x}, expected {_IDX_UBYTE_IMAGES:#010x} or "
                     f"{_IDX_UBYTE_LABELS:#010x}) in {path} (--source_dir); "
                     f"{_REPLACE_FILE}")
  ndim = magic & 0xFF
  if len(data) < 4 + 4 * ndim:
    raise ValueError(f"the IDX header is cut short ({len(data)} bytes) in "
                     f"{path} (--source_dir); {_REPLACE_FILE}")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"the IDX header promises {shape} = {np.prod(shape)} "
                     f"bytes but the file holds {body.size}, in {path} "
                     f"(--source_dir); {_REPLACE_FILE}")
  return body.reshape(shape)


def find_source_dir(source_dir=None):
  """Where the IDX files are: ``source_dir`` if given (it must hold them),
  else Debian's path if the package is installed, else None.

  Raises:
    FileNotFoundError: ``source_dir`` does not exist or lacks a file.
    NotADirectoryError: ``source_dir`` is a file.
  """
  names = sorted(n for pair in SPLIT_FILES.values() for n in pair)

  def holds_all(directory):
    return all(os.path.exists(os.path.join(directory, n)) for n in names)

  if source_dir:
    wanted = (f"give the directory that holds {', '.join(names)} (as "
              f"dataset-fashion-mnist installs them in {DEBIAN_DIR})")
    if not os.path.exists(source_dir):
      raise FileNotFoundError(f"the Fashion-MNIST source directory "
                              f"{source_dir} does not exist (--source_dir); "
                              f"{wanted}")
    if not os.path.isdir(source_dir):
      raise NotADirectoryError(f"the Fashion-MNIST source {source_dir} is "
                               f"not a directory (--source_dir); {wanted}")
    missing = [
        n for n in names if not os.path.isfile(os.path.join(source_dir, n))
    ]
    if missing:
      raise FileNotFoundError(f"{', '.join(missing)} missing from the "
                              f"Fashion-MNIST source directory {source_dir} "
                              f"(--source_dir); {wanted}")
    return source_dir
  return DEBIAN_DIR if holds_all(DEBIAN_DIR) else None


def load_split(split, source_dir=None):
  """(images uint8 [N, 28, 28], labels uint8 [N]) of one split.

  Reads the IDX files from ``source_dir`` or the Debian package's path; if
  neither has them, falls back to the Keras download (machines with network).
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"unknown split {split!r}; expected one of "
                     f"{sorted(SPLIT_FILES)}")
  directory = find_source_dir(source_dir)
  if directory is None:
    # Outside environments with the Debian package: the standard download.
    import keras  # pylint: disable=g-import-not-at-top
    (x_train, y_train), (x_test,
                         y_test) = (keras.datasets.fashion_mnist.load_data())
    return (x_train, y_train) if split == "train" else (x_test, y_test)
  images_file, labels_file = SPLIT_FILES[split]
  images = read_idx(os.path.join(directory, images_file))
  labels = read_idx(os.path.join(directory, labels_file))
  if (images.ndim != 3 or labels.ndim != 1 or
      images.shape[0] != labels.shape[0] or
      images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE)):
    raise ValueError(
        f"the {split} images {images.shape} and labels {labels.shape} are "
        f"not N {IMAGE_SIZE}x{IMAGE_SIZE} images with N labels, in "
        f"{os.path.join(directory, images_file)} and {labels_file} "
        "(--source_dir); replace them with intact copies (download them "
        "again or reinstall dataset-fashion-mnist)")
  if labels.size and labels.max() >= NUM_CLASSES:
    raise ValueError(
        f"{split} label {labels.max()} is outside 0..{NUM_CLASSES - 1}, in "
        f"{os.path.join(directory, labels_file)} (--source_dir); "
        f"{_REPLACE_FILE}")
  return images, labels


def to_rgb(images, pad_to):
  """[N, 28, 28] grayscale -> [N, pad_to, pad_to, 3], zero (black) border.

  The background of Fashion-MNIST is black, so padding keeps the images
  natural while giving the power-of-two size the cascades need.
  """
  pad_to = check_pad_to(pad_to)
  before = (pad_to - IMAGE_SIZE) // 2
  after = pad_to - IMAGE_SIZE - before
  padded = np.pad(images, ((0, 0), (before, after), (before, after)))
  return np.repeat(padded[..., None], 3, axis=-1)


def shuffled_order(count, seed):
  # Written shuffled, unlike the TPU tool's training shards.
  return np.random.default_rng(seed).permutation(count)


def convert(output_dir, source_dir=None, pad_to=32, image_format="png", seed=0):
  """Writes both splits as TPU-schema TFRecords, a manifest per split and
  classes.json into ``output_dir``; returns {split: Manifest}.

  PNG by default: the images are tiny, and lossless data is what the
  diffusion models should learn. A split whose manifest already says it is
  complete is kept as it is, so an interrupted run can simply be restarted.
  Every input is read and checked before anything in ``output_dir`` is
  written or removed; shards appear under their names only when complete.

  Raises:
    ValueError: a bad ``pad_to`` or ``image_format``, or a damaged source
      file.
    FileNotFoundError, NotADirectoryError: an unusable ``source_dir``.
    settings_record.SettingsConflictError: ``output_dir`` holds a complete
      split converted with other settings.
  """
  pad_to = check_pad_to(pad_to)
  if image_format not in shard_writer.IMAGE_FORMATS:
    raise ValueError(f"image_format {image_format!r} is not one of "
                     f"{', '.join(shard_writer.IMAGE_FORMATS)} "
                     "(--image_format); choose one of them")
  settings = {"source": "fashion-mnist", "pad_to": pad_to, "shuffle_seed": seed}
  manifests, sources = {}, {}
  for split in NUM_SHARDS:
    existing = None
    if tf.io.gfile.exists(split_manifest.file_path(output_dir, split)):
      existing = split_manifest.read(output_dir, split)
    if existing is not None and existing.complete:
      _check_same_conversion(output_dir, split, settings, image_format)
      logging.info("%s: %s already complete (%d images)", output_dir, split,
                   existing.num_examples)
      manifests[split] = existing
    else:
      sources[split] = load_split(split, source_dir)
  shard_writer.remove_stale_temporaries(output_dir)
  for split, (images, labels) in sources.items():
    num_shards = NUM_SHARDS[split]
    order = shuffled_order(len(labels), seed)
    infos = []
    for index, part in enumerate(np.array_split(order, num_shards)):
      path = os.path.join(
          output_dir, shard_writer.shard_file_name(split, index, num_shards))
      # Padded shard by shard: a whole split at a large pad_to would take
      # gigabytes.
      padded = to_rgb(images[part], pad_to)
      with shard_writer.ShardWriter(path, NUM_CLASSES,
                                    overwrite=True) as writer:
        for i, image in zip(part, padded):
          label = int(labels[i])
          writer.write(
              shard_writer.encode_example(
                  image, label, CLASSES, image_format=image_format,
                  file_name=f"{split}_{i:05d}.{image_format}"), label)
      infos.append(writer.info)
      logging.info("wrote %s (%d images)", path, writer.info.num_examples)
    manifests[split] = split_manifest.write(output_dir, split, infos,
                                            NUM_CLASSES, image_format,
                                            settings=settings)
  class_names.write_classes_file(output_dir, CLASSES)
  return {split: manifests[split] for split in NUM_SHARDS}


def _check_same_conversion(output_dir, split, settings, image_format):
  """Refuses to keep a complete split that other settings made: the
  directory would hold splits of two conversions. The split's manifest is
  the record: its settings and image format are compared."""
  path = split_manifest.file_path(output_dir, split)

  def compare(manifest, current):
    recorded = {key: manifest.get("settings", {}).get(key) for key in settings}
    recorded["image_format"] = manifest.get("image_format")
    return settings_record.differences(recorded, current)

  settings_record.check(
      path, {**settings, "image_format": image_format}, lambda found:
      (f"the complete {split} split in {output_dir} was converted with "
       f"other settings ({settings_record.summary(found)}; see {path}); "
       "use a new --output_dir, or the same settings"), compare=compare)
