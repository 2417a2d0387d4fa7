"""Small real subsets of Fashion-MNIST, converted like the embedded data."""

import gzip
import os
import struct

import numpy as np

from cdm_tf.data_preparation import fashion_mnist


def write_idx(path, array, magic):
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *
                                                  array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_source(directory, per_class=(3, 2)):
  """IDX files holding the first per_class[0] train and per_class[1]
  validation images of each class; returns the directory."""
  os.makedirs(directory, exist_ok=True)
  for (split, (images_file,
               labels_file)), n in zip(fashion_mnist.SPLIT_FILES.items(),
                                       per_class):
    images, labels = fashion_mnist.load_split(split)
    keep = np.concatenate([
        np.nonzero(labels == c)[0][:n] for c in range(fashion_mnist.NUM_CLASSES)
    ])
    write_idx(os.path.join(directory, images_file), images[keep], 0x803)
    write_idx(os.path.join(directory, labels_file), labels[keep], 0x801)
  return directory


def prepared(directory, per_class=(3, 2)):
  """A converted subset (TPU-schema shards, manifests, classes.json)."""
  source = write_source(os.path.join(directory, "source"), per_class)
  data_dir = os.path.join(directory, "records")
  fashion_mnist.convert(data_dir, source_dir=source)
  return data_dir
