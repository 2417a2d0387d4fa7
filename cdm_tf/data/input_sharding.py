"""Each input pipeline's share of the files, and each example's seed.

Under ``tf.distribute`` (``distribute_datasets_from_function``) every input
pipeline builds its own dataset from a ``tf.distribute.InputContext``: it
reads a disjoint share of the files (``shard_files``), and its examples get
stateless seeds from (base seed, pipeline id, example index), so the
randomness of an example does not depend on how the global batch is split
across replicas.

Two seed layouts exist, one per trainer, and stay as they are: changing
either would change every crop, flip and noise draw of that trainer at the
same seed.

* ``strided_example_seed`` (diffusion training): ``[base, pipeline *
  2**40 + index]``, the seed the diffusion model draws its noise and
  timesteps from.
* ``folded_example_seed`` (classifier training):
  ``stateless_fold_in([base, pipeline], index)``.
"""

import tensorflow as tf

# Examples one diffusion input pipeline can number before its seeds would
# meet the next pipeline's.
PIPELINE_STRIDE = 2**40


def pipeline_id(input_context):
  """The input pipeline's id; 0 without an input context."""
  return input_context.input_pipeline_id if input_context else 0


def shard_files(files, input_context, what="files"):
  """This input pipeline's share of ``files``: every n-th one, starting at
  its id (all of them without an input context).

  Args:
    files: the file paths, in a fixed order (the same on every pipeline).
    input_context: a ``tf.distribute.InputContext``, or None.
    what: what the files are, for the error message.

  Returns:
    List of paths.

  Raises:
    ValueError: fewer files than input pipelines (a pipeline would get
      none).
  """
  files = list(files)
  if input_context is None:
    return files
  pipelines = input_context.num_input_pipelines
  if len(files) < pipelines:
    raise ValueError(f"{len(files)} {what} cannot be sharded across "
                     f"{pipelines} input pipelines: need at least one per "
                     "pipeline")
  return files[input_context.input_pipeline_id::pipelines]


def strided_example_seed(base_seed, pipeline, index):
  """The diffusion trainer's seed int64 [2] of example ``index`` of input
  pipeline ``pipeline``: ``[base_seed, pipeline * PIPELINE_STRIDE +
  index]``."""
  return tf.stack([
      tf.cast(base_seed, tf.int64),
      tf.cast(pipeline, tf.int64) * PIPELINE_STRIDE + tf.cast(index, tf.int64)
  ])


def folded_example_seed(base_seed, pipeline, index):
  """The classifier trainer's stateless seed [2] of example ``index`` of
  input pipeline ``pipeline``: ``index`` folded into ``[base_seed,
  pipeline]``."""
  return tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(base_seed, tf.int64),
                tf.cast(pipeline, tf.int64)]), index)
