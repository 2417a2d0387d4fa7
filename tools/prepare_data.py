"""Converts Fashion-MNIST, the embedded real dataset, to ImageNet TFRecords.

Reads the IDX files from --source_dir, else Debian's dataset-fashion-mnist
path (/usr/share/datasets/fashion-mnist), else the Keras download; pads the
28x28 images to --pad_to (32 for the demo cascade: 16x16 base, 16->32
super-resolution) and writes train (60,000) and validation (10,000) shards in
the TPU tool's schema, with manifests and classes.json:

  python tools/prepare_data.py --output_dir=data/fashion_mnist
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf.data_preparation import fashion_mnist

flags.DEFINE_string("output_dir", None, "Directory for the TFRecords.",
                    required=True)
flags.DEFINE_string("source_dir", None,
                    "Directory with the Fashion-MNIST *-ubyte.gz files.")
flags.DEFINE_integer("pad_to", 32, "Output image size (>= 28, zero border).")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Encoding.")
flags.DEFINE_integer("seed", 0, "Seed of the order the examples are written.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  manifests = fashion_mnist.convert(FLAGS.output_dir,
                                    source_dir=FLAGS.source_dir,
                                    pad_to=FLAGS.pad_to,
                                    image_format=FLAGS.image_format,
                                    seed=FLAGS.seed)
  for split, manifest in manifests.items():
    print(f"{split}: {manifest.num_examples} images in {manifest.num_shards} "
          f"shards; per class {list(manifest.class_counts)}")
  print(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
  command_line.run(main)
