"""Text for training a text-conditioned stage: captions or class prompts.

The text encoder is frozen (Imagen; Azizi et al. keep it frozen while
fine-tuning): it runs outside the training step and its variables are never
handed to the optimizer. Where text is encoded, and why:

* Class prompts (fine-tuning on a labelled set, e.g. ImageNet with each
  class's name as its prompt): the C prompts are encoded once, cached on
  disk (``cdm_tf.text.embedding_cache``, keyed by encoder and prompts) and
  attached to the model as an embedding table
  (``DiffusionModel.set_class_prompts``); every step gathers its labels'
  rows on the device. Batches stay image + label, and 1000 prompts cost one
  encoder pass per run instead of one per example and step.
* Captions (pretraining on image-text pairs): every caption is different, so
  each batch's captions are encoded on the host, in the input pipeline,
  after batching (``encode_captions``, a ``tf.py_function`` calling the
  encoder): the step receives ``text_pooled`` / ``text_tokens`` /
  ``text_mask``. This keeps the step free of string ops (TPUs have none).
  At Imagen's scale captions would be encoded offline once; the reader
  could then carry the embeddings instead.
"""

import dataclasses
from typing import Optional

import gin
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import schema
from cdm_tf.text import class_prompts as class_prompts_lib
from cdm_tf.text import conditioning
from cdm_tf.text import embedding_cache


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ClassPrompts:
  """How class labels become prompts when training on a labelled set.

  Attributes:
    classes_dir: directory with the data set's classes.json (e.g. the
      training data); None: ImageNet's 1000 classes.
    names_file: curated names (e.g. CLIP's) in label order, instead of the
      names derived from the class table (``class_prompts.load_names_file``).
    template: "{}" (Azizi et al.: the class name itself) or e.g.
      "a photo of a {}".
    cache_dir: where encoded prompts are cached; None: the run's
      ``<model_dir>/text_embeddings``.
  """
  classes_dir: Optional[str] = None
  names_file: Optional[str] = None
  template: str = class_prompts_lib.DEFAULT_TEMPLATE
  cache_dir: Optional[str] = None

  def prompts(self):
    """One prompt per class, in label order."""
    classes = class_names.load_classes(self.classes_dir)
    if self.names_file:
      names = class_prompts_lib.load_names_file(self.names_file, len(classes))
    else:
      names = class_prompts_lib.prompt_names(classes)
    return class_prompts_lib.class_prompts(names, self.template)


def encode_prompts(encoder, prompts, cache_dir=None):
  """``TextEmbeddings`` of ``prompts``, through the cache if one is given."""
  if cache_dir:
    return embedding_cache.encode(cache_dir, encoder, prompts)
  return encoder.encode(prompts)


def has_captions(dataset):
  return schema.CAPTION in dataset.element_spec


def encode_captions(dataset, encoder):
  """Replaces each batch's ``schema.CAPTION`` strings [B] by their text
  embeddings (``conditioning.TEXT_KEYS``), encoded on the host.

  The batch size must be static (batch with ``drop_remainder=True``).
  """
  spec = dataset.element_spec[schema.CAPTION]
  batch_size = spec.shape[0]
  length, width = encoder.max_length, encoder.embed_dim

  def encode(captions):
    embeddings = encoder.encode(
        [c.decode("utf-8") for c in captions.numpy().tolist()])
    return embeddings.pooled, embeddings.tokens, embeddings.mask

  def add_text(batch):
    batch = dict(batch)
    captions = batch.pop(schema.CAPTION)
    pooled, tokens, mask = tf.py_function(encode, [captions],
                                          [tf.float32, tf.float32, tf.bool])
    pooled.set_shape([batch_size, width])
    tokens.set_shape([batch_size, length, width])
    mask.set_shape([batch_size, length])
    batch.update({
        conditioning.TEXT_POOLED: pooled, conditioning.TEXT_TOKENS: tokens,
        conditioning.TEXT_MASK: mask
    })
    return batch

  # Sequential: one encoder call at a time (it runs eagerly in Python).
  dataset = dataset.map(add_text).prefetch(tf.data.AUTOTUNE)
  # The encoder is a pure function of the captions: a checkpoint of the
  # iterator's position loses nothing by not saving "its state" (tf.data
  # otherwise refuses to checkpoint a pipeline with a py_function).
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return dataset.with_options(options)
