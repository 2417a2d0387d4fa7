"""Feature names of the record formats this package reads and writes.

Two formats of real ImageNet exist in the wild:

* ``tpu``: the TPU / tf-models conversion tool (``imagenet_to_gcs.py``):
  ``image/encoded`` JPEG bytes and ``image/class/label`` in 1..num_classes,
  plus synset, text, size, format and file-name fields. Synthetic data is
  written in this format so any ImageNet reader consumes it unchanged.
* ``tfds``: TFDS ``imagenet2012``: ``image`` encoded bytes and ``label`` in
  0..num_classes-1, plus ``file_name``.

Inside the package a label is always 0-based.

A split name (``train``, ``validation``) becomes part of file names
(``train-00000-of-00064``, ``manifest-train.json``); ``check_split_name``
is the one check every reader and writer applies to it.

Captioned image-text data (pretraining a text-to-image stage) uses the TPU
schema plus one feature, ``image/caption`` (UTF-8 bytes, the prompt of the
image); the class label is optional there. Readers of labelled ImageNet
ignore the extra feature.
"""

import re

FORMAT_TPU = "tpu"
FORMAT_TFDS = "tfds"
FORMATS = (FORMAT_TPU, FORMAT_TFDS)

# The TPU tool's schema.
TPU_IMAGE = "image/encoded"
TPU_LABEL = "image/class/label"  # 1-based
TPU_SYNSET = "image/class/synset"
TPU_TEXT = "image/class/text"
TPU_HEIGHT = "image/height"
TPU_WIDTH = "image/width"
TPU_CHANNELS = "image/channels"
TPU_COLORSPACE = "image/colorspace"
TPU_FORMAT = "image/format"
TPU_FILENAME = "image/filename"
TPU_LABEL_OFFSET = 1
# Ours, for image-text pairs: one UTF-8 caption per image.
TPU_CAPTION = "image/caption"

# TFDS imagenet2012.
TFDS_IMAGE = "image"
TFDS_LABEL = "label"  # 0-based
TFDS_FILE_NAME = "file_name"

# Provenance of synthetic examples (ours; ignored by other readers).
PROVENANCE_PREFIX = "cdm/"
GENERATOR_CONFIG_ID = "cdm/generator_config_id"  # bytes
EXAMPLE_ID = "cdm/example_id"  # bytes, stable across workers and restarts
CLASS_INDEX = "cdm/class_index"  # int64, index of the example within its class
SEED = "cdm/seed"  # int64 list [2], the per-example sampler seed
STAGE_RESOLUTIONS = "cdm/stage_resolutions"  # int64 list, one per stage
GUIDANCE = "cdm/guidance"  # float list, per stage
SAMPLER = "cdm/sampler"  # bytes list, per stage, e.g. b"ddpm-1000"
LOGVAR_COEFF = "cdm/logvar_coeff"  # float list, per stage
NOISE_AUGMENTATION = "cdm/noise_augmentation"  # float list, per SR stage

# Keys of the elements the readers yield (dicts of tensors).
IMAGE = "image"  # uint8 [H, W, 3]
LABEL = "label"  # int32, 0-based
SOURCE = "source"  # string: the TFRecord file the example came from
CAPTION = "caption"  # string: the image's caption (captioned data only)

# Letters, digits, "_", "-" and ".", but no separator and not "." or "..":
# a split name must not lead a file name out of its directory.
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_split_name(split):
  """Returns ``split`` if it is a plain name, else raises ValueError."""
  if (not isinstance(split, str) or not _SPLIT_NAME_RE.match(split) or
      ".." in split or split == "."):
    raise ValueError(
        f"invalid split name {split!r}: use letters, digits, _, - and . "
        "only (no path separators or ..), e.g. train or validation")
  return split
