"""Summarizes a dataset split and draws what the cascade will train on.

Prints format, shard count and images per class (a cached one-pass scan),
and writes <output_dir>/<split>_contact_sheet.png: one row per class, each
example at every cascade resolution (low to high), plus summary.json.

  python tools/inspect_data.py --data_dir=data/fashion_mnist --split=train \
      --resolutions=16,32 --output_dir=runs/demo
"""

import json
import os

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags

from cdm_tf import files
from cdm_tf.data import contact_sheet
from cdm_tf.data import inspection

flags.DEFINE_string("data_dir", None, "TFRecord directory.", required=True)
flags.DEFINE_string("split", "train", "Split to inspect.")
flags.DEFINE_list("resolutions", ["16", "32"], "Cascade resolutions.")
flags.DEFINE_integer("per_class", 4, "Examples per class on the sheet.")
flags.DEFINE_integer("max_classes", 20, "Classes on the sheet.")
flags.DEFINE_integer("cell_size", 64, "Display size of each image.")
flags.DEFINE_string("output_dir", None, "Where to write the sheet and JSON.",
                    required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  summary, rows = inspection.inspect_split(
      FLAGS.data_dir, FLAGS.split,
      inspection.parse_resolutions(FLAGS.resolutions),
      per_class=FLAGS.per_class, max_classes=FLAGS.max_classes)
  sheet_path = os.path.join(FLAGS.output_dir,
                            FLAGS.split + inspection.CONTACT_SHEET_SUFFIX)
  contact_sheet.write_png(sheet_path, contact_sheet.grid(rows, FLAGS.cell_size))
  files.atomic_write_json(
      os.path.join(FLAGS.output_dir, FLAGS.split + inspection.SUMMARY_SUFFIX),
      summary)
  for key, value in summary.items():
    print(f"{key}: {json.dumps(value)}")
  print(f"wrote {sheet_path}")


if __name__ == "__main__":
  command_line.run(main)
