"""Writes a captioned copy of a converted data set (image-text pairs).

The captions are SYNTHETIC TEMPLATES, not annotations: the class name plus
words computed from the pixels (tone, size, texture, shape), e.g. "a photo
of a grey ankle boot" (see cdm_tf/data_preparation/captions.py). They let the
text-to-image pretraining stage of the CPU pipeline run on real images:

  python tools/prepare_captions.py --data_dir=data/fashion_mnist \\
      --output_dir=data/fashion_mnist_captions
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf.data_preparation import captions
from cdm_tf.text import class_prompts

flags.DEFINE_string(
    "data_dir", None, "A converted data set (shards, "
    "manifests, classes.json), e.g. from prepare_data.py.", required=True)
flags.DEFINE_string("output_dir", None, "Where the captioned copy goes.",
                    required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  names = class_prompts.dataset_prompt_names(FLAGS.data_dir)
  captions.write_captioned_copy(FLAGS.data_dir, FLAGS.output_dir, names)
  print(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
  command_line.run(main)
