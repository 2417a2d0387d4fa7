"""Data that used to be read silently wrong: a shard cut inside a record on
the training path (repeat and shuffle), a directory missing some of its
``-of-N`` shards, manifest shard names outside the set, and split names that
lead out of the output directory."""

import json
import os
import shutil

import pytest
import tensorflow as tf

from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.diffusion_training import input_pipeline
from cdm_tf.generation import plan as plan_lib
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import synthetic_records


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(20, 2))


def _train_shards(directory):
  return imagenet_reader.list_files(directory, "train")


@pytest.fixture()
def one_cut_shard(real_dir, tmp_path):
  """The 200 training records in one PNG shard, cut at half its size + 37
  bytes (inside a record), as found by the issue."""
  records = b"".join(
      tf.io.gfile.GFile(p, "rb").read() for p in _train_shards(real_dir))
  directory = tmp_path / "cut"
  directory.mkdir()
  path = directory / "train-00000-of-00001"
  path.write_bytes(records[:len(records) // 2 + 37])
  return str(directory), str(path)


# The 3 steps with the default buffer, where the damage marker was
# lost among 50 repeats; and a small buffer, over 13 steps: 104 records,
# past the cut (about record 100) once.
@pytest.mark.parametrize("shuffle_buffer,steps", [(10_000, 3), (16, 13)])
def test_cut_shard_stops_diffusion_training_input(one_cut_shard, shuffle_buffer,
                                                  steps):
  directory, path = one_cut_shard
  batches = input_pipeline.diffusion_dataset(directory, resolution=32,
                                             num_classes=10,
                                             global_batch_size=8, seed=0,
                                             shuffle_buffer=shuffle_buffer)
  with pytest.raises(
      tf.errors.InvalidArgumentError,
      match=f"bad ImageNet record: {path}, record .*"
      "reading stopped at byte"):
    for _ in batches.take(steps):
      pass


def test_cut_shard_stops_a_shuffled_repeated_read_among_good_files(
    real_dir, tmp_path):
  # One damaged file of four, read with shuffle and repeat as the
  # classifier's input pipeline does.
  directory = tmp_path / "mixed"
  shutil.copytree(real_dir, directory)
  cut = _train_shards(str(directory))[2]
  size = os.path.getsize(cut)
  with open(cut, "r+b") as f:
    f.truncate(size // 2 + 37)
  examples = imagenet_reader.read_dataset(str(directory), split="train",
                                          num_classes=10, shuffle=True, seed=0,
                                          repeat=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match=cut):
    for _ in examples.take(24):
      pass


def test_skip_corrupt_still_counts_a_cut_shard(one_cut_shard):
  directory, _ = one_cut_shard
  stats = imagenet_reader.ReadStats()
  examples = list(
      imagenet_reader.read_dataset(directory, split="train", num_classes=10,
                                   shuffle=True, seed=0, skip_corrupt=True,
                                   stats=stats).as_numpy_iterator())
  assert 90 < len(examples) < 110
  assert stats.as_dict()["damaged_files"] == 1


def test_directory_missing_shards_is_refused(real_dir, tmp_path):
  directory = tmp_path / "partial"
  directory.mkdir()
  shards = _train_shards(real_dir)
  assert len(shards) >= 4
  total = len(shards)
  for index in (0, 2):
    shutil.copy(shards[index], directory)
  with pytest.raises(ValueError) as error:
    imagenet_reader.list_files(str(directory), "train")
  message = str(error.value)
  assert str(directory) in message
  assert f"{total - 2} of the {total} train shards are missing" in message
  assert f"train-00001-of-{total:05d}" in message
  assert f"train-00000-of-{total:05d}" not in message
  # A pattern may name a subset on purpose.
  assert len(imagenet_reader.list_files(os.path.join(str(directory),
                                                     "train-*"))) == 2


def test_many_missing_shards_are_counted(tmp_path):
  # TFDS naming; only the names matter to the lister.
  for index in (3, 9):
    (tmp_path / f"imagenet2012-train.tfrecord-{index:05d}-of-01024").touch()
  with pytest.raises(
      ValueError,
      match=(r"1022 of the 1024 train shards are missing \(imagenet2012-train"
             r"\.tfrecord-00000-of-01024, .*00005-of-01024 and 1017 more\)")):
    imagenet_reader.list_files(str(tmp_path), "train")


def test_mixed_shard_totals_are_refused(tmp_path):
  (tmp_path / "train-00000-of-00001").touch()
  (tmp_path / "train-00000-of-00002").touch()
  with pytest.raises(ValueError, match=r"mix set sizes .*\[1, 2\]"):
    imagenet_reader.list_files(str(tmp_path), "train")


@pytest.mark.parametrize("bad_name", [
    "../train-00000-of-00002", "/tmp/train-00000-of-00002",
    "sub/train-00000-of-00002", "validation-00000-of-00002", "x"
])
def test_manifest_shard_outside_the_set_is_refused(real_dir, tmp_path,
                                                   bad_name):
  synthetic_records.write(real_dir, str(tmp_path), per_class=1)
  path = split_manifest.file_path(str(tmp_path), "train")
  with open(path) as f:
    manifest = json.load(f)
  assert split_manifest.read(str(tmp_path), "train").complete
  manifest["shards"][0]["file_name"] = bad_name
  with open(path, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(
      ValueError,
      match=(f"{path}: malformed manifest .*shard name {bad_name!r} is not a "
             "file of split 'train'")):
    split_manifest.read(str(tmp_path), "train")


@pytest.mark.parametrize(
    "split", ["a/../../x", "..", ".", "", "/abs", "a\\b", "tr ain", None])
def test_bad_split_names_are_refused_by_readers_and_writers(tmp_path, split):
  with pytest.raises(ValueError, match="invalid split name"):
    schema.check_split_name(split)
  with pytest.raises(ValueError, match="invalid split name"):
    shard_writer.shard_file_name(split, 0, 1)
  with pytest.raises(ValueError, match="invalid split name"):
    split_manifest.file_path(str(tmp_path), split)
  with pytest.raises(ValueError, match="invalid split name"):
    plan_lib.GenerationPlan([2, 2], 2, split)
  if split:
    with pytest.raises(ValueError, match="invalid split name"):
      imagenet_reader.list_files(str(tmp_path), split)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("split", ["train", "validation", "val_2.x-1"])
def test_plain_split_names_pass(split):
  assert schema.check_split_name(split) == split
  assert shard_writer.shard_file_name(split, 3,
                                      8) == (f"{split}-00003-of-00008")
