"""Super-resolution fidelity on real images (CDM Table 3b's control): the
PSNR against hand-computed values, the real pairs, and the benchmark's
table on a tiny exported cascade."""

import os
import sys

import numpy as np
import pytest

from cdm_tf.metrics import super_resolution_fidelity as fidelity
from tests import fashion_mnist_subset
from tests import tiny_cascade

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 "benchmarks"))
import super_resolution_on_real  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_psnr_matches_hand_computed_values():
  targets = np.zeros((3, 4, 4, 1), np.uint8)
  images = targets.copy()
  images[0] = 255  # MSE 255^2: 0 dB
  images[1] = 1  # MSE 1: 20 log10(255) = 48.1308 dB
  images[2, 0, 0, 0] = 16  # MSE 16^2 / 16 = 16: 48.1308 - 10 log10(16)
  np.testing.assert_allclose(fidelity.psnr(images, targets),
                             [0.0, 48.1308036, 48.1308036 - 12.0411998],
                             atol=1e-6)


def test_psnr_of_identical_images_is_capped_and_shapes_must_agree():
  same = np.full((2, 3, 3, 3), 7, np.uint8)
  assert fidelity.psnr(same, same).tolist() == [fidelity.MAX_PSNR_DB] * 2
  with pytest.raises(ValueError, match="differ in shape"):
    fidelity.psnr(same, same[:, :2])


def test_bicubic_keeps_a_constant_image():
  low = np.full((2, 4, 4, 3), 200, np.uint8)
  up = fidelity.bicubic(low, 8)
  assert up.shape == (2, 8, 8, 3) and up.dtype == np.uint8
  assert (up == 200).all()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(1, 2))


def test_real_pairs_are_downsampled_views_of_the_same_image(data_dir):
  high, low, labels = fidelity.real_pairs(data_dir, 16, 8, 12, 10)
  assert high.shape == (12, 16, 16, 3) and low.shape == (12, 8, 8, 3)
  assert set(labels.tolist()) <= set(range(10)) and len(set(labels)) > 1
  # The low image is the high one at half the size: bicubic upsampling of
  # it is far closer to its own high image than to another one's.
  psnr_own = fidelity.psnr(fidelity.bicubic(low, 16), high)
  psnr_other = fidelity.psnr(fidelity.bicubic(low, 16), np.roll(high, 1, 0))
  assert (psnr_own > psnr_other).mean() > 0.9
  with pytest.raises(ValueError, match="fewer than"):
    fidelity.real_pairs(data_dir, 16, 8, 1000, 10)


def test_benchmark_rows_on_a_tiny_cascade(tmp_path, data_dir):
  base_dir, sr_dir = tiny_cascade.export_tiny_cascade(str(tmp_path))
  high, low, labels = fidelity.real_pairs(data_dir, 16, 8, 4, 10)
  table = super_resolution_on_real.rows(base_dir, [("gaussian", sr_dir)],
                                        [0.0, 0.3], high, low, labels,
                                        "dpmpp_2m", 2, 2)
  assert [(name, level) for name, level, _ in table] == [("bicubic", None),
                                                         ("gaussian", 0.0),
                                                         ("gaussian", 0.3)]
  for _, _, summary in table:
    assert summary.runs == 4 and summary.low <= summary.mean <= summary.high
  # Untrained weights restore nothing: bicubic is far ahead.
  assert table[0][2].mean > table[1][2].mean + 3.0


def test_benchmark_refuses_malformed_stage_specs():
  assert super_resolution_on_real.parse_stages(["a=x/y",
                                                "b=z"]) == [("a", "x/y"),
                                                            ("b", "z")]
  for spec in ("a", "=x", "a="):
    with pytest.raises(ValueError, match="name=export_dir"):
      super_resolution_on_real.parse_stages([spec])
