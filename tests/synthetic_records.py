"""Small synthetic sets in the generator's format, made from real records.

Real Fashion-MNIST images relabelled as generated: each class gets
``per_class`` examples with provenance class indices 0..per_class-1 (real
images of the class reused in turn), and pixel (0, 0) of the red channel
holds the class index, so a test can tell which examples a reader kept.
"""

import os

import numpy as np

from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest


def real_images_by_class(real_data_dir, split="train"):
  """{label: [uint8 images]} of a real split, in file order."""
  by_class = {}
  for element in imagenet_reader.read_dataset(
      real_data_dir, split=split,
      num_classes=len(class_names.load_classes(real_data_dir)),
      shuffle=False).as_numpy_iterator():
    by_class.setdefault(int(element[schema.LABEL]),
                        []).append(element[schema.IMAGE])
  return by_class


def write(real_data_dir, out_dir, per_class, split="train", num_shards=2):
  """Writes the set and its manifest into ``out_dir``; returns the manifest.
  """
  classes = class_names.load_classes(real_data_dir)
  by_class = real_images_by_class(real_data_dir)
  writers = [
      shard_writer.ShardWriter(
          os.path.join(out_dir,
                       shard_writer.shard_file_name(split, shard, num_shards)),
          num_classes=len(classes)) for shard in range(num_shards)
  ]
  position = 0
  for label in range(len(classes)):
    for index in range(per_class):
      image = np.array(by_class[label][index % len(by_class[label])])
      image[0, 0, 0] = index
      writers[position % num_shards].write(
          shard_writer.encode_example(
              image, label, classes, image_format="png",
              provenance=shard_writer.Provenance("test-relabelled-real",
                                                 f"{label}-{index}", index,
                                                 (label, index))), label)
      position += 1
  for writer in writers:
    writer.close()
  return split_manifest.write(
      out_dir, split, [w.info for w in writers], len(classes), "png",
      settings={"source": "real images relabelled as synthetic"})
