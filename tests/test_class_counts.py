"""Counting images per class of a real split, and caching the counts."""

import glob
import os

import numpy as np
import pytest

from cdm_tf import files as files_lib
from cdm_tf.data import class_counts
from cdm_tf.data import schema
from tests import real_photo_records as records

NUM_CLASSES = 1000


@pytest.fixture(scope="module")
def photos():
  return records.load_photos(max_side=48)


def _expected(photos):
  return np.bincount([p.label for p in photos], minlength=NUM_CLASSES)


def _caches(directory):
  return glob.glob(os.path.join(directory, class_counts.CACHE_PREFIX + "*"))


@pytest.mark.parametrize("record_format",
                         [schema.FORMAT_TPU, schema.FORMAT_TFDS])
def test_counts_match_the_labels_of_the_photos(photos, tmp_path, record_format):
  records.write_photo_shards(str(tmp_path), record_format, photos)
  counts = class_counts.count_per_class(str(tmp_path), split="train")
  assert counts.shape == (NUM_CLASSES,)
  np.testing.assert_array_equal(counts, _expected(photos))
  assert counts[609] == 2  # Two of the photos are class 609.
  assert len(_caches(str(tmp_path))) == 1


def _fail_if_scanned(*args, **kwargs):
  raise AssertionError("scanned the records although a cache was valid")


def test_cache_is_reused_and_invalidated_by_a_changed_file_list(
    photos, tmp_path, monkeypatch):
  directory = str(tmp_path)
  records.write_photo_shards(directory, schema.FORMAT_TPU, photos[:12],
                             num_shards=3)
  first = class_counts.count_per_class(directory, split="train")
  np.testing.assert_array_equal(first, _expected(photos[:12]))

  with monkeypatch.context() as patch:
    patch.setattr(class_counts, "_scan", _fail_if_scanned)
    np.testing.assert_array_equal(
        class_counts.count_per_class(directory, split="train"), first)

  # Rewrite the split with more photos and shards: the cache must not
  # apply any more.
  for path in glob.glob(os.path.join(directory, "train-*")):
    os.remove(path)
  records.write_photo_shards(directory, schema.FORMAT_TPU, photos, num_shards=4)
  second = class_counts.count_per_class(directory, split="train")
  np.testing.assert_array_equal(second, _expected(photos))
  assert len(_caches(directory)) == 2

  # A file list of the same names but other content (size) is also new.
  paths, _ = records.write_photo_shards(directory, schema.FORMAT_TPU,
                                        photos[:16], num_shards=4)
  third = class_counts.count_per_class(paths)
  np.testing.assert_array_equal(third, _expected(photos[:16]))


def test_read_only_data_falls_back_to_cache_dir(photos, tmp_path, monkeypatch):
  data_dir = str(tmp_path / "data")
  cache_dir = str(tmp_path / "cache")
  records.write_photo_shards(data_dir, schema.FORMAT_TFDS, photos)
  real_write = files_lib.atomic_write_json

  def read_only_data(path, obj):
    if path.startswith(data_dir):
      raise PermissionError(f"read-only: {path}")
    real_write(path, obj)

  monkeypatch.setattr(files_lib, "atomic_write_json", read_only_data)
  # Without a cache dir: counts are still returned, nothing is written.
  counts = class_counts.count_per_class(data_dir, split="train")
  np.testing.assert_array_equal(counts, _expected(photos))
  assert not _caches(data_dir)

  class_counts.count_per_class(data_dir, split="train", cache_dir=cache_dir)
  assert not _caches(data_dir) and len(_caches(cache_dir)) == 1
  monkeypatch.setattr(class_counts, "_scan", _fail_if_scanned)
  np.testing.assert_array_equal(
      class_counts.count_per_class(data_dir, split="train",
                                   cache_dir=cache_dir), counts)


def test_bad_label_is_named(photos, tmp_path):
  examples = [records.tfds_example(p) for p in photos[:5]]
  examples[3] = records.tfds_example(photos[3], label=NUM_CLASSES)
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TFDS, examples, 2)
  with pytest.raises(ValueError,
                     match=paths[1] + ", record 0: .* 1000 is outside 0..999"):
    class_counts.count_per_class(paths)
  counts = class_counts.count_per_class(paths, skip_corrupt=True,
                                        use_cache=False)
  assert counts.sum() == 4


def test_unparsable_record_is_named(photos, tmp_path):

  class Junk:

    def SerializeToString(self):  # pylint: disable=invalid-name
      return b"\x07junk"

  examples = [records.tpu_example(p) for p in photos[:4]]
  examples[2] = Junk()
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TPU, examples, 1)
  with pytest.raises(ValueError,
                     match=paths[0] + ", record 2: not a valid tf.train"):
    class_counts.count_per_class(paths)


@pytest.mark.parametrize("damage", ["bad_checksum", "truncated"])
def test_damaged_file_is_named(photos, tmp_path, damage):
  paths = records.write_shards(str(tmp_path), schema.FORMAT_TPU,
                               [records.tpu_example(p) for p in photos[:6]], 2)
  if damage == "bad_checksum":
    records.corrupt_record(paths[1], 1)
  else:
    records.truncate_inside_record(paths[1], 1)
  with pytest.raises(ValueError,
                     match=paths[1] + ": reading stopped at record 1"):
    class_counts.count_per_class(paths)
  assert not _caches(str(tmp_path))
