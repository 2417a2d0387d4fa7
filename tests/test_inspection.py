"""Dataset inspection and contact sheets on real photos (TFDS format)."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from cdm_tf.data import contact_sheet
from cdm_tf.data import inspection
from cdm_tf.data import schema
from tests import real_photo_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_grid_places_cells_at_the_display_size():
  red = np.zeros((2, 2, 3), np.uint8)
  red[..., 0] = 255
  blue = np.zeros((4, 4, 3), np.uint8)
  blue[..., 2] = 255
  sheet = contact_sheet.grid([[red, blue], [blue]], cell_size=8, gap=1)
  assert sheet.shape == (2 * 9 + 1, 2 * 9 + 1, 3)
  assert (sheet[1:9, 1:9] == [255, 0, 0]).all()
  assert (sheet[1:9, 10:18] == [0, 0, 255]).all()
  assert (sheet[10:18, 10:18] == contact_sheet.BACKGROUND).all()  # empty cell
  assert (sheet[0] == contact_sheet.BACKGROUND).all()


def test_write_png_round_trips(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
  path = str(tmp_path / "sheet.png")
  contact_sheet.write_png(path, image)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


def _photo_set(tmp_path):
  photos = real_photo_records.load_photos(max_side=96)
  directory = str(tmp_path / "photos")
  real_photo_records.write_photo_shards(directory, schema.FORMAT_TFDS, photos)
  return directory, photos


def test_inspect_split_counts_classes_and_shows_every_resolution(tmp_path):
  directory, photos = _photo_set(tmp_path)
  summary, rows = inspection.inspect_split(directory, "train", (16, 32),
                                           per_class=2, max_classes=1000)
  labels = [p.label for p in photos]
  assert summary["format"] == schema.FORMAT_TFDS
  assert summary["num_images"] == 20
  assert summary["class_counts"] == list(np.bincount(labels, minlength=1000))
  # One row per class present; an example contributes a 16 and a 32 image.
  assert len(rows) == len(set(labels))
  for row, label in zip(rows, sorted(set(labels))):
    assert len(row) == 2 * min(2, labels.count(label))
    assert [image.shape for image in row[:2]] == [(16, 16, 3), (32, 32, 3)]


def test_inspect_tool_writes_sheet_and_summary(tmp_path):
  directory, _ = _photo_set(tmp_path)
  out = tmp_path / "out"
  result = subprocess.run([
      sys.executable,
      os.path.join(ROOT, "tools", "inspect_data.py"), f"--data_dir={directory}",
      "--resolutions=8,32", "--per_class=1", f"--output_dir={out}"
  ], capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "num_images: 20" in result.stdout
  sheet = np.asarray(Image.open(out / "train_contact_sheet.png"))
  assert sheet.shape[2] == 3 and sheet.shape[0] > 64
  assert (out / "train_summary.json").exists()
