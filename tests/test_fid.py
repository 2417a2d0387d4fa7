"""Frechet distance, feature statistics, FID@N, cached real statistics."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import files as files_lib
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.data_preparation import fashion_mnist
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import fid
from tests import real_photo_records as records

NETWORK = "test features"


def _gaussian(rng, count, mean, std):
  return rng.normal(size=(count, len(mean))) * std + mean


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  # Diagonal covariances commute, so (S1 S2)^(1/2) = diag(s1 * s2)^(1/2) and
  # FID = |m1 - m2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
  mean1, mean2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
  var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  expected = 1.0 + 4.0 + (1.0 + 1.0 + 0.0)
  result = fid.frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2))
  assert result.value == pytest.approx(expected, abs=1e-10)
  assert result.offset == 0.0 and not result.singular


def test_frechet_distance_of_rotated_gaussians_is_the_closed_form():
  # Covariances with the same eigenvectors: only their eigenvalues matter.
  angle = 0.3
  rotation = np.array([[np.cos(angle), -np.sin(angle)],
                       [np.sin(angle), np.cos(angle)]])
  cov1 = rotation @ np.diag([1.0, 16.0]) @ rotation.T
  cov2 = rotation @ np.diag([9.0, 4.0]) @ rotation.T
  expected = 2.0**2 + (1.0 - 3.0)**2 + (4.0 - 2.0)**2
  result = fid.frechet_distance([0.0, 0.0], cov1, [2.0, 0.0], cov2)
  assert result.value == pytest.approx(expected, abs=1e-9)


def test_one_dimensional_frechet_distance():
  result = fid.frechet_distance([3.0], [[4.0]], [1.0], [[0.25]])
  assert result.value == pytest.approx(2.0**2 + (2.0 - 0.5)**2)


def test_statistics_are_float64_with_unbiased_covariance():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(50, 4)).astype(np.float32)
  stats = fid.statistics(features, NETWORK)
  assert stats.mean.dtype == np.float64 and stats.covariance.dtype == np.float64
  np.testing.assert_allclose(stats.mean, features.astype(np.float64).mean(0))
  centred = features.astype(np.float64) - stats.mean
  np.testing.assert_allclose(stats.covariance, centred.T @ centred / 49,
                             rtol=1e-12)
  assert stats.count == 50 and stats.network == NETWORK
  with pytest.raises(ValueError, match="N >= 2"):
    fid.statistics(features[:1], NETWORK)


def test_sampled_gaussians_approach_the_closed_form():
  rng = np.random.default_rng(1)
  a = _gaussian(rng, 20_000, np.zeros(4), np.array([1.0, 2.0, 1.0, 1.0]))
  b = _gaussian(rng, 20_000, np.full(4, 0.5), np.array([1.0, 1.0, 3.0, 1.0]))
  expected = 4 * 0.25 + 1.0 + 4.0
  value = fid.fid(fid.statistics(a, NETWORK), fid.statistics(b, NETWORK))
  assert value.value == pytest.approx(expected, rel=0.05)


def test_fid_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(2)
  stats = fid.statistics(rng.normal(size=(300, 16)), NETWORK)
  assert abs(fid.fid(stats, stats).value) < 1e-8


def test_non_finite_root_is_retried_with_an_offset():
  # [[0, 1], [0, 0]] has no square root: scipy returns inf.
  result = fid.frechet_distance([0.0, 0.0], [[0.0, 1.0], [0.0, 0.0]],
                                [0.0, 0.0], np.eye(2), eps=1e-6)
  assert result.offset == 1e-6
  assert np.isfinite(result.value)


def test_fewer_images_than_dimensions_still_give_a_distance():
  rng = np.random.default_rng(3)
  a = fid.statistics(rng.normal(size=(5, 32)), NETWORK)
  b = fid.statistics(rng.normal(size=(5, 32)), NETWORK)
  result = fid.fid(a, b)
  assert np.isfinite(result.value) and result.value > 0
  assert abs(fid.fid(a, a).value) < 1e-6 * result.value


@pytest.mark.parametrize("count,dimension", [(200, 16), (10, 16), (5, 32)],
                         ids=["full_rank", "rank_deficient", "5_of_32"])
def test_eigh_and_sqrtm_routes_agree(count, dimension):
  rng = np.random.default_rng(count + dimension)
  mixing = rng.normal(size=(dimension, dimension))
  a = fid.statistics(rng.normal(size=(count, dimension)) @ mixing, NETWORK)
  b = fid.statistics(
      rng.normal(size=(count, dimension)) * rng.uniform(0.5, 2.0, dimension) +
      0.3, NETWORK)
  eigh = fid.fid(a, b, method="eigh")
  sqrtm = fid.fid(a, b, method="sqrtm")
  assert (eigh.method, sqrtm.method) == ("eigh", "sqrtm")
  assert eigh.value == pytest.approx(sqrtm.value, rel=1e-6)
  assert eigh.offset == 0.0 and eigh.max_imaginary == 0.0
  # Fewer images than dimensions: the product is singular.
  assert eigh.singular == (count <= dimension)
  assert abs(fid.fid(a, a, method="eigh").value) < 1e-9 * eigh.value


@pytest.mark.parametrize("method", fid.METHODS)
def test_both_routes_give_the_diagonal_closed_form(method):
  result = fid.frechet_distance([0.0, 1.0, -2.0],
                                np.diag([1.0, 4.0, 9.0]), [1.0, 1.0, 0.0],
                                np.diag([4.0, 1.0, 9.0]), method=method)
  assert result.value == pytest.approx(1.0 + 4.0 + 2.0, rel=1e-12)
  assert result.method == method and not result.singular


def test_eigh_refuses_a_negative_covariance_and_unknown_methods():
  with pytest.raises(ValueError, match="not a covariance"):
    fid.frechet_distance([0.0, 0.0], np.diag([1.0, -1.0]), [0.0, 0.0],
                         np.eye(2))
  with pytest.raises(ValueError, match="unknown method"):
    fid.frechet_distance([0.0], [[1.0]], [0.0], [[1.0]], method="svd")


def test_non_symmetric_covariances_take_the_sqrtm_route():
  result = fid.frechet_distance([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]],
                                [0.0, 0.0], np.eye(2))
  assert result.method == "sqrtm"


def test_statistics_of_different_networks_are_refused():
  rng = np.random.default_rng(4)
  features = rng.normal(size=(10, 3))
  with pytest.raises(ValueError, match="different feature networks"):
    fid.fid(fid.statistics(features, "a"), fid.statistics(features, "b"))


def test_shapes_must_agree():
  with pytest.raises(ValueError, match="shapes disagree"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _pixel_statistics_network():
  """Flattened 4x4 average-pooled pixels: fixed, cheap 48-d features."""
  inputs = keras.Input((32, 32, 3))
  pooled = keras.layers.AveragePooling2D(8, name="pooled")(inputs)
  flat = keras.layers.Flatten(name="flat")(pooled)
  logits = keras.layers.Dense(10, kernel_initializer="ones", name="head")(flat)
  return keras.Model(inputs, logits)


def test_disjoint_halves_of_real_images_are_close():
  images, labels = fashion_mnist.load_split("validation")
  images = fashion_mnist.to_rgb(images[:1200], pad_to=32)
  labels = labels[:1200]
  extractor = features_lib.ClassifierFeatures(_pixel_statistics_network(),
                                              "Fashion-MNIST pooled pixels",
                                              feature_layer="flat")
  feats, _ = extractor(images)
  half1 = fid.statistics(feats[:600], extractor.name)
  half2 = fid.statistics(feats[600:], extractor.name)
  one_class = fid.statistics(feats[labels == 1], extractor.name)  # trousers
  halves = fid.fid(half1, half2).value
  other = fid.fid(half1, one_class).value
  assert 0 < halves < 0.1 * other


def test_fid_at_uses_the_first_n_and_labels_each_value():
  rng = np.random.default_rng(5)
  generated = features_lib.ExtractedFeatures(
      rng.normal(size=(40, 3)).astype(np.float32), None, NETWORK)
  references = {
      "train": fid.statistics(rng.normal(size=(100, 3)), NETWORK),
      "validation": fid.statistics(rng.normal(size=(100, 3)) + 1, NETWORK),
  }
  values = fid.fid_at(generated, references, sample_counts=(20, 40))
  assert [v.label for v in values] == [
      f"FID@20 vs train ({NETWORK})", f"FID@20 vs validation ({NETWORK})",
      f"FID@40 vs train ({NETWORK})", f"FID@40 vs validation ({NETWORK})"
  ]
  expected = fid.fid(fid.statistics(generated.features[:20], NETWORK),
                     references["validation"]).value
  assert values[1].value == pytest.approx(expected)
  assert values[1].details["sqrt_method"] == fid.DEFAULT_METHOD == "eigh"
  assert values[1].details["reference_count"] == 100
  with pytest.raises(ValueError, match="needs 50 generated images"):
    fid.fid_at(generated, references, sample_counts=(50,))


class _CountingExtractor(features_lib.FeatureExtractor):
  """Mean colour and its square per image; counts the images it sees."""

  def __init__(self):
    self.images_seen = 0

  @property
  def name(self):
    return "mean colour"

  @property
  def fingerprint(self):
    return "mean-colour-v1"

  def prepare(self, image):
    return tf.image.resize(tf.cast(image, tf.float32), [8, 8])

  def compute(self, prepared):
    self.images_seen += int(prepared.shape[0])
    colour = tf.reduce_mean(prepared, axis=[1, 2]) / 255.0
    return tf.concat([colour, colour**2], axis=1), None


def _caches(directory):
  return sorted(glob.glob(os.path.join(directory, fid.CACHE_PREFIX + "*")))


@pytest.fixture(scope="module")
def photos():
  return records.load_photos(max_side=40)


def test_reference_statistics_are_cached_and_reused(photos, tmp_path):
  data_dir = str(tmp_path)
  paths, _ = records.write_photo_shards(data_dir, schema.FORMAT_TPU, photos,
                                        num_shards=2)
  extractor = _CountingExtractor()
  first = fid.reference_statistics(data_dir, extractor, split="train",
                                   resolution=16, keep_features=5)
  assert extractor.images_seen == len(photos)
  assert first.statistics.count == len(photos)
  assert first.features.shape == (5, 6)
  assert _caches(data_dir) == [first.cache_path]

  # The cache holds what a direct computation gives.
  direct = features_lib.extract(
      imagenet_reader.read_dataset(paths, shuffle=False), extractor,
      preprocess=features_lib.center_crop_resize(16))
  np.testing.assert_allclose(first.statistics.mean,
                             direct.features.astype(np.float64).mean(0))
  np.testing.assert_array_equal(first.features, direct.features[:5])

  seen = extractor.images_seen
  again = fid.reference_statistics(data_dir, extractor, split="train",
                                   resolution=16, keep_features=5)
  assert extractor.images_seen == seen  # read from the cache
  np.testing.assert_array_equal(again.statistics.covariance,
                                first.statistics.covariance)
  np.testing.assert_array_equal(again.features, first.features)
  assert again.statistics.network == "mean colour"

  # Other settings are other statistics.
  fewer = fid.reference_statistics(data_dir, extractor, split="train",
                                   resolution=16, num_examples=10)
  assert fewer.statistics.count == 10
  assert extractor.images_seen == seen + 10
  assert len(_caches(data_dir)) == 2


def test_changed_files_invalidate_the_cache(photos, tmp_path):
  data_dir = str(tmp_path)
  paths, _ = records.write_photo_shards(data_dir, schema.FORMAT_TPU,
                                        photos[:10], num_shards=2)
  extractor = _CountingExtractor()
  before = fid.reference_statistics(data_dir, extractor, split="train")
  assert before.statistics.count == 10
  # Rewrite a shard with more photos: same names, other sizes.
  records.write_photo_shards(data_dir, schema.FORMAT_TPU, photos[:14],
                             num_shards=2)
  seen = extractor.images_seen
  after = fid.reference_statistics(data_dir, extractor, split="train")
  assert extractor.images_seen == seen + 14
  assert after.statistics.count == 14
  assert after.cache_path != before.cache_path
  assert len(paths) == 2


def test_a_corrupt_cache_is_recomputed(photos, tmp_path):
  data_dir = str(tmp_path)
  records.write_photo_shards(data_dir, schema.FORMAT_TPU, photos[:6],
                             num_shards=1)
  extractor = _CountingExtractor()
  first = fid.reference_statistics(data_dir, extractor, split="train")
  with open(first.cache_path, "wb") as f:
    f.write(b"not an npz file")
  again = fid.reference_statistics(data_dir, extractor, split="train")
  assert extractor.images_seen == 12
  np.testing.assert_allclose(again.statistics.mean, first.statistics.mean)


def test_unwritable_data_dir_caches_in_cache_dir(photos, tmp_path, monkeypatch):
  data_dir = str(tmp_path / "data")
  cache_dir = str(tmp_path / "cache")
  records.write_photo_shards(data_dir, schema.FORMAT_TPU, photos[:6],
                             num_shards=1)
  write = files_lib.atomic_write_bytes

  def read_only_data_dir(path, data):
    if os.path.dirname(path) == data_dir:
      raise PermissionError(f"{path}: read-only")
    write(path, data)

  monkeypatch.setattr(files_lib, "atomic_write_bytes", read_only_data_dir)
  extractor = _CountingExtractor()
  result = fid.reference_statistics(data_dir, extractor, split="train",
                                    cache_dir=cache_dir)
  assert os.path.dirname(result.cache_path) == cache_dir
  assert not _caches(data_dir)
  again = fid.reference_statistics(data_dir, extractor, split="train",
                                   cache_dir=cache_dir)
  assert again.cache_path == result.cache_path
  assert extractor.images_seen == 6
