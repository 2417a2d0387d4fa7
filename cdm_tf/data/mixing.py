"""The classifier's training stream: real, synthetic, or real + synthetic.

The paper trains on the 1.2M real ImageNet images, on generated images only,
or on the real images plus k x as many generated ones. Its 1x ... 10x are
training sets of 1.2M ... 12M images in all (Table A.3: 1.2M real + 0.3M
... 10.8M generated, k = 0.25, 0.5, ..., 2, then 3, 4, ..., 9), so its
10x is k = 9 (``--synthetic_multiplier=9``).
``training_stream`` builds that stream from
two datasets of reader elements (``{schema.IMAGE, schema.LABEL,
schema.SOURCE}``): each input is shuffled and repeated, and they are
interleaved in proportion to their sizes, so every epoch of
``real_size + synthetic_size`` elements holds both in the requested ratio.

A smaller synthetic set is taken class-balanced from a larger one by the
``cdm/class_index`` provenance field: keep an example of class c when its
index within the class is below ``multiplier * real_count[c]``
(``class_balanced_subset``). ``synthetic_set.reader.read`` yields our
synthetic records with that field.

Example (real + 2x synthetic)::

  real = imagenet_reader...              # elements {image, label, source}
  synthetic, size = class_balanced_subset(
      reader.read(manifest.shard_paths(directory)),
      real_class_counts, multiplier=2,
      synthetic_class_counts=manifest.class_counts)
  stream = training_stream(real, sum(real_class_counts), synthetic, size,
                           seed=0)
  model.fit(stream.dataset.batch(b), steps_per_epoch=stream.epoch_length // b)
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from cdm_tf.data import schema

SAMPLING_RANDOM = "random"
SAMPLING_EXACT = "exact"
SAMPLINGS = (SAMPLING_RANDOM, SAMPLING_EXACT)

# Keys every element of the stream has; both inputs are cut down to them so
# their structures match.
STREAM_KEYS = (schema.IMAGE, schema.LABEL, schema.SOURCE)

# ----------------------------------------------- class-balanced subset


def class_index_limits(real_class_counts, multiplier):
  """Per-class synthetic counts: ``floor(multiplier * real_count[c])``."""
  counts = np.asarray(real_class_counts, np.int64)
  if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
    raise ValueError("real_class_counts must be a non-empty list of counts")
  if not multiplier > 0:
    raise ValueError(f"multiplier must be positive, got {multiplier}")
  # A tiny epsilon keeps e.g. 1.1 * 10 at 11 despite float rounding.
  return np.floor(counts * float(multiplier) + 1e-9).astype(np.int64)


def keep_class_balanced(limits):
  """A ``Dataset.filter`` predicate: class index below its class's limit.

  Args:
    limits: int array [num_classes]; an element of class c is kept when its
      ``schema.CLASS_INDEX`` is below ``limits[c]``.

  Returns:
    A function from an element with ``schema.LABEL`` and
    ``schema.CLASS_INDEX`` to a scalar bool tensor.
  """
  limits = tf.constant(np.asarray(limits, np.int64))

  def keep(element):
    return element[schema.CLASS_INDEX] < tf.gather(limits,
                                                   element[schema.LABEL])

  return keep


def class_balanced_subset(dataset, real_class_counts, multiplier,
                          synthetic_class_counts=None, allow_short=False):
  """Keeps ``multiplier x real_count[c]`` synthetic examples of each class c.

  Args:
    dataset: Elements with ``schema.LABEL`` and ``schema.CLASS_INDEX``, e.g.
      from ``synthetic_set.reader.read``.
    real_class_counts: Real examples per class.
    multiplier: Synthetic-to-real ratio, e.g. 1 ... 10 in the paper.
    synthetic_class_counts: Examples per class in ``dataset`` (the
      manifest's ``class_counts``); used to check there are enough and to
      give the exact size.
    allow_short: Whether classes with fewer synthetic examples than asked
      are acceptable (they contribute all they have).

  Returns:
    ``(filtered dataset, its number of elements)``.

  Raises:
    ValueError: if a class has too few synthetic examples and not
      ``allow_short``.
  """
  limits = class_index_limits(real_class_counts, multiplier)
  size = int(limits.sum())
  if synthetic_class_counts is not None:
    available = np.asarray(synthetic_class_counts, np.int64)
    if available.shape != limits.shape:
      raise ValueError(f"{available.size} synthetic class counts for "
                       f"{limits.size} real classes")
    short = np.flatnonzero(available < limits)
    if short.size and not allow_short:
      raise ValueError(
          f"{short.size} classes have fewer synthetic examples than "
          f"{multiplier} x real, e.g. class {short[0]}: "
          f"{available[short[0]]} < {limits[short[0]]}")
    size = int(np.minimum(available, limits).sum())
  return dataset.filter(keep_class_balanced(limits)), size


# ----------------------------------------------------------- the stream


@dataclasses.dataclass(frozen=True)
class TrainingStream:
  """A training stream and its epoch.

  Attributes:
    dataset: Elements ``{IMAGE, LABEL, SOURCE}``; infinite unless built with
      ``epochs``.
    epoch_length: Elements per epoch, ``real_size + synthetic_size``.
    real_size: Real elements per epoch (in expectation for random sampling).
    synthetic_size: Synthetic elements per epoch.
  """
  dataset: tf.data.Dataset
  epoch_length: int
  real_size: int
  synthetic_size: int

  @property
  def real_fraction(self):
    return self.real_size / self.epoch_length


def synthetic_count(real_size, multiplier):
  """The paper's N = multiplier x real size (e.g. 2 x 1.2M = 2.4M)."""
  return int(math.floor(real_size * float(multiplier) + 1e-9))


def _prepare_input(dataset, shuffle_buffer, seed):
  dataset = dataset.map(lambda e: {k: e[k] for k in STREAM_KEYS})
  if shuffle_buffer > 1:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                              reshuffle_each_iteration=True)
  return dataset.repeat()


def _exact_choices(real_size, synthetic_size):
  """Input index per position: 0 (real) or 1 (synthetic), evenly spread.

  Position i is real when floor((i + 1) R / T) > floor(i R / T), which puts
  exactly R real positions in every epoch of T and spreads them evenly, so
  each batch also holds the ratio to within one element.
  """
  total = real_size + synthetic_size

  def choice(i):
    i = i % total
    is_real = (i + 1) * real_size // total > i * real_size // total
    return tf.where(is_real, tf.constant(0, tf.int64), tf.constant(1, tf.int64))

  return tf.data.Dataset.range(total).map(choice).repeat()


def training_stream(real=None, real_size=0, synthetic=None, synthetic_size=0,
                    sampling=SAMPLING_RANDOM, shuffle_buffer=10_000, seed=None,
                    epochs=None):
  """Real only, synthetic only, or real + synthetic in proportion to sizes.

  Give ``real`` for real only, ``synthetic`` for synthetic only, both for
  the mixture. Each given input is cut to ``STREAM_KEYS``, shuffled and
  repeated; the mixture draws real with probability
  ``real_size / (real_size + synthetic_size)``.

  Args:
    real: Dataset of real elements, or None.
    real_size: Number of elements of one pass over ``real``.
    synthetic: Dataset of synthetic elements, or None.
    synthetic_size: Number of elements of one pass over ``synthetic`` (e.g.
      ``synthetic_count(real_size, multiplier)`` or the size returned by
      ``class_balanced_subset``).
    sampling: ``"random"``: ``sample_from_datasets`` with weights
      proportional to the sizes (the ratio holds in expectation);
      ``"exact"``: a fixed, evenly spread pattern with exactly the sizes'
      counts per epoch.
    shuffle_buffer: Per-input shuffle buffer in elements; 0 or 1 to skip
      (inputs already shuffled by their reader).
    seed: Seed of the shuffles and the sampling, or None.
    epochs: None for an infinite stream, else the stream ends after this
      many epochs of ``epoch_length`` elements.

  Returns:
    A ``TrainingStream``.
  """
  if sampling not in SAMPLINGS:
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
  if real is None and synthetic is None:
    raise ValueError("give real, synthetic or both")
  real_size = int(real_size) if real is not None else 0
  synthetic_size = int(synthetic_size) if synthetic is not None else 0
  if real is not None and real_size <= 0:
    raise ValueError(f"real_size must be positive, got {real_size}")
  if synthetic is not None and synthetic_size <= 0:
    raise ValueError(f"synthetic_size must be positive, got {synthetic_size}")

  # Different seeds per input so the two shuffles are not the same pattern.
  inputs = []
  if real is not None:
    inputs.append(_prepare_input(real, shuffle_buffer, seed))
  if synthetic is not None:
    inputs.append(
        _prepare_input(synthetic, shuffle_buffer,
                       None if seed is None else seed + 1))
  if len(inputs) == 1:
    dataset = inputs[0]
  elif sampling == SAMPLING_RANDOM:
    total = real_size + synthetic_size
    dataset = tf.data.Dataset.sample_from_datasets(
        inputs, weights=[real_size / total, synthetic_size / total],
        seed=None if seed is None else seed + 2)
  else:
    dataset = tf.data.Dataset.choose_from_datasets(
        inputs, _exact_choices(real_size, synthetic_size))

  epoch_length = real_size + synthetic_size
  if epochs is not None:
    dataset = dataset.take(int(epochs) * epoch_length)
  return TrainingStream(dataset=dataset, epoch_length=epoch_length,
                        real_size=real_size, synthetic_size=synthetic_size)
