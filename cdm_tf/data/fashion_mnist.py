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

from absl import logging
import numpy as np
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import synthetic_writer

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
    class_names.ClassInfo(synset=synset, name=name) for synset, name in (
        ("tshirt_top", "T-shirt/top"), ("trouser", "trouser"),
        ("pullover", "pullover"), ("dress", "dress"), ("coat", "coat"),
        ("sandal", "sandal"), ("shirt", "shirt"), ("sneaker", "sneaker"),
        ("bag", "bag"), ("ankle_boot", "ankle boot"))
]

_IDX_UBYTE_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_UBYTE_LABELS = 0x00000801  # unsigned bytes, 1 dimension


def read_idx(path):
  """An IDX file (optionally gzipped) as a uint8 numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4:
    raise ValueError(f"{path}: not an IDX file (too short)")
  magic = struct.unpack(">I", data[:4])[0]
  if magic not in (_IDX_UBYTE_IMAGES, _IDX_UBYTE_LABELS):
    raise ValueError(f"{path}: not an unsigned-byte IDX file "
                     f"(magic {magic:#010x})")
  ndim = magic & 0xFF
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header promises {shape} = {np.prod(shape)} "
                     f"bytes, file holds {body.size}")
  return body.reshape(shape)


def find_source_dir(source_dir=None):
  """Where the IDX files are: ``source_dir`` if given (it must hold them),
  else Debian's path if the package is installed, else None."""
  names = sorted(n for pair in SPLIT_FILES.values() for n in pair)

  def holds_all(directory):
    return all(os.path.exists(os.path.join(directory, n)) for n in names)

  if source_dir:
    if not holds_all(source_dir):
      raise FileNotFoundError(
          f"{source_dir} does not hold the Fashion-MNIST IDX files {names}")
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
    (x_train, y_train), (x_test, y_test) = (
        keras.datasets.fashion_mnist.load_data())
    return (x_train, y_train) if split == "train" else (x_test, y_test)
  images_file, labels_file = SPLIT_FILES[split]
  images = read_idx(os.path.join(directory, images_file))
  labels = read_idx(os.path.join(directory, labels_file))
  if images.shape[0] != labels.shape[0] or images.shape[1:] != (
      IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(f"{directory}: {split} images {images.shape} do not "
                     f"match labels {labels.shape}")
  if labels.max() >= NUM_CLASSES:
    raise ValueError(f"{directory}: {split} label {labels.max()} outside "
                     f"0..{NUM_CLASSES - 1}")
  return images, labels


def to_rgb(images, pad_to):
  """[N, 28, 28] grayscale -> [N, pad_to, pad_to, 3], zero (black) border.

  The background of Fashion-MNIST is black, so padding keeps the images
  natural while giving the power-of-two size the cascades need.
  """
  if pad_to < IMAGE_SIZE:
    raise ValueError(f"pad_to must be >= {IMAGE_SIZE}, got {pad_to}")
  before = (pad_to - IMAGE_SIZE) // 2
  after = pad_to - IMAGE_SIZE - before
  padded = np.pad(images, ((0, 0), (before, after), (before, after)))
  return np.repeat(padded[..., None], 3, axis=-1)


def shuffled_order(count, seed):
  # Written shuffled, unlike the TPU tool's training shards.
  return np.random.default_rng(seed).permutation(count)


def convert(output_dir, source_dir=None, pad_to=32, image_format="png",
            seed=0):
  """Writes both splits as TPU-schema TFRecords, a manifest per split and
  classes.json into ``output_dir``; returns {split: Manifest}.

  PNG by default: the images are tiny, and lossless data is what the
  diffusion models should learn. A split whose manifest already says it is
  complete is kept as it is, so an interrupted run can simply be restarted.
  """
  synthetic_writer.remove_stale_temporaries(output_dir)
  manifests = {}
  for split, num_shards in NUM_SHARDS.items():
    existing = None
    if tf.io.gfile.exists(synthetic_writer.manifest_path(output_dir, split)):
      existing = synthetic_writer.read_manifest(output_dir, split)
    if existing is not None and existing.complete:
      logging.info("%s: %s already complete (%d images)", output_dir, split,
                   existing.num_examples)
      manifests[split] = existing
      continue
    images, labels = load_split(split, source_dir)
    images = to_rgb(images, pad_to)
    order = shuffled_order(len(labels), seed)
    infos = []
    for index, part in enumerate(np.array_split(order, num_shards)):
      path = os.path.join(output_dir, synthetic_writer.shard_file_name(
          split, index, num_shards))
      with synthetic_writer.ShardWriter(path, NUM_CLASSES,
                                        overwrite=True) as writer:
        for i in part:
          label = int(labels[i])
          writer.write(synthetic_writer.encode_example(
              images[i], label, CLASSES, image_format=image_format,
              file_name=f"{split}_{i:05d}.{image_format}"), label)
      infos.append(writer.info)
      logging.info("wrote %s (%d images)", path, writer.info.num_examples)
    manifests[split] = synthetic_writer.write_manifest(
        output_dir, split, infos, NUM_CLASSES, image_format,
        settings={"source": "fashion-mnist", "pad_to": pad_to,
                  "shuffle_seed": seed})
  class_names.write_classes_file(output_dir, CLASSES)
  return manifests
