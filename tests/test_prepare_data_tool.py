"""tools/prepare_data.py end to end on the Debian Fashion-MNIST package."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.data import class_counts
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("fashion_mnist"))
  result = subprocess.run([
      sys.executable,
      os.path.join(ROOT, "tools", "prepare_data.py"), f"--output_dir={out}"
  ], capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  return out, result.stdout


def test_the_readers_count_6000_and_1000_images_per_class(prepared):
  out, stdout = prepared
  assert "train: 60000 images in 8 shards" in stdout
  for split, per_class in (("train", 6000), ("validation", 1000)):
    files = imagenet_reader.list_files(out, split=split)
    assert imagenet_reader.detect_format(files[0]) == schema.FORMAT_TPU
    counts = class_counts.count_per_class(files, num_classes=10)
    np.testing.assert_array_equal(counts, [per_class] * 10)


def test_records_decode_to_padded_rgb_images(prepared):
  out, _ = prepared
  files = imagenet_reader.list_files(out, split="validation")
  dataset = imagenet_reader.read_dataset(files, num_classes=10, seed=0)
  labels = []
  for example in dataset.take(200):
    image = example[schema.IMAGE].numpy()
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert image[:2].max() == 0 and image[-2:].max() == 0  # black border
    assert (image[..., 0] == image[..., 2]).all()  # grayscale as RGB
    labels.append(int(example[schema.LABEL]))
  assert 0 <= min(labels) and max(labels) <= 9
  assert len(set(labels)) == 10  # written shuffled: classes are mixed
  assert tf.io.gfile.exists(os.path.join(out, "classes.json"))
