"""Image grids ("contact sheets") written as PNG, for people to look at.

Used for the data a cascade trains on (tools/inspect_data.py) and for the
samples it generates: one row per class, images of any size shown at one
display size (nearest-neighbour, so small images stay crisp).
"""

import numpy as np
import tensorflow as tf

from cdm_tf import files

BACKGROUND = 255  # white gaps between cells


def grid(rows, cell_size, gap=2):
  """Lays out rows of uint8 [h, w, 3] images as one uint8 image.

  Args:
    rows: list of lists of images (rows may differ in length; missing cells
      stay background).
    cell_size: display side length of every cell.
    gap: pixels between cells.
  """
  num_cols = max((len(r) for r in rows), default=0)
  height = len(rows) * (cell_size + gap) + gap
  width = num_cols * (cell_size + gap) + gap
  sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      cell = tf.image.resize(tf.convert_to_tensor(image), (cell_size,) * 2,
                             method="nearest").numpy().astype(np.uint8)
      top, left = gap + i * (cell_size + gap), gap + j * (cell_size + gap)
      sheet[top:top + cell_size, left:left + cell_size] = cell
  return sheet


def write_png(path, image):
  """Writes a uint8 [H, W, 3] image as PNG (atomically)."""
  files.atomic_write_bytes(path, tf.io.encode_png(image).numpy())
