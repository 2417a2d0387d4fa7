"""GenerationPlan: exact per-class counts, stable ids, balanced shards and a
disjoint, complete split of the shards among workers."""

import numpy as np
import pytest

from cdm_tf.generation import plan as plan_lib


def _all_examples(plan):
  shards = [plan.shard(s) for s in range(plan.num_shards)]
  labels = np.concatenate([s.labels for s in shards])
  indices = np.concatenate([s.class_indices for s in shards])
  return shards, labels, indices


def test_counts_from_real_keep_the_real_balance():
  real = np.array([1300, 732, 1300, 1])
  np.testing.assert_array_equal(plan_lib.counts_from_real(real, 1), real)
  np.testing.assert_array_equal(plan_lib.counts_from_real(real, 2.5),
                                [3250, 1830, 3250, 2])
  # 1.1 x 10 is 11 despite 1.1 * 10 = 11.000000000000002 in floats.
  assert plan_lib.counts_from_real([10], 1.1)[0] == 11


def test_uniform_and_explicit_counts():
  np.testing.assert_array_equal(plan_lib.uniform_counts(23, 5), [5, 5, 5, 4, 4])
  np.testing.assert_array_equal(plan_lib.explicit_counts([1, 3], 7, 5),
                                [0, 7, 0, 7, 0])
  with pytest.raises(ValueError, match="outside"):
    plan_lib.explicit_counts([5], 7, 5)
  with pytest.raises(ValueError, match="positive"):
    plan_lib.uniform_counts(0, 5)


def test_every_planned_example_is_in_exactly_one_shard():
  counts = np.array([7, 0, 13, 1, 9])
  plan = plan_lib.GenerationPlan(counts, examples_per_shard=4)
  assert plan.num_examples == 30 and plan.num_shards == 8
  shards, labels, indices = _all_examples(plan)
  assert [len(s) for s in shards] == [4] * 7 + [2]
  np.testing.assert_array_equal(np.bincount(labels, minlength=5), counts)
  for label in range(5):
    np.testing.assert_array_equal(np.sort(indices[labels == label]),
                                  np.arange(counts[label]))
  ids = plan_lib.example_id(labels, indices)
  assert len(set(ids.tolist())) == plan.num_examples
  assert shards[0].file_name == "train-00000-of-00008"
  infos = [s.info(5) for s in shards]
  assert sum(i.num_examples for i in infos) == 30
  np.testing.assert_array_equal(np.sum([i.class_counts for i in infos], 0),
                                counts)


def test_example_ids_and_seeds_do_not_depend_on_the_plan():
  small = plan_lib.GenerationPlan([3, 3], examples_per_shard=2)
  large = plan_lib.GenerationPlan([30, 3], examples_per_shard=7)

  def ids(plan):
    _, labels, indices = _all_examples(plan)
    return dict(
        zip(zip(labels.tolist(), indices.tolist()),
            plan_lib.example_id(labels, indices).tolist()))

  small_ids, large_ids = ids(small), ids(large)
  for key, value in small_ids.items():
    assert large_ids[key] == value
  assert plan_lib.example_id(2, 5) == 2 * 2**32 + 5
  assert plan_lib.example_id_string(2, 5) == "00002-000000005"


def test_shards_hold_the_class_mix_and_are_ordered_within_a_class():
  counts = np.array([100, 50, 200, 50])
  plan = plan_lib.GenerationPlan(counts, examples_per_shard=40)
  for s in range(plan.num_shards):
    shard = plan.shard(s)
    expected = counts / counts.sum() * len(shard)
    got = np.bincount(shard.labels, minlength=4)
    assert np.abs(got - expected).max() <= 1.0, (s, got, expected)
  _, labels, indices = _all_examples(plan)
  for label in range(4):
    assert (np.diff(indices[labels == label]) > 0).all()


def test_workers_split_the_shards_disjointly_and_completely():
  plan = plan_lib.GenerationPlan(np.full(10, 11), examples_per_shard=9)
  for workers in (1, 2, 3, 7, 20):
    parts = [plan.worker_shards(workers, w) for w in range(workers)]
    flat = sorted(s for part in parts for s in part)
    assert flat == list(range(plan.num_shards))
  with pytest.raises(ValueError, match="worker_index"):
    plan.worker_shards(2, 2)


def test_same_arguments_give_the_same_plan():
  a = plan_lib.GenerationPlan([5, 8, 3], examples_per_shard=4)
  b = plan_lib.GenerationPlan([5, 8, 3], examples_per_shard=4)
  for s in range(a.num_shards):
    np.testing.assert_array_equal(a.shard(s).labels, b.shard(s).labels)
    np.testing.assert_array_equal(
        a.shard(s).class_indices,
        b.shard(s).class_indices)


def test_bad_plans_are_refused():
  with pytest.raises(ValueError, match="no examples"):
    plan_lib.GenerationPlan([0, 0])
  with pytest.raises(ValueError, match="99999"):
    plan_lib.GenerationPlan([100000], examples_per_shard=1)
  with pytest.raises(ValueError, match=">= 0"):
    plan_lib.GenerationPlan([3, -1])
