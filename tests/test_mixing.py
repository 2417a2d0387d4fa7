"""The training stream: proportions, modes and class-balanced subsets."""

import collections
import importlib.util
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest


def _elements(count, source, image_shape, num_classes=3):
  """A reader-like dataset: label i % num_classes, an id in the pixels."""
  ids = np.arange(count)
  images = np.zeros([count, *image_shape], np.uint8)
  images[:, 0, 0, 0] = ids  # Lets a test tell the elements apart.
  return tf.data.Dataset.from_tensor_slices({
      schema.IMAGE: images,
      schema.LABEL: (ids % num_classes).astype(np.int32),
      schema.SOURCE: [source] * count,
  })


def _sources(dataset, count):
  return [
      e[schema.SOURCE].decode()
      for e in dataset.take(count).as_numpy_iterator()
  ]


def test_random_sampling_matches_the_requested_proportion():
  # Real + 3x synthetic: 1/4 real. Different image sizes mix fine.
  stream = mixing.training_stream(_elements(40, "real", [4, 4, 3]), 40,
                                  _elements(120, "synthetic", [5, 6, 3]), 120,
                                  shuffle_buffer=200, seed=3)
  assert stream.epoch_length == 160 and stream.real_fraction == 0.25
  sources = _sources(stream.dataset, 10_000)
  fraction = sources.count("real") / len(sources)
  # Binomial std is 0.0043: 0.02 is more than 4 sigma.
  assert abs(fraction - 0.25) < 0.02, fraction
  # It is random: windows of one epoch do not all hold exactly 40 real.
  per_epoch = [sources[i:i + 160].count("real") for i in range(0, 9_600, 160)]
  assert len(set(per_epoch)) > 1


def test_each_input_is_shuffled_and_repeated_whole():
  stream = mixing.training_stream(_elements(30, "real", [2, 2, 3]), 30,
                                  _elements(30, "synthetic", [2, 2, 3]), 30,
                                  shuffle_buffer=30, seed=0)
  real_ids = [
      int(e[schema.IMAGE][0, 0, 0])
      for e in stream.dataset.take(400).as_numpy_iterator()
      if e[schema.SOURCE] == b"real"
  ]
  # Every pass over the real input yields each real element once.
  assert sorted(real_ids[:30]) == list(range(30))
  assert sorted(real_ids[30:60]) == list(range(30))
  assert real_ids[:30] != list(range(30))  # Shuffled,
  assert real_ids[:30] != real_ids[30:60]  # and differently each pass.


def test_exact_sampling_has_exact_counts_per_epoch_and_even_batches():
  stream = mixing.training_stream(_elements(30, "real", [2, 2, 3]), 30,
                                  _elements(70, "synthetic", [2, 2, 3]), 70,
                                  sampling=mixing.SAMPLING_EXACT, seed=1,
                                  epochs=3)
  sources = _sources(stream.dataset, 1_000)
  assert len(sources) == 300  # Three epochs, then the stream ends.
  for epoch in range(3):
    assert sources[epoch * 100:(epoch + 1) * 100].count("real") == 30
  for start in range(0, 300, 20):  # Batches of 20 hold 6 real.
    assert sources[start:start + 20].count("real") == 6


@pytest.mark.parametrize("mode", ["real", "synthetic"])
def test_single_source_modes(mode):
  real = _elements(12, "real", [2, 2, 3]) if mode == "real" else None
  synthetic = (_elements(20, "synthetic", [2, 2, 3])
               if mode == "synthetic" else None)
  stream = mixing.training_stream(real, 12, synthetic, 20, seed=0, epochs=2)
  size = 12 if mode == "real" else 20
  assert stream.epoch_length == size
  assert (stream.real_size,
          stream.synthetic_size) == ((12, 0) if mode == "real" else (0, 20))
  sources = _sources(stream.dataset, 1_000)
  assert sources == [mode] * (2 * size)


def test_invalid_streams_are_rejected():
  with pytest.raises(ValueError, match="give real"):
    mixing.training_stream()
  with pytest.raises(ValueError, match="sampling"):
    mixing.training_stream(_elements(2, "real", [2, 2, 3]), 2,
                           sampling="round-robin")
  with pytest.raises(ValueError, match="real_size"):
    mixing.training_stream(_elements(2, "real", [2, 2, 3]), 0)


def test_paper_sizes():
  assert mixing.synthetic_count(1_281_167, 1) == 1_281_167
  assert mixing.synthetic_count(1_200_000, 10) == 12_000_000
  np.testing.assert_array_equal(mixing.class_index_limits([1300, 732, 10], 1.1),
                                [1430, 805, 11])


def _crops(count):
  data = pathlib.Path(
      importlib.util.find_spec(
          "foolbox").submodule_search_locations[0]) / "data"
  crops = []
  for path in sorted(data.glob("imagenet_*_*.jpg"))[:count]:
    with Image.open(path) as image:
      crops.append(np.asarray(image.convert("RGB"), np.uint8)[100:108, 90:97])
  return crops


CLASSES = [class_names.ClassInfo(f"n{i}", f"c{i}") for i in range(3)]


@pytest.fixture(name="synthetic_set")
def _synthetic_set(tmp_path):
  """5 PNG examples per class, classes interleaved over two shards."""
  crops = _crops(15)
  order = [(label, index) for index in range(5) for label in range(3)]
  infos, images = [], {}
  for shard in range(2):
    path = str(tmp_path / shard_writer.shard_file_name("train", shard, 2))
    with shard_writer.ShardWriter(path, num_classes=3) as writer:
      for n, (label, index) in enumerate(order):
        if n % 2 != shard:
          continue
        images[(label, index)] = crops[n]
        writer.write(
            shard_writer.encode_example(
                crops[n], label, CLASSES, image_format="png",
                provenance=shard_writer.Provenance("g", f"{label}-{index}",
                                                   index, (label, index))),
            label)
    infos.append(writer.info)
  manifest = split_manifest.write(str(tmp_path), "train", infos, 3, "png")
  return str(tmp_path), manifest, images


def test_read_synthetic_yields_labels_class_indices_and_pixels(synthetic_set):
  directory, manifest, images = synthetic_set
  elements = list(
      reader.read(manifest.shard_paths(directory)).as_numpy_iterator())
  assert len(elements) == 15
  for e in elements:
    key = (int(e[schema.LABEL]), int(e[schema.CLASS_INDEX]))
    np.testing.assert_array_equal(e[schema.IMAGE], images[key])
    assert os.path.basename(e[schema.SOURCE].decode()).startswith("train-")


@pytest.mark.parametrize("decode", [True, False])
def test_class_balanced_subset_by_class_index(synthetic_set, decode):
  directory, manifest, images = synthetic_set
  synthetic = reader.read(manifest.shard_paths(directory), decode=decode)
  real_counts = [2, 1, 3]  # 2x: limits 4, 2, 6; class 2 has only 5.
  with pytest.raises(ValueError, match="fewer synthetic examples"):
    mixing.class_balanced_subset(synthetic, real_counts, 2,
                                 manifest.class_counts)
  subset, size = mixing.class_balanced_subset(synthetic, real_counts, 2,
                                              manifest.class_counts,
                                              allow_short=True)
  if not decode:
    subset = reader.decode_images(subset)
  kept = sorted((int(e[schema.LABEL]), int(e[schema.CLASS_INDEX]))
                for e in subset.as_numpy_iterator())
  assert size == len(kept) == 4 + 2 + 5
  assert kept == ([(0, i) for i in range(4)] + [(1, i) for i in range(2)] +
                  [(2, i) for i in range(5)])
  # 1x is a prefix of 2x: growing the multiplier only adds examples.
  one_x, one_x_size = mixing.class_balanced_subset(synthetic, real_counts, 1,
                                                   manifest.class_counts)
  one_x_kept = {(int(e[schema.LABEL]), int(e[schema.CLASS_INDEX]))
                for e in one_x.as_numpy_iterator()}
  assert one_x_size == len(one_x_kept) == 6 and one_x_kept <= set(kept)
  for e in subset.take(2).as_numpy_iterator():
    key = (int(e[schema.LABEL]), int(e[schema.CLASS_INDEX]))
    np.testing.assert_array_equal(e[schema.IMAGE], images[key])


def test_real_plus_class_balanced_synthetic_stream(synthetic_set):
  directory, manifest, _ = synthetic_set
  real = _elements(6, "real", [8, 7, 3])
  synthetic, size = mixing.class_balanced_subset(
      reader.read(manifest.shard_paths(directory)), [2, 2, 2], 2,
      manifest.class_counts)
  stream = mixing.training_stream(real, 6, synthetic, size, seed=5,
                                  sampling=mixing.SAMPLING_EXACT)
  assert stream.epoch_length == 18
  elements = list(stream.dataset.take(36).as_numpy_iterator())
  # The extra provenance key is dropped so both inputs share a structure.
  assert set(elements[0]) == set(mixing.STREAM_KEYS)
  sources = collections.Counter(
      "real" if e[schema.SOURCE] == b"real" else "synthetic" for e in elements)
  assert sources == {"real": 12, "synthetic": 24}
