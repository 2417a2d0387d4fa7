"""Synthetic records: TPU-schema round trip, atomic shards, manifests."""

import importlib.util
import io
import json
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest

SMALL_CLASSES = [
    class_names.ClassInfo(f"n{i:08d}", f"class {i}") for i in range(4)
]


def _photos(count, size=(48, 40)):
  """(uint8 [H, W, 3], 0-based ImageNet label) of foolbox's labelled photos."""
  data = pathlib.Path(
      importlib.util.find_spec(
          "foolbox").submodule_search_locations[0]) / "data"
  paths = sorted(data.glob("imagenet_*_*.jpg"))[:count]
  assert len(paths) == count
  photos = []
  for path in paths:
    with Image.open(path) as image:
      pixels = np.asarray(image.convert("RGB").resize(size), np.uint8)
    photos.append((pixels, int(path.stem.split("_")[2])))
  return photos


def _provenance(example_id, class_index=3):
  return shard_writer.Provenance(generator_config_id="cdm64-256-v1",
                                 example_id=example_id, class_index=class_index,
                                 seed=(11, 42), stage_resolutions=(64, 256),
                                 guidance=(1.0, 0.5), sampler=("ddpm-1000",
                                                               "ddim-100"),
                                 logvar_coeff=(0.3,
                                               0.1), noise_augmentation=(0.1,))


def _minimal_tpu_parse(record):
  """An independent reader of the TPU tool's schema: proto + PIL only."""
  feature = tf.train.Example.FromString(record).features.feature

  def one(key):
    values = feature[key]
    if values.int64_list.value:
      return values.int64_list.value[0]
    return values.bytes_list.value[0]

  encoded = one("image/encoded")
  with Image.open(io.BytesIO(encoded)) as image:
    pil_format = image.format
    pixels = np.asarray(image.convert("RGB"))
  return {
      "pixels": pixels,
      "pil_format": pil_format,
      "label": one("image/class/label"),
      "synset": one("image/class/synset").decode(),
      "text": one("image/class/text").decode(),
      "height": one("image/height"),
      "width": one("image/width"),
      "channels": one("image/channels"),
      "colorspace": one("image/colorspace").decode(),
      "format": one("image/format").decode(),
      "filename": one("image/filename").decode(),
      "feature": feature,
  }


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_round_trip_through_an_independent_tpu_schema_parser(image_format):
  classes = class_names.imagenet_classes()
  for i, (pixels, label) in enumerate(_photos(4)):
    record = shard_writer.encode_example(pixels, label, classes,
                                         image_format=image_format,
                                         provenance=_provenance(f"ex{i}"))
    parsed = _minimal_tpu_parse(record)
    assert parsed["label"] == label + 1  # The TPU tool's labels are 1-based.
    assert parsed["synset"] == classes[label].synset
    assert parsed["text"] == classes[label].name
    assert (parsed["height"], parsed["width"], parsed["channels"]) == (40, 48,
                                                                       3)
    assert parsed["pixels"].shape == pixels.shape
    assert parsed["colorspace"] == "RGB"
    if image_format == "png":
      assert parsed["format"] == parsed["pil_format"] == "PNG"
      assert parsed["filename"] == f"ex{i}.png"
      np.testing.assert_array_equal(parsed["pixels"], pixels)
    else:
      assert parsed["format"] == parsed["pil_format"] == "JPEG"
      assert parsed["filename"] == f"ex{i}.JPEG"
      error = parsed["pixels"].astype(float) - pixels
      psnr = 10 * np.log10(255**2 / np.mean(error**2))
      assert psnr > 33.0 and np.abs(error).mean() < 4.0, psnr
      assert not np.array_equal(parsed["pixels"], pixels)  # Really lossy.


def test_tensorflow_decoders_of_other_readers_accept_the_jpeg_records():
  (pixels, label), = _photos(1)
  record = shard_writer.encode_example(pixels, label,
                                       class_names.imagenet_classes())
  parsed = tf.io.parse_single_example(
      record, {
          "image/encoded": tf.io.FixedLenFeature([], tf.string),
          "image/class/label": tf.io.FixedLenFeature([], tf.int64)
      })
  # The TPU ResNet input pipeline decodes with decode_and_crop_jpeg.
  crop = tf.image.decode_and_crop_jpeg(parsed["image/encoded"], [0, 0, 40, 48],
                                       channels=3)
  assert crop.shape == (40, 48, 3)
  assert int(parsed["image/class/label"]) == label + 1


def test_provenance_fields_round_trip():
  (pixels, label), = _photos(1)
  provenance = _provenance("gen7-000123", class_index=17)
  feature = _minimal_tpu_parse(
      shard_writer.encode_example(pixels, label, class_names.imagenet_classes(),
                                  image_format="png",
                                  provenance=provenance))["feature"]
  assert feature[schema.GENERATOR_CONFIG_ID].bytes_list.value == [
      b"cdm64-256-v1"
  ]
  assert feature[schema.EXAMPLE_ID].bytes_list.value == [b"gen7-000123"]
  assert feature[schema.CLASS_INDEX].int64_list.value == [17]
  assert feature[schema.SEED].int64_list.value == [11, 42]
  assert feature[schema.STAGE_RESOLUTIONS].int64_list.value == [64, 256]
  np.testing.assert_allclose(feature[schema.GUIDANCE].float_list.value,
                             [1.0, 0.5])
  assert feature[schema.SAMPLER].bytes_list.value == [b"ddpm-1000", b"ddim-100"]
  np.testing.assert_allclose(feature[schema.LOGVAR_COEFF].float_list.value,
                             [0.3, 0.1])
  np.testing.assert_allclose(
      feature[schema.NOISE_AUGMENTATION].float_list.value, [0.1])


def test_without_provenance_there_are_no_cdm_fields_and_a_content_file_name():
  image = np.full([8, 8, 3], 7, np.uint8)
  parsed = _minimal_tpu_parse(
      shard_writer.encode_example(image, 2, SMALL_CLASSES, image_format="png"))
  assert not [
      k for k in parsed["feature"] if k.startswith(schema.PROVENANCE_PREFIX)
  ]
  assert parsed["filename"].endswith(".png") and len(parsed["filename"]) > 4


@pytest.mark.parametrize("image, label, kwargs, message", [
    (np.zeros([8, 8, 3], np.uint8), 4, {}, "outside 0..3"),
    (np.zeros([8, 8, 3], np.uint8), -1, {}, "outside 0..3"),
    (np.zeros([8, 8, 3], np.uint8), 1.0, {}, "must be an int"),
    (np.zeros([8, 8, 3], np.float32), 0, {}, "uint8"),
    (np.zeros([8, 8], np.uint8), 0, {}, r"\[H, W, 3\]"),
    (np.zeros([8, 8, 4], np.uint8), 0, {}, r"\[H, W, 3\]"),
    (np.zeros([0, 8, 3], np.uint8), 0, {}, "empty"),
    (np.zeros([8, 8, 3], np.uint8), 0, {"image_format": "gif"}, "image_format"),
    (np.zeros([8, 8, 3], np.uint8), 0, {"jpeg_quality": 0}, "jpeg_quality"),
    (np.zeros([8, 8, 3], np.uint8), 0, {
        "provenance": shard_writer.Provenance("g", "e", 0, (1, 2), (64, 256),
                                              (1.0,))
    }, "guidance"),
    (np.zeros([8, 8, 3], np.uint8), 0, {
        "provenance": shard_writer.Provenance("g", "e", 0, (1, 2), (64, 256),
                                              noise_augmentation=(0.1, 0.2))
    }, "noise_augmentation"),
    (np.zeros([8, 8, 3], np.uint8), 0,
     {"provenance": shard_writer.Provenance("g", "e", 0, (1,))}, "seed"),
])
def test_invalid_inputs_are_rejected(image, label, kwargs, message):
  with pytest.raises(ValueError, match=message):
    shard_writer.encode_example(image, label, SMALL_CLASSES, **kwargs)


def test_shard_file_names_follow_the_tpu_tool():
  assert (shard_writer.shard_file_name("train", 7,
                                       64) == "train-00007-of-00064")
  assert (shard_writer.shard_file_name("validation", 0,
                                       1) == "validation-00000-of-00001")
  assert shard_writer.parse_shard_file_name("/x/train-00007-of-00064") == (
      "train", 7, 64)
  assert shard_writer.parse_shard_file_name(
      "train-00007-of-00064.tmp-abc") is None
  with pytest.raises(ValueError):
    shard_writer.shard_file_name("train", 64, 64)


def _write_shard(directory, index, num_shards, labels, image_format="png"):
  path = os.path.join(directory,
                      shard_writer.shard_file_name("train", index, num_shards))
  with shard_writer.ShardWriter(path, num_classes=len(SMALL_CLASSES)) as writer:
    for i, label in enumerate(labels):
      image = np.full([6, 5, 3], 10 * i, np.uint8)
      writer.write(
          shard_writer.encode_example(
              image, label, SMALL_CLASSES, image_format=image_format,
              provenance=shard_writer.Provenance("g", f"{index}-{i}", i,
                                                 (index, i))), label)
  return writer.info


def _labels_in(path):
  return [
      _minimal_tpu_parse(r)["label"] - 1
      for r in tf.data.TFRecordDataset(path).as_numpy_iterator()
  ]


def test_shard_writer_renames_only_when_complete(tmp_path):
  info = _write_shard(str(tmp_path), 0, 2, [0, 2, 2, 3])
  assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00002"]
  assert _labels_in(str(tmp_path / "train-00000-of-00002")) == [0, 2, 2, 3]
  assert info == shard_writer.ShardInfo("train-00000-of-00002", 4, (1, 0, 2, 1))
  with pytest.raises(FileExistsError):
    shard_writer.ShardWriter(str(tmp_path / "train-00000-of-00002"), 4)


def test_an_exception_leaves_neither_the_shard_nor_a_temporary(tmp_path):
  path = str(tmp_path / "train-00000-of-00001")
  with pytest.raises(RuntimeError, match="generator died"):
    with shard_writer.ShardWriter(path, num_classes=4) as writer:
      writer.write(
          shard_writer.encode_example(np.zeros([4, 4, 3], np.uint8), 1,
                                      SMALL_CLASSES), 1)
      assert os.path.exists(writer.temporary_path)
      raise RuntimeError("generator died")
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="not closed"):
    _ = writer.info


def test_readers_shard_patterns_never_see_partial_shards(tmp_path):
  writer = shard_writer.ShardWriter(str(tmp_path / "train-00000-of-00001"), 4)
  writer.write(
      shard_writer.encode_example(np.zeros([4, 4, 3], np.uint8), 0,
                                  SMALL_CLASSES), 0)
  split_manifest.write(
      str(tmp_path), "train",
      [shard_writer.ShardInfo("train-00000-of-00001", 1,
                              (1, 0, 0, 0))], 4, "jpeg")
  # The TPU tool's readers glob "train-*"; ours "train-*-of-*".
  assert tf.io.gfile.glob(str(tmp_path / "train-*")) == []
  writer.close()
  assert tf.io.gfile.glob(str(
      tmp_path / "train-*")) == [str(tmp_path / "train-00000-of-00001")]


def test_a_killed_writers_temporary_is_found_and_removed(tmp_path):
  _write_shard(str(tmp_path), 0, 2, [1, 1])
  # A killed process never closes its writer: records sit in the temporary.
  killed = shard_writer.ShardWriter(str(tmp_path / "train-00001-of-00002"), 4)
  killed.write(
      shard_writer.encode_example(np.zeros([4, 4, 3], np.uint8), 0,
                                  SMALL_CLASSES), 0)
  killed._writer.flush()  # pylint: disable=protected-access
  assert os.path.exists(killed.temporary_path)
  assert shard_writer.complete_shards(
      str(tmp_path), "train") == [str(tmp_path / "train-00000-of-00002")]
  # A young temporary may belong to a live writer: kept with an age limit.
  assert shard_writer.remove_stale_temporaries(str(tmp_path),
                                               older_than_seconds=3600) == []
  assert shard_writer.remove_stale_temporaries(
      str(tmp_path)) == [killed.temporary_path]
  assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00002"]


def test_manifest_counts_equal_the_records_and_round_trip(tmp_path):
  directory = str(tmp_path)
  shard_labels = [[0, 1, 1, 3], [3, 3], [2, 0, 1]]
  infos = [
      _write_shard(directory, i, 3, labels)
      for i, labels in enumerate(shard_labels)
  ]
  settings = {"generator_config_id": "g", "guidance": [1.0, 0.5]}
  written = split_manifest.write(directory, "train", infos[::-1], num_classes=4,
                                 image_format="png", settings=settings)
  with open(split_manifest.file_path(directory, "train")) as f:
    on_disk = json.load(f)
  # Counted independently from the records.
  all_labels = [
      label for name in sorted(os.listdir(directory))
      if name.startswith("train-0")
      for label in _labels_in(os.path.join(directory, name))
  ]
  assert on_disk["num_examples"] == len(all_labels) == 9
  assert on_disk["class_counts"] == list(np.bincount(all_labels, minlength=4))
  assert [s["num_examples"] for s in on_disk["shards"]] == [4, 2, 3]
  assert on_disk["shards"][1]["class_counts"] == [0, 0, 0, 2]
  assert on_disk["image_format"] == "png" and on_disk["complete"]
  assert on_disk["settings"] == settings
  read = split_manifest.read(directory, "train")
  assert read == written
  assert read.shard_paths(directory) == [
      os.path.join(directory, f"train-0000{i}-of-00003") for i in range(3)
  ]
  assert split_manifest.splits(directory) == ["train"]


def test_rebuilding_the_manifest_after_a_restart(tmp_path):
  directory = str(tmp_path)
  first = [_write_shard(directory, 0, 3, [0, 0, 2], "jpeg")]
  split_manifest.write(directory, "train", first, 4, "jpeg",
                       settings={"run": 1})
  # The restarted job writes the remaining shards; a killed one left a
  # temporary, which the scan ignores.
  _write_shard(directory, 1, 3, [1], "jpeg")
  _write_shard(directory, 2, 3, [3, 3], "jpeg")
  for name in (".tmp-dead-train-00002-of-00003",
               "train-00002-of-00003.tmp-dead"):
    with open(str(tmp_path / name), "wb") as f:
      f.write(b"half a record")
  rebuilt = split_manifest.rebuild(directory, "train", num_classes=4)
  assert rebuilt == split_manifest.read(directory, "train")
  assert rebuilt.complete and rebuilt.num_shards == 3
  assert rebuilt.num_examples == 6
  assert rebuilt.class_counts == (2, 1, 1, 2)
  assert rebuilt.image_format == "jpeg"
  assert rebuilt.settings == {"run": 1}


def test_manifest_rejects_inconsistent_shards():
  good = shard_writer.ShardInfo("train-00000-of-00002", 2, (1, 1))
  with pytest.raises(ValueError, match="sum to"):
    split_manifest.make(
        "train", [shard_writer.ShardInfo("train-00001-of-00002", 3,
                                         (1, 1))], 2, "png")
  with pytest.raises(ValueError, match="shard totals"):
    split_manifest.make(
        "train",
        [good, shard_writer.ShardInfo("train-00001-of-00003", 0,
                                      (0, 0))], 2, "png")
  with pytest.raises(ValueError, match="not a shard name"):
    split_manifest.make("validation", [good], 2, "png")
  manifest = split_manifest.make("train", [good], 2, "png")
  assert not manifest.complete
