"""Training batches for diffusion models, from ImageNet-format TFRecords.

Each example gets its own seed, ``[base_seed, pipeline_id * 2**40 + index]``
(``input_sharding.strided_example_seed``), from which the model draws all
of its training randomness: the result of a step does not depend on how
the global batch is split across replicas.

With ``captions=True`` the records are captioned image-text pairs
(``cdm_tf.data.caption_reader``) and batches carry the caption strings under
``schema.CAPTION``; the trainer encodes them with the frozen text encoder
(``cdm_tf.diffusion_training.text_conditioning``).
"""

import tensorflow as tf

from cdm_tf.data import caption_reader
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import imagenet_reader
from cdm_tf.data import input_sharding
from cdm_tf.data import schema


def diffusion_dataset(data_dir, split="train", resolution=64,
                      low_res_resolution=None, num_classes=1000,
                      global_batch_size=64, random_flip=True, seed=0,
                      shuffle_buffer=10_000, captions=False,
                      input_context=None):
  """Batches of ``x_start`` (and ``low_res``), ``label`` and ``seed``.

  Args:
    data_dir: directory (or pattern) of the split's TFRecords.
    resolution: the stage's output side.
    low_res_resolution: the conditioning side for super-resolution stages;
      both images come from the same crop and flip.
    num_classes: label space of the records.
    global_batch_size: split evenly across replicas.
    random_flip: left-right flip (CDM trains with random flips).
    seed: base seed of data order, flips and the per-example training seeds.
    captions: read captioned records and add each image's caption
      (``schema.CAPTION``, string); their labels are optional
      (``caption_reader.NO_LABEL`` when absent).
    input_context: from ``distribute_datasets_from_function``.
  """
  pipeline_id = input_sharding.pipeline_id(input_context)
  batch_size = (input_context.get_per_replica_batch_size(global_batch_size)
                if input_context else global_batch_size)
  if captions:
    examples = caption_reader.read_dataset(data_dir, split=split,
                                           seed=seed + pipeline_id,
                                           shuffle_buffer=shuffle_buffer,
                                           repeat=True,
                                           input_context=input_context)
  else:
    examples = imagenet_reader.read_dataset(
        data_dir, split=split, num_classes=num_classes, seed=seed + pipeline_id,
        shuffle_buffer=shuffle_buffer, repeat=True, input_context=input_context)

  def prepare(index, example):
    example_seed = input_sharding.strided_example_seed(seed, pipeline_id, index)
    flip_seed = tf.random.experimental.stateless_fold_in(example_seed, 1)
    resolutions = [resolution
                  ] + ([low_res_resolution] if low_res_resolution else [])
    images = diffusion_preprocessing.cascade_example(
        example, resolutions, random_flip=random_flip,
        seed=flip_seed if random_flip else None)
    batch = {
        "x_start": images[diffusion_preprocessing.image_key(resolution)],
        "label": images[schema.LABEL], "seed": example_seed
    }
    if low_res_resolution:
      batch["low_res"] = images[diffusion_preprocessing.image_key(
          low_res_resolution)]
    if captions:
      batch[schema.CAPTION] = example[schema.CAPTION]
    return batch

  return (examples.enumerate().map(
      prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(
          batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
