"""What a synthetic dataset holds, and which worker writes which shard.

A ``GenerationPlan`` fixes, before anything is sampled, every example of
the set: its class, its index within the class, its id and seed (both from
(class, index) alone), and the shard it goes to. Workers take disjoint sets
of shards (shard s belongs to worker ``s % num_workers``), so any number of
workers, restarts or regenerations of a shard produce the same files.

Examples are ordered by their relative position within their class
(index / class count), so every shard holds close to the real class mix and
a prefix of the set is class-balanced too.
"""

import dataclasses
import math

import numpy as np

from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer

# Example id = label * ID_STRIDE + index: unique, stable, and an int64 seed.
ID_STRIDE = 2**32


def example_id(label, index):
  """Integer id of the ``index``-th example of class ``label``."""
  return np.asarray(label, np.int64) * ID_STRIDE + np.asarray(index, np.int64)


def example_id_string(label, index):
  """The id as stored in the records, e.g. ``"00007-000000012"``."""
  return f"{int(label):05d}-{int(index):09d}"


def counts_from_real(real_class_counts, multiplier):
  """``floor(multiplier x real count)`` per class: keeps the real balance.

  The same rule as ``mixing.class_balanced_subset``, so a k-times set can
  later be cut back to any smaller multiplier exactly.
  """
  return mixing.class_index_limits(real_class_counts, multiplier)


def uniform_counts(total, num_classes):
  """``total`` images spread evenly; the first ``total % C`` get one more."""
  if total <= 0 or num_classes <= 0:
    raise ValueError(f"need a positive total and number of classes, got "
                     f"{total} and {num_classes}")
  counts = np.full([num_classes], total // num_classes, np.int64)
  counts[:total % num_classes] += 1
  return counts


def explicit_counts(classes, per_class, num_classes):
  """``per_class`` images of each listed class (0-based), none of the rest."""
  counts = np.zeros([num_classes], np.int64)
  for label in classes:
    if not 0 <= int(label) < num_classes:
      raise ValueError(f"class {label} is outside 0..{num_classes - 1}")
    counts[int(label)] = per_class
  if per_class <= 0 or not len(classes):
    raise ValueError("give at least one class and a positive count")
  return counts


@dataclasses.dataclass(frozen=True)
class Shard:
  """One shard of the plan: its file name and examples, in write order."""
  index: int
  file_name: str
  labels: np.ndarray  # int64 [n]
  class_indices: np.ndarray  # int64 [n]

  def __len__(self):
    return len(self.labels)

  def example_ids(self):
    return example_id(self.labels, self.class_indices)

  def info(self, num_classes):
    """The ``ShardInfo`` a complete shard of this plan has."""
    counts = np.bincount(self.labels, minlength=num_classes)
    return shard_writer.ShardInfo(file_name=self.file_name,
                                  num_examples=len(self),
                                  class_counts=tuple(int(c) for c in counts))


class GenerationPlan:
  """Every example of a synthetic split and its shard.

  Args:
    class_counts: images to generate per class (0-based labels).
    examples_per_shard: shard size (the last shard may be smaller).
    split: split name of the shard files.
  """

  def __init__(self, class_counts, examples_per_shard=1024, split="train"):
    counts = np.asarray(class_counts, np.int64)
    if counts.ndim != 1 or not counts.size or (counts < 0).any():
      raise ValueError("class_counts must be a non-empty list of counts >= 0")
    if not counts.sum():
      raise ValueError("the plan has no examples")
    if counts.max() >= ID_STRIDE:
      raise ValueError(f"at most {ID_STRIDE - 1} examples per class")
    if examples_per_shard <= 0:
      raise ValueError(f"examples_per_shard must be positive, got "
                       f"{examples_per_shard}")
    self.class_counts = counts
    self.examples_per_shard = int(examples_per_shard)
    self.split = schema.check_split_name(split)
    self.num_shards = math.ceil(self.num_examples / self.examples_per_shard)
    if self.num_shards > 99999:
      raise ValueError(f"{self.num_shards} shards exceed the 99999 the shard "
                       "names allow; raise examples_per_shard")
    self._order = None

  @property
  def num_classes(self):
    return len(self.class_counts)

  @property
  def num_examples(self):
    return int(self.class_counts.sum())

  def _examples(self):
    """(labels, class indices) of all examples in write order."""
    if self._order is None:
      labels = np.repeat(np.arange(self.num_classes, dtype=np.int64),
                         self.class_counts)
      starts = np.cumsum(self.class_counts) - self.class_counts
      indices = np.arange(self.num_examples, dtype=np.int64) - np.repeat(
          starts, self.class_counts)
      # Relative position (i + 1/2) / n_c within the class, ties broken by
      # label: classes are spread evenly over the shards. IEEE float64
      # division gives the same order on every machine.
      position = (indices + 0.5) / np.repeat(self.class_counts,
                                             self.class_counts)
      order = np.lexsort((labels, position))
      self._order = (labels[order], indices[order])
    return self._order

  def shard(self, index):
    """The ``Shard`` with this index."""
    if not 0 <= index < self.num_shards:
      raise ValueError(f"shard {index} outside 0..{self.num_shards - 1}")
    labels, indices = self._examples()
    start = index * self.examples_per_shard
    stop = start + self.examples_per_shard
    return Shard(
        index=index,
        file_name=shard_writer.shard_file_name(self.split, index,
                                               self.num_shards),
        labels=labels[start:stop], class_indices=indices[start:stop])

  def worker_shards(self, num_workers=1, worker_index=0):
    """Indices of the shards worker ``worker_index`` of ``num_workers``
    writes."""
    if num_workers <= 0 or not 0 <= worker_index < num_workers:
      raise ValueError(f"worker_index must be in 0..{num_workers - 1}, got "
                       f"{worker_index} (num_workers={num_workers})")
    return list(range(worker_index, self.num_shards, num_workers))

  def to_json(self):
    return {
        "split": self.split, "num_examples": self.num_examples,
        "num_shards": self.num_shards,
        "examples_per_shard": self.examples_per_shard,
        "class_counts": self.class_counts.tolist()
    }
