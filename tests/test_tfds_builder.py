"""The TFDS builder prepares our synthetic TFRecords and loads them by name."""

import importlib.util
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cdm_tf.data import class_names
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from cdm_tf.synthetic_set import tfds_builder

# Two classes share a name, as ImageNet's two "crane" classes do.
CLASSES = [
    class_names.ClassInfo("n02012849", "crane"),
    class_names.ClassInfo("n01440764", "tench"),
    class_names.ClassInfo("n03126707", "crane")
]


def _photo_crops(count):
  """Small uint8 crops of foolbox's ImageNet photos, of varying sizes."""
  data = pathlib.Path(
      importlib.util.find_spec(
          "foolbox").submodule_search_locations[0]) / "data"
  crops = []
  for i, path in enumerate(sorted(data.glob("imagenet_*_*.jpg"))[:count]):
    with Image.open(path) as image:
      pixels = np.asarray(image.convert("RGB"), np.uint8)
    crops.append(pixels[50:50 + 16 + i, 60:60 + 20])
  return crops


def _write_set(directory, image_format="png"):
  """Writes train (2 shards) and validation (1 shard); returns the truth."""
  class_names.write_classes_file(directory, CLASSES)
  images = _photo_crops(7)
  layout = {"train": [[0, 1, 2], [2, 1]], "validation": [[1, 0]]}
  truth, n = {}, 0
  for split, shards in layout.items():
    infos = []
    for index, labels in enumerate(shards):
      path = os.path.join(
          directory, shard_writer.shard_file_name(split, index, len(shards)))
      with shard_writer.ShardWriter(path, num_classes=len(CLASSES)) as writer:
        for label in labels:
          name = f"{split}-{n}"
          writer.write(
              shard_writer.encode_example(
                  images[n], label, CLASSES, image_format=image_format,
                  provenance=shard_writer.Provenance("g", name, 0, (0, n))),
              label)
          truth[name + shard_writer.FILE_EXTENSIONS[image_format]] = (images[n],
                                                                      label)
          n += 1
      infos.append(writer.info)
    split_manifest.write(directory, split, infos, len(CLASSES), image_format)
  return truth


def test_prepare_then_load_by_name_offline(tmp_path):
  source, data_dir = str(tmp_path / "synthetic"), str(tmp_path / "tfds")
  truth = _write_set(source)
  tfds_builder.prepare(source, data_dir)

  # A fresh load by name needs neither the source nor the network.
  splits, info = tfds.load(tfds_builder.NAME, data_dir=data_dir,
                           split=["train",
                                  "validation"], download=False, with_info=True)
  assert info.features["label"].names == [
      "crane (n02012849)", "tench", "crane (n03126707)"
  ]
  assert info.splits["train"].num_examples == 5
  assert info.splits["validation"].num_examples == 2
  seen = {}
  for split in splits:
    for example in split.as_numpy_iterator():
      seen[example["file_name"].decode()] = example
  assert sorted(seen) == sorted(truth)
  for name, (image, label) in truth.items():
    assert seen[name]["label"] == label
    np.testing.assert_array_equal(seen[name]["image"], image)  # PNG: exact.
  assert [n for n in seen if n.startswith("validation")
         ] == ["validation-5.png", "validation-6.png"]


def test_jpeg_bytes_are_stored_unchanged(tmp_path):
  source, data_dir = str(tmp_path / "synthetic"), str(tmp_path / "tfds")
  truth = _write_set(source, image_format="jpeg")
  builder = tfds_builder.prepare(source, data_dir)
  # Decoding the record's own bytes gives what TFDS gives: no re-encoding.
  originals = {}
  for path in shard_writer.complete_shards(source, "train"):
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      feature = tf.train.Example.FromString(record).features.feature
      originals[feature["image/filename"].bytes_list.value[0].decode()] = (
          tf.io.decode_jpeg(
              feature["image/encoded"].bytes_list.value[0]).numpy())
  examples = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert len(examples) == len(originals) == 5
  for example in examples:
    name = example["file_name"].decode()
    np.testing.assert_array_equal(example["image"], originals[name])
    image, label = truth[name]
    assert example["label"] == label
    assert np.abs(example["image"].astype(float) - image).mean() < 8


def test_supervised_tuples(tmp_path):
  source, data_dir = str(tmp_path / "synthetic"), str(tmp_path / "tfds")
  _write_set(source)
  tfds_builder.prepare(source, data_dir)
  dataset = tfds.load(tfds_builder.NAME, data_dir=data_dir, split="validation",
                      as_supervised=True, download=False)
  labels = sorted(int(label) for _, label in dataset.as_numpy_iterator())
  assert labels == [0, 1]


def test_records_that_disagree_with_the_manifest_fail(tmp_path):
  source, data_dir = str(tmp_path / "synthetic"), str(tmp_path / "tfds")
  _write_set(source)
  # The validation manifest claims other class counts than its records.
  split_manifest.write(
      source, "validation",
      [shard_writer.ShardInfo("validation-00000-of-00001", 2, (0, 0, 2))],
      len(CLASSES), "png")
  with pytest.raises(Exception, match="class counts"):
    tfds_builder.prepare(source, data_dir)
