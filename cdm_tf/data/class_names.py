"""Class synsets and names, for prompts, record fields and reports.

ImageNet's table ships with keras-hub (no download). Other datasets describe
their classes in a ``classes.json`` next to their records (written by
``tools/prepare_data.py``): a list, in label order, of
``{"synset": ..., "name": ...}``.
"""

import dataclasses
import os

import tensorflow as tf

from cdm_tf import files

CLASSES_FILE = "classes.json"
IMAGENET_NUM_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class ClassInfo:
  synset: str
  name: str


def imagenet_classes():
  """The 1000 ImageNet-1k classes in label order (0-based)."""
  # keras-hub's public API gives names only; its table also has synsets.
  # Imported here: keras-hub takes seconds to import.
  from keras_hub.src.utils.imagenet import imagenet_utils  # pylint: disable=g-import-not-at-top
  table = imagenet_utils.IMAGENET_NAMES
  if len(table) != IMAGENET_NUM_CLASSES:
    raise RuntimeError(f"keras-hub's ImageNet table has {len(table)} classes")
  return [
      ClassInfo(synset=table[i][0], name=table[i][1].replace("_", " "))
      for i in range(IMAGENET_NUM_CLASSES)
  ]


def write_classes_file(directory, classes):
  files.atomic_write_json(os.path.join(directory, CLASSES_FILE),
                          [dataclasses.asdict(c) for c in classes])


def load_classes(data_dir=None):
  """Classes of the dataset in ``data_dir``: its classes.json, else ImageNet."""
  if data_dir:
    if not tf.io.gfile.isdir(data_dir):
      raise FileNotFoundError(f"{data_dir}: no such data directory")
    path = os.path.join(data_dir, CLASSES_FILE)
    if tf.io.gfile.exists(path):
      entries = files.read_json(path)
      try:
        return [
            ClassInfo(synset=str(e["synset"]), name=str(e["name"]))
            for e in entries
        ]
      except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected a list of {{'synset', 'name'}} "
                         f"entries ({e})") from e
  return imagenet_classes()
