import gzip
import os
import struct

import numpy as np
import pytest

from cdm_tf.data import class_names
from cdm_tf.data_preparation import fashion_mnist
from cdm_tf.synthetic_set import shard_writer
from tests import fashion_mnist_subset


def test_read_idx_by_hand(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  fashion_mnist_subset.write_idx(str(tmp_path / "x.gz"), array, 0x803)
  np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / "x.gz")),
                                array)


def test_read_idx_rejects_bad_files(tmp_path):
  bad_magic = tmp_path / "bad.gz"
  with gzip.open(bad_magic, "wb") as f:
    f.write(struct.pack(">I", 0x0D03) + b"\0" * 8)
  with pytest.raises(ValueError, match="magic.*bad.gz"):
    fashion_mnist.read_idx(str(bad_magic))
  short = tmp_path / "short.gz"
  with gzip.open(short, "wb") as f:
    f.write(struct.pack(">IIII", 0x803, 2, 2, 2) + b"\0" * 5)
  with pytest.raises(ValueError, match="header.*short.gz"):
    fashion_mnist.read_idx(str(short))


def test_debian_package_has_the_published_split_sizes():
  train_images, train_labels = fashion_mnist.load_split("train")
  val_images, val_labels = fashion_mnist.load_split("validation")
  assert train_images.shape == (60000, 28, 28)
  assert val_images.shape == (10000, 28, 28)
  np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(val_labels), [1000] * 10)


def test_to_rgb_pads_with_black_and_copies_channels():
  images = np.full((1, 28, 28), 200, np.uint8)
  rgb = fashion_mnist.to_rgb(images, 32)
  assert rgb.shape == (1, 32, 32, 3)
  assert rgb[0, :2].max() == 0 and rgb[0, -2:].max() == 0
  assert (rgb[0, 2:30, 2:30] == 200).all()
  with pytest.raises(ValueError, match="pad_to"):
    fashion_mnist.to_rgb(images, 16)


def test_missing_source_dir_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    fashion_mnist.load_split("train", source_dir=str(tmp_path))


def test_convert_writes_complete_splits_and_keeps_them_on_restart(tmp_path):
  source = fashion_mnist_subset.write_source(str(tmp_path / "source"))
  out = str(tmp_path / "out")
  manifests = fashion_mnist.convert(out, source_dir=source)
  assert manifests["train"].num_examples == 30
  assert list(manifests["validation"].class_counts) == [2] * 10
  assert [c.name for c in class_names.load_classes(out)
         ][:2] == ["T-shirt/top", "trouser"]
  train_shards = shard_writer.complete_shards(out, "train")
  assert len(train_shards) == fashion_mnist.NUM_SHARDS["train"]
  mtimes = {p: os.path.getmtime(p) for p in train_shards}
  # A killed run leaves a temporary behind; a restart removes it and keeps
  # the splits that are complete.
  leftover = os.path.join(out, shard_writer.TMP_PREFIX + "x-train-1")
  open(leftover, "wb").close()
  fashion_mnist.convert(out, source_dir=source)
  assert not os.path.exists(leftover)
  assert {p: os.path.getmtime(p) for p in train_shards} == mtimes
