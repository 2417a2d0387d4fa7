"""The ImageNet TFRecord reader on real photos in both record formats."""

import collections
import dataclasses
import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cdm_tf.data import image_decoding
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from tests import real_photo_records as records

FORMATS = [schema.FORMAT_TPU, schema.FORMAT_TFDS]


@pytest.fixture(scope="module")
def photos():
  return records.load_photos()


@pytest.fixture(scope="module")
def small_photos():
  return records.load_photos(max_side=64)


def _shard_sets(photos, tmp_path_factory, prefix):
  """{format: (directory, shard paths, photos in record order)}."""
  sets = {}
  for record_format in FORMATS:
    directory = str(tmp_path_factory.mktemp(prefix + record_format))
    paths, _ = records.write_photo_shards(directory, record_format, photos)
    ordered = sorted(photos, key=lambda p: (p.label, p.name))
    sets[record_format] = (directory, paths, ordered)
  return sets


@pytest.fixture(scope="module")
def shard_sets(photos, tmp_path_factory):
  return _shard_sets(photos, tmp_path_factory, "full")


@pytest.fixture(scope="module")
def small_shard_sets(small_photos, tmp_path_factory):
  """Shards of thumbnails: for tests of order, which decode many times."""
  return _shard_sets(small_photos, tmp_path_factory, "small")


@pytest.fixture(scope="module")
def read_in_order(shard_sets):
  """{format: every element, read unshuffled one file at a time}."""
  return {
      record_format: list(
          imagenet_reader.read_dataset(paths, shuffle=False,
                                       cycle_length=1).as_numpy_iterator()
      ) for record_format, (_, paths, _) in shard_sets.items()
  }


def _pil_rgb(encoded):
  return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def _read_all(dataset):
  return list(dataset.as_numpy_iterator())


# --- Finding files and their format. -------------------------------------


@pytest.mark.parametrize("record_format", FORMATS)
def test_list_files_finds_a_splits_shards_of_either_naming(
    shard_sets, record_format):
  directory, paths, _ = shard_sets[record_format]
  assert imagenet_reader.list_files(directory, split="train") == paths
  assert imagenet_reader.list_files(os.path.join(directory, "*")) == paths
  assert imagenet_reader.list_files(paths[::-1] + paths[:1]) == paths
  assert imagenet_reader.list_files(paths[2]) == [paths[2]]


def test_list_files_errors_name_the_path(shard_sets):
  directory = shard_sets[schema.FORMAT_TPU][0]
  with pytest.raises(FileNotFoundError, match="validation.*" + directory):
    imagenet_reader.list_files(directory, split="validation")
  with pytest.raises(ValueError, match="split"):
    imagenet_reader.list_files(directory)
  missing = os.path.join(directory, "nope-*")
  with pytest.raises(FileNotFoundError, match="nope-"):
    imagenet_reader.list_files(missing)
  with pytest.raises(FileNotFoundError, match="absent"):
    imagenet_reader.list_files(os.path.join(directory, "absent"))


@pytest.mark.parametrize("record_format", FORMATS)
def test_detect_format(shard_sets, record_format):
  for path in shard_sets[record_format][1]:
    assert imagenet_reader.detect_format(path) == record_format


def test_detect_format_errors_name_file_and_keys(tmp_path):
  other = tf.train.Example(features=tf.train.Features(
      feature={
          "pixels": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[b"x"])),
      }))
  unknown = str(tmp_path / "unknown.tfrecord")
  with tf.io.TFRecordWriter(unknown) as writer:
    writer.write(other.SerializeToString())
  with pytest.raises(ValueError, match=r"unknown\.tfrecord.*'pixels'"):
    imagenet_reader.detect_format(unknown)

  empty = str(tmp_path / "empty.tfrecord")
  open(empty, "wb").close()
  with pytest.raises(ValueError, match=r"empty\.tfrecord.*no records"):
    imagenet_reader.detect_format(empty)
  with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
    imagenet_reader.detect_format(str(tmp_path / "missing.tfrecord"))


# --- Decoding and labels. -------------------------------------------------


@pytest.mark.parametrize("record_format", FORMATS)
def test_every_photo_comes_back_with_its_label_and_pixels(
    shard_sets, read_in_order, record_format):
  _, paths, ordered = shard_sets[record_format]
  # One file at a time, unshuffled: elements come in record order.
  got = read_in_order[record_format]
  assert len(got) == len(ordered)
  for element, photo in zip(got, ordered):
    image = element[schema.IMAGE]
    assert element[schema.LABEL] == photo.label, photo.name  # 0-based
    assert element[schema.LABEL].dtype == np.int32
    assert image.dtype == np.uint8
    assert image.shape == (photo.height, photo.width, 3), photo.name
    assert element[schema.SOURCE].decode() in paths
    if photo.kind != "cmyk":  # Checked against pillow in its own test.
      difference = np.abs(image.astype(float) - _pil_rgb(photo.encoded))
      # Decoders differ slightly (IDCT, upsampling).
      assert difference.mean() < 2.0, photo.name


def test_odd_encodings_decode_like_pillow(shard_sets, read_in_order):
  ordered = shard_sets[schema.FORMAT_TFDS][2]
  got = read_in_order[schema.FORMAT_TFDS]
  by_kind = {p.kind: (p, e[schema.IMAGE]) for p, e in zip(ordered, got)}
  assert set(by_kind) == {"jpeg", "cmyk", "png", "grayscale"}

  photo, image = by_kind["cmyk"]
  assert Image.open(io.BytesIO(photo.encoded)).mode == "CMYK"
  pillow = _pil_rgb(photo.encoded).astype(float)
  # An un-inverted or channel-swapped CMYK conversion is off by ~100.
  assert np.abs(image - pillow).mean() < 3.0
  original = _pil_rgb(
      open(records.foolbox_photo_paths()[records.CMYK_PHOTO][0],
           "rb").read()).astype(float)
  assert np.abs(image - original).mean() < 4.0

  photo, image = by_kind["png"]
  assert photo.encoded.startswith(b"\x89PNG")
  np.testing.assert_array_equal(image, _pil_rgb(photo.encoded))

  _, image = by_kind["grayscale"]
  np.testing.assert_array_equal(image[..., 0], image[..., 1])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


# --- Order, repetition and sharding. -------------------------------------


def _order(dataset):
  return [(e[schema.SOURCE], int(e[schema.LABEL]))
          for e in dataset.as_numpy_iterator()]


def test_shuffle_is_deterministic_with_a_seed_and_mixes_shards(
    small_shard_sets):
  _, paths, ordered = small_shard_sets[schema.FORMAT_TPU]

  def read(seed):
    return _order(
        imagenet_reader.read_dataset(paths, seed=seed, shuffle_buffer=8,
                                     cycle_length=4))

  first, again = read(7), read(7)
  assert first == again
  assert sorted(label for _, label in first) == sorted(p.label for p in ordered)
  unshuffled = _order(
      imagenet_reader.read_dataset(paths, shuffle=False, cycle_length=1))
  assert first != unshuffled
  # Unshuffled shards are sorted by label; shuffled output is not, and its
  # first few examples already come from several shards.
  assert [label for _, label in first] != sorted(label for _, label in first)
  assert len({source for source, _ in first[:6]}) >= 3


def test_repeat_yields_every_photo_each_pass(small_shard_sets):
  _, paths, ordered = small_shard_sets[schema.FORMAT_TFDS]
  # Passes blur at their boundary (the shuffle buffer and the file
  # interleave span it), so look at three passes' worth: the first two
  # passes are complete inside it.
  got = _order(
      imagenet_reader.read_dataset(paths, seed=1, shuffle_buffer=4,
                                   repeat=True).take(3 * len(ordered)))
  counts = collections.Counter(label for _, label in got)
  for label, n in collections.Counter(p.label for p in ordered).items():
    assert 2 * n <= counts[label] <= 4 * n, (label, n, counts[label])


def test_input_context_gives_disjoint_covering_shares(small_shard_sets):
  _, paths, ordered = small_shard_sets[schema.FORMAT_TPU]
  shares = []
  for pipeline in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pipeline)
    shares.append(
        _order(
            imagenet_reader.read_dataset(paths, seed=0, input_context=context)))
  sources = [{source for source, _ in share} for share in shares]
  assert sources[0] and sources[1] and not sources[0] & sources[1]
  assert {s.decode() for s in sources[0] | sources[1]} == set(paths)
  labels = sorted(label for share in shares for _, label in share)
  assert labels == sorted(p.label for p in ordered)

  context = tf.distribute.InputContext(num_input_pipelines=5,
                                       input_pipeline_id=0)
  with pytest.raises(ValueError, match="4 files.*5 input pipelines"):
    imagenet_reader.read_dataset(paths, input_context=context)


# --- Bad input. -----------------------------------------------------------


def _truncated_jpeg(photo):
  return photo.encoded[:len(photo.encoded) // 3]


# name -> (format, how to make the bad record from a good photo).
BAD_RECORDS = {
    "label_too_large_tpu":
        (schema.FORMAT_TPU, lambda p: records.tpu_example(p, label=1000)),
    "label_zero_in_tpu_is_minus_one":
        (schema.FORMAT_TPU, lambda p: records.tpu_example(p, label=-1)),
    "label_too_large_tfds":
        (schema.FORMAT_TFDS, lambda p: records.tfds_example(p, label=1000)),
    "missing_image":
        (schema.FORMAT_TPU,
         lambda p: _without(records.tpu_example(p), schema.TPU_IMAGE)),
    "missing_label":
        (schema.FORMAT_TFDS,
         lambda p: _without(records.tfds_example(p), schema.TFDS_LABEL)),
    "not_an_image":
        (schema.FORMAT_TPU,
         lambda p: records.tpu_example(p, image=b"<html>not found</html>")),
    "decoder_rejects":
        (schema.FORMAT_TFDS,
         lambda p: records.tfds_example(p, image=_truncated_jpeg(p))),
    "not_an_example": (schema.FORMAT_TPU, lambda p: _RawRecord(b"\x07junk")),
}
EXPECTED_MESSAGE = {
    "label_too_large_tpu": "= 1001 is outside 1..1000",
    "label_zero_in_tpu_is_minus_one": "= 0 is outside 1..1000",
    "label_too_large_tfds": "= 1000 is outside 0..999",
    "missing_image": "no image",
    "missing_label": "no label",
    "not_an_image": "not an image",
    "decoder_rejects": "decoder rejected",
    "not_an_example": "not a valid tf.train.Example",
}


class _RawRecord:
  """Stands in for an Example whose serialization is arbitrary bytes."""

  def __init__(self, data):
    self._data = data

  def SerializeToString(self):  # pylint: disable=invalid-name
    return self._data


def _without(example, key):
  del example.features.feature[key]
  return example


def _write_with_bad_record(directory, record_format, photos, bad):
  """Two shards of 3 photos; record 1 of the second shard is ``bad``."""
  make = (records.tpu_example
          if record_format == schema.FORMAT_TPU else records.tfds_example)
  examples = [make(p) for p in photos[3:6]
             ] + [make(photos[6]), bad, make(photos[7])]
  paths = records.write_shards(directory, record_format, examples, 2)
  return paths, paths[1]


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_error_names_file_and_index(small_photos, tmp_path, case):
  record_format, make_bad = BAD_RECORDS[case]
  paths, bad_file = _write_with_bad_record(str(tmp_path), record_format,
                                           small_photos,
                                           make_bad(small_photos[8]))
  dataset = imagenet_reader.read_dataset(paths, seed=0, shuffle_buffer=4)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(dataset)
  message = raised.value.message
  assert f"{bad_file}, record 1: " in message
  assert EXPECTED_MESSAGE[case] in message


@pytest.mark.parametrize("record_format", FORMATS)
def test_skip_corrupt_skips_and_counts_every_kind(small_photos, tmp_path,
                                                  record_format):
  # Each bad record of this format sits between two good ones; one more
  # file is damaged at its record 1 (of 3), losing records 1 and 2.
  make = (records.tpu_example
          if record_format == schema.FORMAT_TPU else records.tfds_example)
  good = iter(small_photos)
  examples = [make(next(good))]
  num_bad = 0
  for case in sorted(BAD_RECORDS):
    case_format, make_bad = BAD_RECORDS[case]
    if case_format == record_format:
      examples += [make_bad(small_photos[0]), make(next(good))]
      num_bad += 1
  paths = records.write_shards(str(tmp_path / "bad"), record_format, examples,
                               2)
  damaged = records.write_shards(str(tmp_path / "damaged"), record_format,
                                 [make(next(good)) for _ in range(3)], 1)
  records.corrupt_record(damaged[0], 1)

  stats = imagenet_reader.ReadStats()
  got = _read_all(
      imagenet_reader.read_dataset(paths + damaged, seed=0, shuffle_buffer=4,
                                   skip_corrupt=True, stats=stats))
  assert len(got) == num_bad + 1 + 1
  assert stats.as_dict() == {"skipped_records": num_bad + 1, "damaged_files": 1}


def test_explain_record_gives_tensorflows_reason(small_photos, tmp_path):
  photo = small_photos[8]
  paths, bad_file = _write_with_bad_record(
      str(tmp_path), schema.FORMAT_TFDS, small_photos,
      records.tfds_example(photo, image=_truncated_jpeg(photo)))
  explanation = imagenet_reader.explain_record(bad_file, 1)
  assert explanation.startswith(f"{bad_file}, record 1: ")
  assert "fine" not in explanation
  assert "fine, label" in imagenet_reader.explain_record(paths[0], 2)


@pytest.mark.parametrize("damage", ["bad_checksum", "truncated"])
def test_damaged_file_error_names_file_and_record(small_photos, tmp_path,
                                                  damage):
  paths, bad_file = _write_with_bad_record(str(tmp_path), schema.FORMAT_TPU,
                                           small_photos,
                                           records.tpu_example(small_photos[8]))
  if damage == "bad_checksum":
    records.corrupt_record(bad_file, 1)
  else:
    records.truncate_inside_record(bad_file, 1)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(imagenet_reader.read_dataset(paths, seed=0))
  message = raised.value.message
  assert f"{bad_file}, record 1: reading stopped at byte" in message
  assert "corrupt" in message

  stats = imagenet_reader.ReadStats()
  got = _read_all(
      imagenet_reader.read_dataset(paths, seed=0, skip_corrupt=True,
                                   stats=stats))
  # Record 0 of the damaged file survives; records 1 and 2 are lost.
  assert len(got) == 4
  assert stats.as_dict() == {"skipped_records": 1, "damaged_files": 1}


def test_a_file_of_the_other_format_is_named(shard_sets):
  tpu_paths = shard_sets[schema.FORMAT_TPU][1]
  tfds_paths = shard_sets[schema.FORMAT_TFDS][1]
  dataset = imagenet_reader.read_dataset(tpu_paths[:1] + tfds_paths[-1:],
                                         record_format=schema.FORMAT_TPU,
                                         shuffle=False, cycle_length=1)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(dataset)
  assert (f"{tfds_paths[-1]}, record 0: no image: feature image/encoded"
          in raised.value.message.replace("\\'", "'"))


def test_consecutive_undecodable_records_are_each_counted(
    small_photos, tmp_path):
  # Several records the decoder rejects, next to each other and at the end
  # of the file: each must be found, not only the first of a run.
  photo = small_photos[8]
  bad = records.tfds_example(photo, image=_truncated_jpeg(photo))
  good = [records.tfds_example(p) for p in small_photos[:3]]
  examples = [
      good[0], bad, bad, good[1],
      _RawRecord(b"\x07junk"), good[2], bad, bad
  ]
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TFDS, examples, 1)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(imagenet_reader.read_dataset(paths, shuffle=False))
  assert f"{paths[0]}, record 1: " in raised.value.message
  assert "decoder rejected" in raised.value.message

  stats = imagenet_reader.ReadStats()
  got = _read_all(
      imagenet_reader.read_dataset(paths, shuffle=False, skip_corrupt=True,
                                   stats=stats))
  assert [e[schema.LABEL] for e in got] == [p.label for p in small_photos[:3]]
  assert stats.as_dict() == {"skipped_records": 5, "damaged_files": 0}


def test_many_records_keep_their_order_unshuffled(small_photos, tmp_path):
  # More records than one decoding group, and a bad one in the middle.
  examples = [records.tpu_example(p) for p in small_photos] * 3
  examples[25] = records.tpu_example(small_photos[0], label=5000)
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TPU, examples, 1)
  stats = imagenet_reader.ReadStats()
  got = _read_all(
      imagenet_reader.read_dataset(paths, shuffle=False, skip_corrupt=True,
                                   stats=stats))
  expected = [p.label for p in small_photos] * 3
  del expected[25]
  assert [int(e[schema.LABEL]) for e in got] == expected
  assert stats.as_dict() == {"skipped_records": 1, "damaged_files": 0}


# --- The fast path: whole groups of images of one size. ------------------


def _uniform_photos(small_photos, image_format, side=24):
  """The photos squashed to side x side, in one format: fast-path groups."""
  photos = []
  for photo in small_photos:
    image = Image.open(io.BytesIO(photo.encoded))
    # Grayscale stays grayscale; CMYK stays CMYK in JPEG.
    if photo.kind != "grayscale" and (photo.kind != "cmyk" or
                                      image_format == "PNG"):
      image = image.convert("RGB")
    buffer = io.BytesIO()
    image.resize((side, side)).save(buffer, image_format)
    photos.append(
        dataclasses.replace(photo, encoded=buffer.getvalue(), height=side,
                            width=side))
  return photos


def _group_decoder(record_format, num_classes=1000):
  # pylint: disable=protected-access
  return imagenet_reader._make_uniform_group_decoder(
      imagenet_reader.feature_keys(record_format), num_classes, ["f"])


def _group(examples, index=0):
  size = len(examples)
  return {
      "file": tf.zeros([size],
                       tf.int32), "index": tf.range(index, index + size,
                                                    dtype=tf.int64),
      "raw": tf.constant([e.SerializeToString() for e in examples]),
      "bytes_read": -tf.ones([size], tf.int64)
  }


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_uniform_group_decoder_takes_only_full_good_groups(
    small_photos, image_format):
  size = imagenet_reader._GROUP_SIZE  # pylint: disable=protected-access
  photos = _uniform_photos(small_photos, image_format)
  photos = (photos * 3)[:size]
  decode = _group_decoder(schema.FORMAT_TPU)
  got = decode(_group([records.tpu_example(p) for p in photos]))
  assert got[schema.IMAGE].shape == (size, 24, 24, 3)
  assert got[schema.LABEL].numpy().tolist() == [p.label for p in photos]
  for image, photo in zip(got[schema.IMAGE].numpy(), photos):
    # The same decoder as record by record.
    np.testing.assert_array_equal(
        image,
        image_decoding.decode_rgb(photo.encoded).numpy())

  # Anything else fails, before decoding, and goes record by record.
  other_size = _uniform_photos(small_photos[:1], image_format, side=25)[0]
  other_format = _uniform_photos(small_photos[:1],
                                 "JPEG" if image_format == "PNG" else "PNG")[0]
  large = (_uniform_photos(small_photos, image_format, side=130) * 2)[:size]
  bad_groups = {
      "short": photos[:-1],
      "other size": photos[:-1] + [other_size],
      "other format": photos[:-1] + [other_format],
      "large": large,
  }
  for name, group in bad_groups.items():
    with pytest.raises(tf.errors.InvalidArgumentError):
      decode(_group([records.tpu_example(p) for p in group]))
      pytest.fail(name)
  bad_records = [
      records.tpu_example(photos[0], label=1000),
      records.tpu_example(photos[0], image=b"<html>"),
      _RawRecord(b"\x07junk")
  ]
  for bad in bad_records:
    with pytest.raises(tf.errors.InvalidArgumentError):
      decode(_group([records.tpu_example(p) for p in photos[:-1]] + [bad]))


@pytest.mark.parametrize("record_format,image_format",
                         [(schema.FORMAT_TPU, "PNG"),
                          (schema.FORMAT_TFDS, "JPEG")])
def test_uniform_shards_read_like_pillow(small_photos, tmp_path, record_format,
                                         image_format):
  # 80 records of one size: two full groups take the fast path, the rest
  # (a short group) goes record by record.
  photos = _uniform_photos(small_photos, image_format) * 4
  make = (records.tpu_example
          if record_format == schema.FORMAT_TPU else records.tfds_example)
  paths = records.write_shards(str(tmp_path), record_format,
                               [make(p) for p in photos], 1)
  got = _read_all(imagenet_reader.read_dataset(paths, shuffle=False))
  assert [int(e[schema.LABEL]) for e in got] == [p.label for p in photos]
  for element, photo in zip(got, photos):
    assert element[schema.SOURCE].decode() == paths[0]
    assert element[schema.IMAGE].shape == (24, 24, 3)
    difference = np.abs(element[schema.IMAGE].astype(float) -
                        _pil_rgb(photo.encoded))
    assert difference.mean() < (2.0 if photo.kind != "cmyk" else 4.0)

  shuffled = _order(imagenet_reader.read_dataset(paths, seed=3))
  assert shuffled == _order(imagenet_reader.read_dataset(paths, seed=3))
  assert sorted(label for _, label in shuffled) == sorted(
      p.label for p in photos)


@pytest.mark.parametrize("damage", ["label", "truncated_image"])
def test_a_bad_record_in_a_uniform_group_is_named(small_photos, tmp_path,
                                                  damage):
  photos = _uniform_photos(small_photos, "PNG") * 4
  examples = [records.tpu_example(p) for p in photos]
  if damage == "label":
    examples[40] = records.tpu_example(photos[40], label=1000)
    expected = "= 1001 is outside 1..1000"
  else:
    encoded = photos[40].encoded
    examples[40] = records.tpu_example(photos[40],
                                       image=encoded[:len(encoded) // 2])
    expected = "decoder rejected"
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TPU, examples, 1)
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(imagenet_reader.read_dataset(paths, shuffle=False))
  assert f"{paths[0]}, record 40: " in raised.value.message
  assert expected in raised.value.message

  stats = imagenet_reader.ReadStats()
  got = _read_all(
      imagenet_reader.read_dataset(paths, seed=0, skip_corrupt=True,
                                   stats=stats))
  assert len(got) == len(photos) - 1
  assert stats.as_dict() == {"skipped_records": 1, "damaged_files": 0}


# --- Header checks. -------------------------------------------------------


def _starts_like_an_image(data):
  """The header check spelled out byte by byte."""
  return (data.startswith(
      (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")) or
          (data.startswith(b"RIFF") and data[8:12] == b"WEBP"))


def test_is_supported_image_matches_the_signatures_byte_by_byte():
  rng = np.random.default_rng(0)
  signatures = [
      b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"RIFF",
      b"RIFF1234WEBP", b""
  ]
  cases = [b"", b"<html>", image_decoding.PLACEHOLDER_IMAGE]
  for signature in signatures:
    for _ in range(150):
      data = bytearray(signature + rng.bytes(int(rng.integers(0, 14))))
      if data and rng.random() < 0.5:  # One flipped bit.
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
      cases.append(
          bytes(data[:int(rng.integers(0,
                                       len(data) +
                                       1))] if rng.random() < 0.3 else data))
  got = image_decoding.is_supported_image(tf.constant(cases)).numpy()
  assert got.tolist() == [_starts_like_an_image(c) for c in cases]
  assert 100 < got.sum() < len(cases) - 100


def test_header_sizes_of_pngs_and_jpegs():

  def encoded(image_format, height, width, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, image_format)
    return buffer.getvalue()

  pngs = [encoded("PNG", 32, 40), encoded("PNG", 7, 300, "L")]
  jpegs = [encoded("JPEG", 32, 40), encoded("JPEG", 700, 3, "CMYK")]
  sizes = image_decoding.header_sizes
  assert sizes(tf.constant(pngs)).numpy().tolist() == [[32, 40], [7, 300]]
  assert sizes(tf.constant(jpegs)).numpy().tolist() == [[32, 40], [700, 3]]
  for unknown in ([pngs[0], jpegs[0]], [b"", b"\x89PNG"], [b"GIF89a"]):
    assert (sizes(tf.constant(unknown)).numpy() == -1).all()
