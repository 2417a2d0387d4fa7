"""Synthetic template captions for a labelled image set (image-text pairs).

A text-to-image stage is pretrained on captioned images before it is
fine-tuned on class names (Azizi et al. start from Imagen). No captioned
image set ships in a package registry, so the CPU-sized pipeline derives
one from the embedded real data: each caption is a TEMPLATE filled with the
image's class name and words computed from its pixels. These captions are
synthetic; they say nothing a human annotator saw, only:

* tone: the mean brightness of the object's pixels (dark, grey, light grey,
  white);
* size: the share of the frame the object covers (small, large);
* texture: the spread of the object's brightness (plain, patterned);
* shape: the aspect ratio of its bounding box (tall, wide).

Thresholds are set at roughly the 20th / 80th percentiles of Fashion-MNIST's
training images (as 32x32 records), so every word occurs. A template is
picked per example from a digest of its file name (stable across runs),
e.g. "a photo of a grey ankle boot", "a small dark sandal on a black
background", "a patterned white bag".

``write_captioned_copy`` copies a converted data set (TPU-schema shards with
manifests and classes.json) and adds each record's caption as
``schema.TPU_CAPTION``; labels and images stay as they are.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from cdm_tf.data import class_names
from cdm_tf.data import image_decoding
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest

CAPTION_VERSION = 1
# Pixels brighter than this belong to the object (the background is black).
FOREGROUND_THRESHOLD = 30
_TONES = ((125.0, "dark"), (165.0, "grey"), (195.0, "light grey"),
          (float("inf"), "white"))
# Shares of a 32x32 record (28x28 Fashion-MNIST padded with black).
SMALL_COVER, LARGE_COVER = 0.23, 0.45
PLAIN_SPREAD, PATTERNED_SPREAD = 38.0, 52.0
TALL_ASPECT, WIDE_ASPECT = 0.55, 1.6
TEMPLATES = (
    "a photo of {a} {tone} {name}",
    "{a} {size} {tone} {name} on a black background",
    "{tone} {name}",
    "{a} {texture} {tone} {name}",
    "a grayscale picture of {a} {shape} {name}",
    "{a} {name}",
)


def describe_image(image):
  """Words for one uint8 [H, W, C] image: tone, size, texture, shape ("" if
  the statistic is unremarkable)."""
  gray = np.asarray(image, np.float32).mean(axis=-1)
  foreground = gray > FOREGROUND_THRESHOLD
  if not foreground.any():
    return {"tone": "black", "size": "", "texture": "", "shape": ""}
  values = gray[foreground]
  tone = next(word for limit, word in _TONES if values.mean() < limit)
  cover = foreground.mean()
  size = ("small"
          if cover < SMALL_COVER else "large" if cover > LARGE_COVER else "")
  spread = values.std()
  texture = ("plain" if spread < PLAIN_SPREAD else
             "patterned" if spread > PATTERNED_SPREAD else "")
  height = foreground.any(axis=1).sum()
  width = foreground.any(axis=0).sum()
  aspect = width / max(height, 1)
  shape = ("tall"
           if aspect < TALL_ASPECT else "wide" if aspect > WIDE_ASPECT else "")
  return {"tone": tone, "size": size, "texture": texture, "shape": shape}


def template_caption(image, name, key):
  """The caption of one image of class ``name``; ``key`` (any string, e.g.
  the file name) picks the template, so captions are stable."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  template = TEMPLATES[digest[0] % len(TEMPLATES)]
  words = describe_image(image)
  # "{a}" is filled last: the article depends on the word after it.
  text = template.format(a="{a}", name=name, **words)
  text = " ".join(text.split())
  parts = text.split("{a} ")
  for i in range(1, len(parts)):
    article = "an" if parts[i][:1].lower() in "aeiou" else "a"
    parts[i] = f"{article} {parts[i]}"
  return "".join(parts)


def _with_caption(serialized, caption):
  example = tf.train.Example.FromString(serialized)
  example.features.feature[schema.TPU_CAPTION].bytes_list.value[:] = [
      caption.encode("utf-8")
  ]
  return example.SerializeToString()


def _records(path):
  """(raw record, decoded image, 0-based label, file name) of one shard."""
  features = {
      schema.TPU_IMAGE: tf.io.FixedLenFeature([], tf.string),
      schema.TPU_LABEL: tf.io.FixedLenFeature([], tf.int64),
      schema.TPU_FILENAME: tf.io.FixedLenFeature([], tf.string,
                                                 default_value=""),
  }

  def parse(raw):
    parsed = tf.io.parse_single_example(raw, features)
    return (raw, image_decoding.decode_rgb(parsed[schema.TPU_IMAGE]),
            parsed[schema.TPU_LABEL] - schema.TPU_LABEL_OFFSET,
            parsed[schema.TPU_FILENAME])

  return tf.data.TFRecordDataset(path).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator()


def write_captioned_copy(source_dir, output_dir, names, caption_fn=None,
                         print_fn=print):
  """Copies every split of ``source_dir`` to ``output_dir`` with captions.

  Args:
    source_dir: a converted data set (shards, manifest-<split>.json and
      classes.json), e.g. ``data/fashion_mnist``.
    output_dir: where the captioned copy goes (same shard names).
    names: the class names that fill the templates, in label order (e.g.
      ``cdm_tf.text.class_prompts.dataset_prompt_names(source_dir)``).
    caption_fn: ``fn(image, name, key) -> str``; ``template_caption`` by
      default.
    print_fn: where progress lines go.

  Returns:
    {split: Manifest} of the written splits.
  """
  caption_fn = caption_fn or template_caption
  classes = class_names.load_classes(source_dir)
  if len(names) != len(classes):
    raise ValueError(f"{len(names)} names for {len(classes)} classes")
  splits = split_manifest.splits(source_dir)
  if not splits:
    raise FileNotFoundError(f"{source_dir} has no manifest-<split>.json")
  manifests = {}
  for split in splits:
    source = split_manifest.read(source_dir, split)
    infos = []
    for path in imagenet_reader.list_files(source_dir, split):
      target = os.path.join(output_dir, os.path.basename(path))
      with shard_writer.ShardWriter(target, len(classes),
                                    overwrite=True) as writer:
        for index, (raw, image, label, file_name) in enumerate(_records(path)):
          key = file_name.decode() or f"{os.path.basename(path)}:{index}"
          writer.write(_with_caption(raw, caption_fn(image, names[label], key)),
                       int(label))
      infos.append(writer.info)
    manifests[split] = split_manifest.write(
        output_dir, split, infos, len(classes), source.image_format,
        settings=dict(
            source.settings,
            captions=("synthetic templates: class name + image statistics"),
            caption_version=CAPTION_VERSION))
    print_fn(f"{split}: {manifests[split].num_examples} captioned images in "
             f"{len(infos)} shards")
  class_names.write_classes_file(output_dir, classes)
  return manifests
