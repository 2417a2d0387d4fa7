"""Each input pipeline's share of the files, and the per-example seeds
(pinned: a changed seed would change every crop, flip and noise draw)."""

import pytest
import tensorflow as tf

from cdm_tf.data import input_sharding


def _context(pipelines, pipeline):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=pipeline,
                                    num_replicas_in_sync=pipelines)


def test_every_file_goes_to_exactly_one_pipeline():
  files = [f"shard-{i}" for i in range(7)]
  shares = [input_sharding.shard_files(files, _context(3, i)) for i in range(3)]
  assert shares[0] == ["shard-0", "shard-3", "shard-6"]
  assert sorted(sum(shares, [])) == files
  assert input_sharding.shard_files(tuple(files), None) == files


def test_too_few_files_for_the_pipelines_is_an_error():
  with pytest.raises(
      ValueError, match="2 synthetic shards cannot be sharded "
      "across 3 input pipelines: need at least one per"):
    input_sharding.shard_files(["a", "b"], _context(3, 0), "synthetic shards")


def test_pipeline_id():
  assert input_sharding.pipeline_id(None) == 0
  assert input_sharding.pipeline_id(_context(4, 2)) == 2


def test_diffusion_seeds_are_strided_by_pipeline():
  seeds = [
      input_sharding.strided_example_seed(
          3, pipeline, tf.constant(index, tf.int64)).numpy().tolist()
      for pipeline, index in [(0, 0), (0, 5), (1, 0), (1, 5)]
  ]
  assert seeds == [[3, 0], [3, 5], [3, 2**40], [3, 2**40 + 5]]


@pytest.mark.parametrize("base, pipeline, index, expected", [
    (0, 0, 0, [-6856063536328932722, 0]),
    (7, 1, 1, [4883427707394007725, 1]),
    (2**31, 5, 123456789, [-1966453181008341067, 123456789]),
])
def test_classifier_seeds_are_folded_in(base, pipeline, index, expected):
  seed = input_sharding.folded_example_seed(base, pipeline,
                                            tf.constant(index, tf.int64))
  assert seed.numpy().tolist() == expected
