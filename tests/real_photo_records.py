"""Small ImageNet TFRecord sets built from real photos, for reader tests.

foolbox 3.3.4 ships 20 labelled ImageNet validation photos as
``data/imagenet_NN_LABEL.jpg`` (LABEL 0-based). foolbox itself is not
imported (its dependencies are not installed); only its data folder is used.

Three photos are re-encoded the way ImageNet's odd files are: one as a CMYK
JPEG, one as a PNG stored under a ``.JPEG`` name, one as a grayscale JPEG.
Shards are written unshuffled (sorted by label, contiguous), as the TPU tool
writes its training shards.
"""

import dataclasses
import importlib.util
import io
import os
import re

import numpy as np
from PIL import Image
import tensorflow as tf

from cdm_tf.data import schema

CMYK_PHOTO = 0
PNG_PHOTO = 1
GRAYSCALE_PHOTO = 2


@dataclasses.dataclass(frozen=True)
class Photo:
  name: str  # ImageNet-style file name, e.g. "photo_03.JPEG"
  label: int  # 0-based
  encoded: bytes
  height: int
  width: int
  kind: str  # "jpeg", "cmyk", "png" or "grayscale"


# Two photos whose sizes the preprocessing tests rely on.
LANDSCAPE = "imagenet_10_541.jpg"  # 1024 wide, 683 high
SQUARE = "imagenet_00_243.jpg"  # 512 x 512


def photo_dir():
  """foolbox's data folder (foolbox is found, never imported)."""
  spec = importlib.util.find_spec("foolbox")
  if spec is None:
    raise RuntimeError("foolbox (3.3.4, installed without deps) is needed for "
                       "its ImageNet photos")
  return os.path.join(spec.submodule_search_locations[0], "data")


def decode_photo(name):
  """One of foolbox's photos as uint8 [H, W, 3]."""
  return tf.io.decode_jpeg(tf.io.read_file(os.path.join(photo_dir(), name)),
                           channels=3)


def foolbox_photo_paths():
  """(path, 0-based label) of foolbox's ImageNet photos, in file order."""
  data_dir = photo_dir()
  found = []
  for name in sorted(os.listdir(data_dir)):
    match = re.fullmatch(r"imagenet_(\d+)_(\d+)\.jpg", name)
    if match:
      found.append((os.path.join(data_dir, name), int(match.group(2))))
  if len(found) != 20:
    raise RuntimeError(f"expected 20 ImageNet photos in {data_dir}, found "
                       f"{len(found)}")
  return found


def _encode(image, image_format, **options):
  buffer = io.BytesIO()
  image.save(buffer, image_format, **options)
  return buffer.getvalue()


def load_photos(max_side=None):
  """The 20 photos as ``Photo``s, three of them re-encoded (see above).

  Args:
    max_side: if given, photos are shrunk to fit and re-encoded as JPEG, for
      tests that need real images but not their full size.
  """
  photos = []
  for number, (path, label) in enumerate(foolbox_photo_paths()):
    with open(path, "rb") as f:
      encoded = f.read()
    image = Image.open(io.BytesIO(encoded))
    if max_side:
      image = image.convert("RGB")
      image.thumbnail((max_side, max_side))
      encoded = _encode(image, "JPEG", quality=90)
    kind = "jpeg"
    if number == CMYK_PHOTO:
      encoded, kind = _encode(image.convert("CMYK"), "JPEG", quality=95), "cmyk"
    elif number == PNG_PHOTO:
      encoded, kind = _encode(image, "PNG"), "png"
    elif number == GRAYSCALE_PHOTO:
      encoded, kind = _encode(image.convert("L"), "JPEG",
                              quality=90), ("grayscale")
    photos.append(
        Photo(name=f"photo_{number:02d}.JPEG", label=label, encoded=encoded,
              height=image.height, width=image.width, kind=kind))
  return photos


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def tpu_example(photo, label=None, image=None):
  """A tf.train.Example as imagenet_to_gcs.py writes it (label 1-based)."""
  label = photo.label if label is None else label
  features = {
      schema.TPU_IMAGE: _bytes(photo.encoded if image is None else image),
      schema.TPU_LABEL: _int(label + schema.TPU_LABEL_OFFSET),
      schema.TPU_SYNSET: _bytes(f"n{label:08d}".encode()),
      schema.TPU_TEXT: _bytes(f"class {label}".encode()),
      schema.TPU_HEIGHT: _int(photo.height),
      schema.TPU_WIDTH: _int(photo.width),
      schema.TPU_CHANNELS: _int(3),
      schema.TPU_COLORSPACE: _bytes(b"RGB"),
      schema.TPU_FORMAT: _bytes(b"JPEG"),
      schema.TPU_FILENAME: _bytes(photo.name.encode()),
  }
  return tf.train.Example(features=tf.train.Features(feature=features))


def tfds_example(photo, label=None, image=None):
  """A tf.train.Example as TFDS imagenet2012 stores it (label 0-based)."""
  features = {
      schema.TFDS_IMAGE: _bytes(photo.encoded if image is None else image),
      schema.TFDS_LABEL: _int(photo.label if label is None else label),
      schema.TFDS_FILE_NAME: _bytes(photo.name.encode()),
  }
  return tf.train.Example(features=tf.train.Features(feature=features))


def shard_name(record_format, split, shard, num_shards):
  if record_format == schema.FORMAT_TPU:
    return f"{split}-{shard:05d}-of-{num_shards:05d}"
  return f"imagenet2012-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def write_shards(directory, record_format, examples, num_shards, split="train"):
  """Writes serialized ``examples`` in order into contiguous shards."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for shard, chunk in enumerate(
      np.array_split(np.arange(len(examples)), num_shards)):
    path = os.path.join(directory,
                        shard_name(record_format, split, shard, num_shards))
    with tf.io.TFRecordWriter(path) as writer:
      for i in chunk:
        writer.write(examples[i].SerializeToString())
    paths.append(path)
  return paths


def write_photo_shards(directory, record_format, photos, num_shards=4,
                       split="train"):
  """All ``photos``, sorted by label as the TPU tool leaves them.

  Returns:
    (shard paths, {photo name: Photo}); each record's file name feature
    (TPU) or file_name (TFDS) is the photo's name.
  """
  ordered = sorted(photos, key=lambda p: (p.label, p.name))
  make = tpu_example if record_format == schema.FORMAT_TPU else tfds_example
  paths = write_shards(directory, record_format, [make(p) for p in ordered],
                       num_shards, split)
  return paths, {p.name: p for p in ordered}


def record_offsets(path):
  """Byte offset of each record of an uncompressed TFRecord file."""
  with open(path, "rb") as f:
    data = f.read()
  offsets, position = [], 0
  while position < len(data):
    offsets.append(position)
    length = int.from_bytes(data[position:position + 8], "little")
    position += length + 16
  return offsets


def corrupt_record(path, index):
  """Flips a byte in the data of record ``index`` (its CRC then fails)."""
  offset = record_offsets(path)[index]
  with open(path, "r+b") as f:
    f.seek(offset + 12 + 40)
    byte = f.read(1)
    f.seek(offset + 12 + 40)
    f.write(bytes([byte[0] ^ 0xFF]))


def truncate_inside_record(path, index):
  """Cuts the file in the middle of record ``index``."""
  offset = record_offsets(path)[index]
  with open(path, "r+b") as f:
    f.truncate(offset + 100)
