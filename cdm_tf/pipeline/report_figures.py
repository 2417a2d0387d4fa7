"""The report's PNGs: samples next to real images, accuracy, loss curves.

Drawn on a ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no
global backend state) and written atomically, like the other plots of the
package.

The sample grid is laid out in pixels, not by matplotlib: its size is known
in advance (``grid_size``) and every image cell holds exactly the image's
pixels, upscaled by an integer factor with nearest neighbour so that small
(32 x 32) samples are seen as they are, not blurred. Matplotlib only draws
the text (class names, headers) on the blank canvas before the cells are
pasted in.
"""

import math
import textwrap

import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.data import contact_sheet
from cdm_tf.data import diffusion_preprocessing

DPI = 100
LABEL_WIDTH = 200  # class names, left of the rows
HEADER_HEIGHT = 28  # "generated" / "real" above the two blocks
GAP = 2  # between cells
SEPARATOR_WIDTH = 18  # between the generated and the real block
MIN_CELL = 64  # smaller images are upscaled to at least this
MAX_CELL = 128  # larger images are downscaled (anti-aliased) to this
BACKGROUND = 255
PLACEHOLDER = 224  # a cell without an image (class with too few)
SEPARATOR = 96
MAX_NAME_CHARACTERS = 26
MAX_COLUMNS = 3


def cell_size(side):
  """Display side of a ``side`` image: an integer multiple of small ones,
  capped for large ones."""
  if side >= MIN_CELL:
    return min(side, MAX_CELL)
  return side * math.ceil(MIN_CELL / side)


def grid_size(num_rows, per_class, side):
  """(height, width) in pixels of ``sample_grid``'s image."""
  cell = cell_size(side)
  block = per_class * (cell + GAP) + GAP
  return (HEADER_HEIGHT + num_rows * (cell + GAP) + GAP,
          LABEL_WIDTH + 2 * block + SEPARATOR_WIDTH)


def display_image(image, side, cell):
  """A uint8 image as a ``cell`` x ``cell`` grid cell.

  Real images are brought to the generated ``side`` the way diffusion
  training data is (centre square crop, anti-aliased bicubic), so both
  blocks show what the model learned from and what it made; then
  nearest-neighbour upscaling (or an anti-aliased downscale) to the cell.
  """
  image = diffusion_preprocessing.center_crop_square(image)
  target = min(side, cell)
  if image.shape[0] != target:
    image = tf.cast(diffusion_preprocessing.resize_square(image, target),
                    tf.uint8)
  if cell != target:
    image = tf.image.resize(image, (cell, cell), method="nearest")
  return np.asarray(image, np.uint8)


def _text_canvas(height, width, texts):
  """A white uint8 [height, width, 3] canvas with ``texts`` drawn on it:
  (x, y, text, horizontal alignment, font size), in pixels from the top
  left."""
  # Figure + Agg canvas, not pyplot: no global backend or figure state.
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(width / DPI, height / DPI), dpi=DPI,
                      facecolor="white")
  canvas = backend_agg.FigureCanvasAgg(fig)
  for x, y, text, align, size in texts:
    fig.text(x / width, 1 - y / height, text, ha=align, va="center",
             fontsize=size)
  canvas.draw()
  pixels = np.asarray(canvas.buffer_rgba())[..., :3]
  # The canvas may round the size by a pixel: pad or crop to the layout.
  out = np.full((height, width, 3), BACKGROUND, np.uint8)
  h, w = min(height, pixels.shape[0]), min(width, pixels.shape[1])
  out[:h, :w] = pixels[:h, :w]
  return out


def _short(name):
  if len(name) <= MAX_NAME_CHARACTERS:
    return name
  return name[:MAX_NAME_CHARACTERS - 1] + "\N{HORIZONTAL ELLIPSIS}"


def sample_grid(path, names, generated, real, per_class, side, generated_title,
                real_title):
  """Writes one row per class: generated images | real images.

  Args:
    path: output PNG.
    names: class name of each row.
    generated: per row, a list of uint8 generated images (``side`` square).
    real: per row, a list of uint8 real images (any size).
    per_class: columns of each block; missing images are grey cells.
    side: the generated images' side.
    generated_title, real_title: headers of the two blocks.

  Returns:
    (height, width) of the written image.
  """
  cell = cell_size(side)
  height, width = grid_size(len(names), per_class, side)
  block = per_class * (cell + GAP) + GAP
  real_left = LABEL_WIDTH + block + SEPARATOR_WIDTH
  texts = [(LABEL_WIDTH + block / 2, HEADER_HEIGHT / 2, generated_title,
            "center", 9),
           (real_left + block / 2, HEADER_HEIGHT / 2, real_title, "center", 9)]
  for row, name in enumerate(names):
    texts.append(
        (LABEL_WIDTH - 8, HEADER_HEIGHT + GAP + row * (cell + GAP) + cell / 2,
         _short(name), "right", 9))
  sheet = _text_canvas(height, width, texts)
  middle = LABEL_WIDTH + block + SEPARATOR_WIDTH // 2
  sheet[HEADER_HEIGHT:, middle - 1:middle + 1] = SEPARATOR
  for row in range(len(names)):
    top = HEADER_HEIGHT + GAP + row * (cell + GAP)
    for left0, images in ((LABEL_WIDTH, generated[row]), (real_left,
                                                          real[row])):
      for column in range(per_class):
        left = left0 + GAP + column * (cell + GAP)
        sheet[top:top + cell,
              left:left + cell] = (display_image(images[column], side, cell)
                                   if column < len(images) else PLACEHOLDER)
  contact_sheet.write_png(path, sheet)
  return height, width


def new_figure(width, height):
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(width, height), dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def accuracy_chart(path, labels, top1, is_cas, split):
  """Bar chart of top-1 accuracy (%) per classifier run.

  Args:
    path: output PNG.
    labels: run labels.
    top1: top-1 accuracy in [0, 1] per run, None for a run without one.
    is_cas: per run, whether it is the CAS (drawn in another colour).
    split: the real split evaluated on, for the axis label.
  """
  fig = new_figure(max(4.0, 1.4 * len(labels) + 1.5), 3.8)
  axes = fig.add_subplot()
  positions = np.arange(len(labels))
  for x, value, cas in zip(positions, top1, is_cas):
    if value is None:
      axes.text(x, 1, "not run", ha="center", va="bottom", fontsize=8,
                color="gray")
      continue
    axes.bar(x, 100 * value, width=0.6,
             color="tab:orange" if cas else "tab:blue")
    axes.text(x, 100 * value + 1, f"{100 * value:.1f}", ha="center",
              va="bottom", fontsize=8)
  axes.set_xticks(positions)
  axes.set_xticklabels([textwrap.fill(label, 16) for label in labels],
                       fontsize=8)
  axes.set_xlim(-0.6, len(labels) - 0.4)
  axes.set_ylim(0, 105)
  axes.set_ylabel(f"top-1 % on real {split}")
  axes.grid(axis="y", alpha=0.3)
  axes.set_title(
      "classifier top-1 accuracy (orange: CAS, trained on "
      "synthetic only)", fontsize=9)
  files.atomic_write_figure(path, fig)


def smooth(values):
  """Debiased exponential moving average over about 1/20 of the points
  (none for fewer than 40): trends of noisy curves, raw values kept."""
  values = np.asarray(values, np.float64)
  span = len(values) // 20
  if span < 2:
    return values
  beta = 1.0 - 1.0 / span
  out = np.empty_like(values)
  average = weight = 0.0
  for i, value in enumerate(values):
    average = beta * average + (1 - beta) * value
    weight = beta * weight + (1 - beta)
    out[i] = average / weight
  return out


def _curve(axes, scalars, label, color):
  # Markers while there are few points: a run stopped after one logged
  # step still shows.
  marker = "o" if len(scalars) <= 50 else None
  axes.plot(scalars.steps, scalars.values, color=color, alpha=0.25,
            linewidth=0.8)
  axes.plot(scalars.steps, smooth(scalars.values), color=color, linewidth=1.5,
            marker=marker, markersize=3, label=label)


def _log_if_wide(axes, curves):
  values = np.concatenate([c.values for c in curves])
  if values.size and np.all(values > 0) and values.max() > 10 * values.min():
    axes.set_yscale("log")


def loss_curves(path, panels):
  """One panel per entry of ``panels``: (title, [(label, Scalars or None,
  status text)]); raw values faint, smoothed on top; curves without data
  are named with their status instead."""
  columns = min(MAX_COLUMNS, len(panels))
  rows = math.ceil(len(panels) / columns)
  fig = new_figure(5.0 * columns, 3.6 * rows)
  colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
            "tab:brown")
  for k, (title, curves) in enumerate(panels):
    axes = fig.add_subplot(rows, columns, k + 1)
    drawn, missing = [], []
    for i, (label, scalars, status) in enumerate(curves):
      if scalars is not None and len(scalars):
        _curve(axes, scalars, label, colors[i % len(colors)])
        drawn.append(scalars)
      else:
        missing.append(f"{label}: {status}")
    if drawn:
      _log_if_wide(axes, drawn)
      for text in missing:  # a legend entry without a line
        axes.plot([], [], linestyle="none", label=text)
      if len(curves) > 1:
        axes.legend(fontsize=7)
    else:
      axes.text(0.5, 0.5, "\n".join(missing), transform=axes.transAxes,
                ha="center", va="center", fontsize=9, color="gray")
      axes.set_xticks([])
      axes.set_yticks([])
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("step")
    axes.set_ylabel("train/loss")
    axes.grid(alpha=0.3)
  files.atomic_write_figure(path, fig)
