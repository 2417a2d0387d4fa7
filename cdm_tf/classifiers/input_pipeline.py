"""Classifier inputs: real, synthetic or real + synthetic training batches,
and the real validation split for evaluation, under ``tf.distribute``.

Azizi et al. (2023) train classifiers on the real ImageNet training set, on
generated images only (the CAS protocol, Sec. 5.2) and on the real set plus
N generated images (Sec. 5.3, Fig. 6). ``resolve_training_set`` turns the
binary's data flags into sizes, before any model is built, so a wrong
directory or too small a synthetic set fails at once; ``training_dataset``
then builds one input pipeline's share of the batches:

1. Real examples from ``imagenet_reader`` (files sharded per input
   pipeline, records shuffled encoded); synthetic examples from their shards
   (files sharded the same way, taken class-balanced as ``multiplier x`` the
   real class counts with ``mixing.class_balanced_subset``, shuffled while
   still encoded, then decoded).
2. ``mixing.training_stream`` interleaves the two in proportion to their
   sizes, so every epoch of ``real_size + synthetic_size`` examples holds
   both in the requested ratio.
3. Each example gets its own stateless seed, ``fold_in([seed, pipeline],
   index)`` (``input_sharding.folded_example_seed``): the crop and flip of
   an example do not depend on how the global batch is split across
   replicas.
4. Training crop: the Inception-style random-resized crop and a flip at the
   model's input size, or for CAS the single evaluation crop of a generated
   image (resize to R x R, centre crop S; no flip).
5. The recipe's RandAugment per image, batching to the per-replica batch,
   then its MixUp / CutMix per batch; labels become one-hot.

With the recipe's repeated augmentation (DeiT's), the stream of step 2
repeats each example before step 3 (``repeat_examples``), so its copies get
their own seeds and are cropped and augmented independently.

Validation batches use the CAS evaluation crop of real images (short side
to R, centre crop S) and cover the split exactly once under any strategy.

With a ``data_resolution`` r (Azizi et al. Table A.3's 64 x 64 column),
every real image, training and validation, is first made r x r exactly as
the cascade's training data of that resolution
(``classifier_preprocessing.as_generator_data``), then cropped as above;
synthetic images, already r x r, pass as they are
(``check_data_resolution``).
"""

import dataclasses
import math
from typing import Optional

import gin
import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.data import class_counts
from cdm_tf.data import class_names
from cdm_tf.data import classifier_preprocessing
from cdm_tf.data import imagenet_reader
from cdm_tf.data import input_sharding
from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import split_manifest

DATA_REAL = "real"
DATA_SYNTHETIC = "synthetic"
DATA_REAL_AND_SYNTHETIC = "real+synthetic"
DATA_CHOICES = (DATA_REAL, DATA_SYNTHETIC, DATA_REAL_AND_SYNTHETIC)

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"

# Encoded records held by each shuffle buffer (about 110 KB each for
# ImageNet JPEGs, so 10,000 take about 1 GB).
DEFAULT_SHUFFLE_BUFFER = 10_000
# Synthetic shards read at once; their records are interleaved one by one.
SYNTHETIC_CYCLE_LENGTH = 64


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """Which images a classifier trains on, as the binary's flags give them.

  Attributes:
    data: one of ``DATA_CHOICES``.
    real_data_dir: directory of real TFRecords (TPU or TFDS format) with
      ``train`` (unless ``data`` is synthetic) and ``validation`` splits,
      and a classes.json for non-ImageNet data.
    synthetic_dir: directory of a generated split with its manifest.
    synthetic_multiplier: take ``multiplier x`` the real count of every
      class from the synthetic set (class-balanced by each example's class
      index); None uses the whole synthetic set.
    synthetic_split: split name of the synthetic shards.
    train_split: split name of the real training shards.
  """
  data: str
  real_data_dir: Optional[str]
  synthetic_dir: Optional[str] = None
  synthetic_multiplier: Optional[float] = None
  synthetic_split: str = TRAIN_SPLIT
  train_split: str = TRAIN_SPLIT

  def uses_real(self):
    return self.data in (DATA_REAL, DATA_REAL_AND_SYNTHETIC)

  def uses_synthetic(self):
    return self.data in (DATA_SYNTHETIC, DATA_REAL_AND_SYNTHETIC)

  def validate(self):
    """Raises ConfigError naming the flag that is missing or wrong."""
    if self.data not in DATA_CHOICES:
      raise configuration.ConfigError(
          f"data must be one of {DATA_CHOICES}, got {self.data!r}")
    if not self.real_data_dir:
      raise configuration.ConfigError(
          "a real data directory is needed: evaluation is on its "
          "validation split (--real_data_dir)")
    if self.uses_synthetic() and not self.synthetic_dir:
      raise configuration.ConfigError(
          f"data {self.data!r} needs a synthetic set (--synthetic_dir)")
    if not self.uses_synthetic() and self.synthetic_dir:
      raise configuration.ConfigError(
          f"data {self.data!r} does not use --synthetic_dir; use "
          f"--data={DATA_SYNTHETIC} or {DATA_REAL_AND_SYNTHETIC}")
    if self.synthetic_multiplier is not None:
      if not self.uses_synthetic():
        raise configuration.ConfigError(
            "--synthetic_multiplier needs synthetic data")
      if not self.synthetic_multiplier > 0:
        raise configuration.ConfigError(
            f"synthetic_multiplier must be positive, got "
            f"{self.synthetic_multiplier}")


@dataclasses.dataclass(frozen=True)
class TrainingSet:
  """A resolved ``TrainingData``: files, class counts and epoch sizes.

  Attributes:
    data: the ``TrainingData`` it was resolved from.
    num_classes: size of the label space (classes.json, else ImageNet).
    class_names: ``ClassInfo`` per class, in label order.
    real_files: real training shards (empty without real data).
    real_class_counts: real training examples per class, or None when they
      are not needed (synthetic data, whole set).
    synthetic_paths: complete synthetic shards (empty without).
    synthetic_class_counts: examples per class in the synthetic set.
    synthetic_settings: the synthetic manifest's settings (generator).
    real_size: real examples per epoch.
    synthetic_size: synthetic examples per epoch.
  """
  data: TrainingData
  num_classes: int
  class_names: tuple
  real_files: tuple = ()
  real_class_counts: Optional[tuple] = None
  synthetic_paths: tuple = ()
  synthetic_class_counts: Optional[tuple] = None
  synthetic_settings: Optional[dict] = None
  real_size: int = 0
  synthetic_size: int = 0

  @property
  def epoch_length(self):
    return self.real_size + self.synthetic_size

  def summary(self):
    """A JSON-able description for run records and reports."""
    return {
        "data": self.data.data,
        "real_data_dir": self.data.real_data_dir,
        "synthetic_dir": self.data.synthetic_dir,
        "synthetic_multiplier": self.data.synthetic_multiplier,
        "num_classes": self.num_classes,
        "real_examples_per_epoch": self.real_size,
        "synthetic_examples_per_epoch": self.synthetic_size,
        "epoch_length": self.epoch_length,
        "synthetic_settings": self.synthetic_settings,
    }


def _list_split(directory, split, what):
  try:
    return imagenet_reader.list_files(directory, split)
  except (ValueError, OSError, tf.errors.OpError) as e:
    raise configuration.ConfigError(
        f"no {what} split {split!r} in {directory}: {e}") from e


def resolve_training_set(data):
  """Checks ``data`` and counts what one epoch holds.

  Real class counts come from ``class_counts.count_per_class`` (one label
  scan, cached next to the data); synthetic counts from the manifest.

  Args:
    data: a ``TrainingData``.

  Returns:
    A ``TrainingSet``.

  Raises:
    ConfigError: on missing directories, splits or manifests, mismatched
      class tables, or too few synthetic examples for the multiplier.
  """
  data.validate()
  classes = tuple(class_names.load_classes(data.real_data_dir))
  num_classes = len(classes)
  _list_split(data.real_data_dir, VALIDATION_SPLIT, "real")
  fields = {}
  needs_real_counts = data.uses_real() or (data.synthetic_multiplier
                                           is not None)
  if needs_real_counts:
    real_files = _list_split(data.real_data_dir, data.train_split, "real")
    counts = class_counts.count_per_class(real_files, num_classes=num_classes)
    fields["real_class_counts"] = tuple(int(c) for c in counts)
    if data.uses_real():
      fields["real_files"] = tuple(real_files)
      fields["real_size"] = int(np.sum(counts))
  if data.uses_synthetic():
    manifest = split_manifest.read_checked(data.synthetic_dir,
                                           data.synthetic_split)
    if manifest.num_classes != num_classes:
      raise configuration.ConfigError(
          f"synthetic set {data.synthetic_dir} has {manifest.num_classes} "
          f"classes, the real data in {data.real_data_dir} {num_classes}")
    paths = manifest.shard_paths(data.synthetic_dir)
    size = manifest.num_examples
    if data.synthetic_multiplier is not None:
      try:
        _, size = mixing.class_balanced_subset(
            reader.read(paths, decode=False), fields["real_class_counts"],
            data.synthetic_multiplier,
            synthetic_class_counts=manifest.class_counts)
      except ValueError as e:
        raise configuration.ConfigError(
            f"synthetic set {data.synthetic_dir}: {e}") from e
    fields.update(synthetic_paths=tuple(paths),
                  synthetic_class_counts=tuple(manifest.class_counts),
                  synthetic_settings=dict(manifest.settings),
                  synthetic_size=int(size))
  training_set = TrainingSet(data=data, num_classes=num_classes,
                             class_names=classes, **fields)
  if training_set.epoch_length <= 0:
    raise configuration.ConfigError(f"the training data {data} is empty")
  return training_set


def _first_image_size(dataset, what):
  for element in dataset.take(1):
    height, width = element[schema.IMAGE].shape[:2]
    return int(height), int(width)
  raise configuration.ConfigError(f"{what} holds no images")


def check_data_resolution(training_set, data_resolution):
  """Checks that ``training_set`` can be trained at ``data_resolution``.

  Real images are made r x r from their centre crop, so the stored photos
  must not be smaller: the first image of each real split used (validation,
  and train when real data is trained on) must be at least r on its short
  side. That refuses sets stored at one smaller size (downsampled ImageNet,
  the embedded Fashion-MNIST at 32 x 32); an odd small ImageNet photo is
  interpolated up, as for the generator. Synthetic images pass unchanged,
  so the first one must be exactly r x r.

  Args:
    training_set: a ``TrainingSet``.
    data_resolution: the side r, or None (images as stored: no check).

  Raises:
    ConfigError (a ValueError): r is not a positive integer, is larger
      than the stored real images, or is not the synthetic images' size.
  """
  if data_resolution is None:
    return
  try:
    resolution = classifier_preprocessing.check_resolution(data_resolution)
  except ValueError as e:
    raise configuration.ConfigError(f"data_resolution: {e}") from e
  data = training_set.data
  real_splits = [(VALIDATION_SPLIT,
                  _list_split(data.real_data_dir, VALIDATION_SPLIT, "real"))]
  if training_set.real_files:
    real_splits.append((data.train_split, list(training_set.real_files)))
  for split, paths in real_splits:
    what = f"the real {split!r} split of {data.real_data_dir}"
    height, width = _first_image_size(
        imagenet_reader.read_dataset(paths,
                                     num_classes=training_set.num_classes,
                                     shuffle=False), what)
    if min(height, width) < resolution:
      raise configuration.ConfigError(
          f"data_resolution {resolution} is larger than the stored real "
          f"images: the first image of {what} is {height}x{width}")
  if training_set.synthetic_paths:
    size = _first_image_size(
        reader.read(list(training_set.synthetic_paths[:1])),
        f"the synthetic set {data.synthetic_dir}")
    if size != (resolution, resolution):
      raise configuration.ConfigError(
          f"the synthetic images of {data.synthetic_dir} are "
          f"{size[0]}x{size[1]}, not data_resolution {resolution}x"
          f"{resolution}: generate them at {resolution}, or set "
          "data_resolution to their size")


def real_at_resolution(example, data_resolution):
  """A real reader element with its image made r x r as the generator's
  training data (``classifier_preprocessing.as_generator_data``); as it is
  when ``data_resolution`` is None."""
  if data_resolution is None:
    return example
  return dict(
      example, **{
          schema.IMAGE: (classifier_preprocessing.as_generator_data(
              example[schema.IMAGE], data_resolution))
      })


def _synthetic_examples(training_set, input_context, seed, shuffle_buffer):
  """Synthetic reader elements, class-balanced when a multiplier is set."""
  paths = input_sharding.shard_files(training_set.synthetic_paths,
                                     input_context, "synthetic shards")
  records = reader.read_interleaved(paths, seed, SYNTHETIC_CYCLE_LENGTH)
  multiplier = training_set.data.synthetic_multiplier
  if multiplier is not None:
    records, _ = mixing.class_balanced_subset(records,
                                              training_set.real_class_counts,
                                              multiplier)
  if shuffle_buffer > 1:
    # Shuffled while encoded: decoded images would take far more memory.
    records = records.shuffle(shuffle_buffer,
                              seed=None if seed is None else seed + 1,
                              reshuffle_each_iteration=True)
  return reader.decode_images(records)


def repeat_examples(examples, repeats, step_examples):
  """Repeated augmentation: each example ``repeats`` times, same epoch length.

  Hoffer et al. (2020) and Berman et al. (2019), as DeiT trains (Touvron et
  al. 2021: 3 copies, its RASampler): every sampled image appears
  ``repeats`` times, each copy cropped and augmented on its own (they get
  their own seeds downstream), and an epoch keeps its number of examples,
  so it covers about 1 / ``repeats`` of the distinct images.

  Where the copies go: the stream is cut into groups of
  g = ceil(step_examples / repeats) consecutive examples and each group is
  emitted ``repeats`` times in order, so the copies of an image are g
  examples apart, in the same step (its examples are ``step_examples``
  consecutive ones of this pipeline, one per-replica batch after the
  other). With 3 or more replicas per pipeline (g >= the per-replica
  batch) the copies land on different replicas, as DeiT's sampler puts them
  on different GPUs; with one replica they share its batch, as DeiT's
  sampler does on one GPU. When ``step_examples`` is not a multiple of
  ``repeats`` the groups drift against the steps and some copies fall in
  the next step. The transformers this is for have no batch statistics,
  so a step's gradient does not depend on which replica holds a copy.

  Args:
    examples: a dataset of reader elements, before cropping.
    repeats: copies of each example (1: the stream unchanged).
    step_examples: examples one step takes from this input pipeline (its
      share of the global batch).

  Returns:
    The repeated dataset.
  """
  if repeats != int(repeats) or repeats < 1:
    raise ValueError(f"repeats must be a positive integer, got {repeats}")
  if step_examples < 1:
    raise ValueError(f"step_examples must be positive, got {step_examples}")
  repeats = int(repeats)
  if repeats == 1:
    return examples
  group = -(-int(step_examples) // repeats)
  # Windows keep images of different sizes (a batch could not hold them).
  return examples.window(group, drop_remainder=True).flat_map(
      lambda window: tf.data.Dataset.zip(window).repeat(repeats))


def train_image(image, seed, image_size, single_crop=False,
                crop_area_range=classifier_preprocessing.AREA_RANGE,
                random_flip=True, max_shift=None):
  """One training image, float32 [S, S, 3] in [0, 1].

  Args:
    image: uint8 [H, W, 3].
    seed: int tensor [2].
    image_size: the model's input side S.
    single_crop: the CAS training crop of a generated image (resize to
      R x R, centre crop S), no randomness.
    crop_area_range: area fraction range of the random-resized crop; the
      Inception default (0.08, 1) suits ImageNet photos, small images such
      as 32 x 32 Fashion-MNIST keep more with a larger minimum.
    random_flip: flip left-right with probability 1/2 (not for
      ``single_crop``).
    max_shift: if set, a random shift of up to this many pixels
      (``random_shifted_crop``) replaces the random-resized crop.
  """
  if single_crop:
    return classifier_preprocessing.preprocess_for_eval(image, image_size,
                                                        generated=True)
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  if max_shift is not None:
    image = classifier_preprocessing.random_shifted_crop(
        image, image_size, crop_seed, max_shift)
  else:
    image = classifier_preprocessing.random_resized_crop(
        image, image_size, crop_seed, area_range=tuple(crop_area_range))
  if random_flip:
    flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
    image = tf.where(flip, tf.reverse(image, axis=[-2]), image)
  return image


def training_examples(training_set, input_context=None, seed=0,
                      shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
                      sampling=mixing.SAMPLING_RANDOM, data_resolution=None):
  """One input pipeline's infinite stream of training reader elements.

  Args:
    training_set: a ``TrainingSet`` (``resolve_training_set``).
    input_context: from ``distribute_datasets_from_function``; files are
      sharded across input pipelines.
    seed: base seed of file and record order and of the sampling; None for
      unseeded.
    shuffle_buffer: encoded records per shuffle buffer.
    sampling: how real and synthetic interleave (``mixing.SAMPLINGS``).
    data_resolution: if set, real images are made this size as the
      generator's training data (``real_at_resolution``).

  Returns:
    A ``mixing.TrainingStream`` of ``{image, label, source}`` elements;
    its epoch is the global one (only the sizes' ratio matters per
    pipeline).
  """
  pipeline_id = input_sharding.pipeline_id(input_context)
  pipeline_seed = None if seed is None else seed + 1000 * pipeline_id
  real = synthetic = None
  if training_set.real_size:
    real = imagenet_reader.read_dataset(
        list(training_set.real_files), num_classes=training_set.num_classes,
        shuffle=True, shuffle_buffer=shuffle_buffer, seed=pipeline_seed,
        input_context=input_context).map(
            lambda example: real_at_resolution(example, data_resolution),
            num_parallel_calls=tf.data.AUTOTUNE)
  if training_set.synthetic_size:
    synthetic = _synthetic_examples(
        training_set, input_context,
        None if pipeline_seed is None else pipeline_seed + 10, shuffle_buffer)
  # Both inputs are shuffled by their readers; the stream only repeats and
  # interleaves them.
  return mixing.training_stream(
      real, training_set.real_size, synthetic, training_set.synthetic_size,
      sampling=sampling, shuffle_buffer=0,
      seed=None if pipeline_seed is None else pipeline_seed + 20)


@gin.configurable(denylist=[
    "training_set", "image_size", "augmentation", "global_batch_size",
    "input_context", "seed", "single_crop", "data_resolution",
    "repeated_augmentations"
])
def training_dataset(
    training_set, image_size, augmentation, global_batch_size,
    input_context=None, seed=0, single_crop=False, data_resolution=None,
    crop_area_range=classifier_preprocessing.AREA_RANGE, random_flip=True,
    max_shift=None, shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    sampling=mixing.SAMPLING_RANDOM, repeated_augmentations=None):
  """One input pipeline's infinite stream of per-replica training batches.

  Args:
    training_set: a ``TrainingSet`` (``resolve_training_set``).
    image_size: the model's input side S.
    augmentation: a ``recipes.TrainingAugmentation`` (RandAugment, MixUp,
      CutMix of the recipe; one-hot labels).
    global_batch_size: examples per step over all replicas.
    input_context: from ``distribute_datasets_from_function``; files are
      sharded across input pipelines and the batch across replicas.
    seed: base seed of data order, sampling and crops.
    single_crop: the CAS protocol's training crop (see ``train_image``).
    data_resolution: if set, real images are first made this size as the
      generator's training data (``real_at_resolution``); synthetic ones
      pass as they are.
    crop_area_range: random-resized crop area range.
    random_flip: random left-right flips.
    max_shift: random shifts of up to this many pixels instead of the
      random-resized crop (small images).
    shuffle_buffer: encoded records per shuffle buffer.
    sampling: how real and synthetic interleave (``mixing.SAMPLINGS``).
    repeated_augmentations: the recipe's copies of each sampled example
      (``repeat_examples``), or None for none.

  Returns:
    A dataset of (images float32 [b, S, S, 3], labels float32 [b,
    num_classes]) with b the per-replica batch.
  """
  pipeline_id = input_sharding.pipeline_id(input_context)
  batch_size = (input_context.get_per_replica_batch_size(global_batch_size)
                if input_context else global_batch_size)
  stream = training_examples(training_set, input_context, seed, shuffle_buffer,
                             sampling, data_resolution)

  def prepare(index, example):
    image = train_image(
        example[schema.IMAGE],
        input_sharding.folded_example_seed(seed or 0, pipeline_id, index),
        image_size, single_crop=single_crop, crop_area_range=crop_area_range,
        random_flip=random_flip, max_shift=max_shift)
    image.set_shape([image_size, image_size, 3])
    return image, tf.cast(example[schema.LABEL], tf.int32)

  examples = stream.dataset
  if repeated_augmentations:
    pipeline_examples = (global_batch_size // input_context.num_input_pipelines
                         if input_context else global_batch_size)
    examples = repeat_examples(examples, repeated_augmentations,
                               pipeline_examples)
  examples = examples.enumerate().map(prepare,
                                      num_parallel_calls=tf.data.AUTOTUNE)
  batches = augmentation.apply(examples, batch_size, drop_remainder=True,
                               pipeline_id=pipeline_id)
  return batches.prefetch(tf.data.AUTOTUNE)


def validation_dataset(data_dir, image_size, num_classes, global_batch_size,
                       split=VALIDATION_SPLIT, input_context=None,
                       data_resolution=None):
  """One pass over a real split, cropped as CAS evaluates real images.

  Args:
    data_dir: directory of real TFRecords.
    image_size: the model's input side S.
    num_classes: label space of the records.
    global_batch_size: examples per step over all replicas.
    split: split name.
    input_context: from ``distribute_datasets_from_function``.
    data_resolution: if set, each image is first made this size as the
      generator's training data (``real_at_resolution``).

  Returns:
    A finite dataset of (images float32 [b, S, S, 3], labels int32 [b],
    weights float32 [b] of ones) with b the per-replica batch, the last
    batch smaller. Under a strategy, replicas that run out first get empty
    batches in the last step (tf.distribute's partial batches, enabled by
    the unknown batch dimension); ``evaluation.Evaluator`` pads every
    replica's batch to b with weight-0 examples.
  """
  batch_size = (input_context.get_per_replica_batch_size(global_batch_size)
                if input_context else global_batch_size)
  examples = imagenet_reader.read_dataset(data_dir, split=split,
                                          num_classes=num_classes,
                                          shuffle=False,
                                          input_context=input_context)

  def prepare(example):
    image, label = classifier_preprocessing.eval_example(
        real_at_resolution(example, data_resolution), image_size)
    # A static image shape: tf.distribute builds the empty batches of the
    # last step from it.
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return image, label, tf.constant(1.0)

  return (examples.map(
      prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
          tf.data.AUTOTUNE))


def steps_per_epoch(training_set, global_batch_size):
  """Optimizer steps per epoch (fractional: the schedule is in epochs)."""
  return training_set.epoch_length / global_batch_size


def total_steps(training_set, global_batch_size, epochs):
  """Steps of ``epochs`` epochs, rounded up."""
  return int(
      math.ceil(epochs * steps_per_epoch(training_set, global_batch_size) -
                1e-9))
