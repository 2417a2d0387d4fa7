"""Class-balanced subsets of a real training split (data/real_subset.py,
tools/subset_data.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import settings_record
from cdm_tf.classifiers import input_pipeline
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.data_preparation import real_subset
from cdm_tf.synthetic_set import shard_writer
from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "subset_data.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  # 5 training and 2 validation images per class.
  return fashion_mnist_subset.prepared(
      str(tmp_path_factory.mktemp("subset_source")), per_class=(5, 2))


def _records(directory, split):
  """[(label, serialized record)] in file order."""
  records = []
  for path in imagenet_reader.list_files(directory, split):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      example = tf.train.Example.FromString(raw)
      label = example.features.feature[schema.TPU_LABEL].int64_list.value[0]
      records.append((label - schema.TPU_LABEL_OFFSET, raw))
  return records


def test_class_limits():
  np.testing.assert_array_equal(
      real_subset.class_limits([10, 7, 3], fraction=0.5), [5, 3, 1])
  # 0.1 x 60 is 6 exactly, not 5 by float rounding.
  np.testing.assert_array_equal(real_subset.class_limits([60], fraction=0.1),
                                [6])
  np.testing.assert_array_equal(real_subset.class_limits([10, 7], per_class=4),
                                [4, 4])
  for kwargs, match in [({"fraction": 0.0}, "fraction"),
                        ({"fraction": 1.5}, "fraction"),
                        ({"per_class": 8}, "fewer than 8"), ({}, "one of"),
                        ({"fraction": 0.5, "per_class": 2}, "one of")]:
    with pytest.raises(ValueError, match=match):
      real_subset.class_limits([10, 7], **kwargs)


def test_first_records_of_each_class_copied_as_they_are(source, tmp_path):
  out = str(tmp_path / "subset")
  manifest = real_subset.write_subset(source, out, fraction=0.4,
                                      examples_per_shard=7)
  assert list(manifest.class_counts) == [2] * 10
  assert manifest.num_examples == 20 and manifest.num_shards == 3
  expected = {}
  for label, raw in _records(source, "train"):
    expected.setdefault(label, [])
    if len(expected[label]) < 2:
      expected[label].append(raw)
  got = {}
  for label, raw in _records(out, "train"):
    got.setdefault(label, []).append(raw)
  assert got == expected
  # Validation is the source's, linked; classes.json is the same.
  assert [raw for _, raw in _records(out, "validation")
         ] == [raw for _, raw in _records(source, "validation")]
  assert class_names.load_classes(out) == class_names.load_classes(source)
  assert not [
      n for n in os.listdir(out) if n.startswith(shard_writer.TMP_PREFIX)
  ]
  # Classifiers train on it like on any real set.
  training_set = input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data=input_pipeline.DATA_REAL,
                                  real_data_dir=out))
  assert training_set.real_class_counts == (2,) * 10
  assert training_set.real_size == 20


def test_rerun_keeps_the_subset_and_other_settings_are_refused(
    source, tmp_path):
  out = str(tmp_path / "subset")
  first = real_subset.write_subset(source, out, per_class=3)
  mtimes = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
  again = real_subset.write_subset(source, out, per_class=3)
  assert again == first
  assert mtimes == {
      n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)
  }
  with pytest.raises(
      settings_record.SettingsConflictError,
      match=r"other settings \(per_class: 3 -> 4; see .*"
      r"manifest-train\.json\); choose another directory"):
    real_subset.write_subset(source, out, per_class=4)
  with pytest.raises(ValueError, match="must differ"):
    real_subset.write_subset(source, source, per_class=1)


def test_tool(source, tmp_path):
  out = str(tmp_path / "subset")
  result = subprocess.run([
      sys.executable, TOOL, f"--source_dir={source}", f"--output_dir={out}",
      "--per_class=1"
  ], capture_output=True, text=True, env=ENV, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "train: 10 records in 1 shards; per class [1, 1, 1, 1, 1, 1, 1, 1, " \
         "1, 1]" in result.stdout
  missing = str(tmp_path / "missing")
  for flags, message in [(["--per_class=6"], "fewer than 6 records"),
                         ([f"--source_dir={missing}", "--per_class=1"],
                          f"{missing}: no such data directory"),
                         (["--fraction=2"], "fraction must be in (0, 1]"),
                         (["--fraction=0.5", "--per_class=2"], "give one of"),
                         (["--frac=0.5"], "Unknown command line flag")]:
    result = subprocess.run([
        sys.executable, TOOL, f"--source_dir={source}",
        f"--output_dir={tmp_path / 'bad'}", *flags
    ], capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert result.returncode == 2, (flags, result.stderr[-2000:])
    assert message in result.stderr, (flags, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
