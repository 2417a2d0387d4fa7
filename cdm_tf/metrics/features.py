"""Feature networks for sample-quality metrics, and features of a dataset.

Every metric here (FID, KID, precision/recall, Inception Score) is computed
from the features or logits of some network, and its value means nothing
without knowing which. A ``FeatureExtractor`` therefore carries a ``name``
that every report prints next to the metric, e.g. "FID (Inception-v3 pool3)"
or "FID (Fashion-MNIST classifier features: runs/clf)", and a
``fingerprint`` (``cdm_tf.fingerprints`` of its weights and settings) that
keys cached statistics.

Two kinds exist:

* ``fid_inception.FidInception``: the FID Inception-v3 (2048-d pool3, no
  logits), the standard for ImageNet.
* ``ClassifierFeatures``: any Keras classifier, e.g. one trained by
  ``cdm_tf.classifiers`` on the embedded Fashion-MNIST, for which the
  ImageNet Inception is meaningless: features from a named layer or the
  penultimate layer, plus its logits (for the Inception Score).

An extractor maps one uint8 image of any size to a fixed-size input
(``prepare``, runs inside ``tf.data``) and a batch of those to float32
features and logits (``compute``). ``extract`` runs it over a dataset of
reader elements (``imagenet_reader.read_dataset`` or
``synthetic_set.reader.read``), in order, over the first N images.
"""

import abc
import dataclasses

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from cdm_tf import fingerprints
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import schema

DEFAULT_BATCH_SIZE = 50


@dataclasses.dataclass(frozen=True)
class ExtractedFeatures:
  """Features (and logits) of the first ``count`` images of a dataset.

  Attributes:
    features: float32 [count, D].
    logits: float32 [count, C], or None when the network has no logits.
    network: the extractor's ``name`` (for report labels).
  """
  features: np.ndarray
  logits: np.ndarray | None
  network: str

  @property
  def count(self):
    return int(self.features.shape[0])

  def first(self, count):
    """The first ``count`` images' features (a view, no copy)."""
    if count > self.count:
      raise ValueError(f"asked for the first {count} images' features, "
                       f"have {self.count}")
    return ExtractedFeatures(
        self.features[:count],
        None if self.logits is None else self.logits[:count], self.network)


class FeatureExtractor(abc.ABC):
  """A network whose features (and logits) the metrics are computed on."""

  @property
  @abc.abstractmethod
  def name(self):
    """What reports print, e.g. "Inception-v3 pool3"."""

  @property
  @abc.abstractmethod
  def fingerprint(self):
    """Hex string that changes when the network or its inputs change."""

  @property
  def has_logits(self):
    return False

  @abc.abstractmethod
  def prepare(self, image):
    """One image, uint8 [H, W, 3] of any size -> the network's input.

    Pure TensorFlow, usable in ``tf.data.Dataset.map``; all outputs of one
    extractor have the same shape so they can be batched.
    """

  @abc.abstractmethod
  def compute(self, prepared):
    """A batch of ``prepare`` outputs -> (features float32 [B, D], logits
    float32 [B, C] or None)."""

  def __call__(self, images):
    """Features and logits of a batch of uint8 images [B, H, W, 3].

    Returns:
      (features, logits) as float32 numpy arrays; logits None without them.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
      raise ValueError(f"expected images [B, H, W, 3], got {images.shape}")
    prepared = tf.map_fn(self.prepare, images, fn_output_signature=tf.float32)
    features, logits = self.compute(prepared)
    return (np.asarray(features, np.float32),
            None if logits is None else np.asarray(logits, np.float32))


def _penultimate(model):
  """(feature tensor, logits tensor) of a functional model ending in Dense."""
  head = model.layers[-1]
  if not isinstance(head, keras.layers.Dense):
    raise ValueError(
        f"{model.name}: the last layer is a {type(head).__name__}, not a "
        "Dense head; pass feature_layer= to name the feature layer")
  return head.input, model.outputs[0]


class ClassifierFeatures(FeatureExtractor):
  """Features and logits of a Keras classifier.

  Where the features come from:

  * ``feature_layer`` names a layer of a functional (or Sequential) model:
    its output, flattened.
  * Otherwise, a functional model ending in a Dense layer: that layer's
    input (the penultimate features).
  * Otherwise, a model with a Dense ``head`` attribute and either a
    ``features(images, training)`` method or the attributes of
    ``cdm_tf.classifiers.models.ImageClassifier`` (``backbone``,
    ``pooling``, ``input_mean``, ``input_std``): the features its head
    reads. The first batch checks that ``head(features(x))`` equals
    ``model(x)``, so a change of the model's ``call`` cannot go unnoticed.

  Args:
    model: the classifier, built, taking ``preprocess`` output.
    name: what reports print, e.g. "Fashion-MNIST classifier features:
      runs/clf/export". Say which model it is: metrics on different feature
      networks are not comparable.
    feature_layer: see above.
    preprocess: one uint8 image [H, W, 3] -> the model's input; the default
      scales to [0, 1] (the input of ``ImageClassifier``) and resizes
      (bilinear, antialiased) to the model's input size when it differs.
    input_size: (height, width) of the model's input for the default
      preprocessing; None reads it from the model.
  """

  def __init__(self, model, name, feature_layer=None, preprocess=None,
               input_size=None):
    if not name:
      raise ValueError("ClassifierFeatures needs a name saying which network "
                       "the metrics are computed with")
    self._name = str(name)
    self._model = model
    self._input_size = tuple(input_size) if input_size else _input_size(model)
    self._preprocess = preprocess or self._default_preprocess
    # What else decides the features, for cache keys (a custom preprocess
    # is known by its name only: rename it when it changes).
    self._settings = (f"{name}|layer={feature_layer}|size={self._input_size}|"
                      "preprocess=" +
                      (getattr(preprocess, "__qualname__", repr(preprocess))
                       if preprocess else "default"))
    self._check_split = False
    if feature_layer is not None or _is_functional(model):
      if feature_layer is not None:
        features = model.get_layer(feature_layer).output
        if isinstance(features, (list, tuple)):
          raise ValueError(f"layer {feature_layer!r} has several outputs")
        logits = model.outputs[0]
      else:
        features, logits = _penultimate(model)
      # A single input as a tensor, not a list: the split is called with one.
      inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
      split = keras.Model(inputs, [features, logits])
      self._split = lambda x: split(x, training=False)
    elif isinstance(
        getattr(model, "head", None),
        keras.layers.Dense) and (callable(getattr(model, "features", None)) or
                                 _looks_like_image_classifier(model)):
      features_of = (model.features if callable(getattr(
          model, "features", None)) else _image_classifier_features(model))

      def split(x):
        features = features_of(x, training=False)
        return features, model.head(features)

      self._split = split
      self._check_split = True
    else:
      raise ValueError(
          f"{model.name}: cannot find its features: pass feature_layer= for "
          "a functional model, or give the model a features(images) method "
          "and a Dense head")
    self._compute = tf.function(self._features_and_logits,
                                reduce_retracing=True)
    self._fingerprint = None

  @property
  def name(self):
    return self._name

  @property
  def fingerprint(self):
    if self._fingerprint is None:
      self._fingerprint = fingerprints.of_json({
          "weights": fingerprints.of_arrays(self._model.weights),
          "settings": self._settings
      })
    return self._fingerprint

  @property
  def has_logits(self):
    return True

  def _default_preprocess(self, image):
    pixels = tf.cast(image, tf.float32) / 255.0
    if self._input_size and None not in self._input_size:
      size = tf.constant(self._input_size, tf.int32)
      pixels = tf.cond(
          tf.reduce_all(tf.shape(pixels)[:2] == size), lambda: pixels,
          lambda: tf.image.resize(pixels, size, "bilinear", antialias=True))
      pixels = tf.ensure_shape(pixels, list(self._input_size) + [3])
    return pixels

  def prepare(self, image):
    return tf.cast(self._preprocess(image), tf.float32)

  def _features_and_logits(self, prepared):
    features, logits = self._split(prepared)
    features = tf.reshape(tf.cast(features, tf.float32),
                          [tf.shape(features)[0], -1])
    return features, tf.cast(logits, tf.float32)

  def compute(self, prepared):
    features, logits = self._compute(prepared)
    if self._check_split:
      # Once: the features/head split must reproduce the model's logits.
      self._check_split = False
      expected = tf.cast(self._model(prepared, training=False), tf.float32)
      error = float(tf.reduce_max(tf.abs(expected - logits)))
      scale = float(tf.reduce_max(tf.abs(expected))) + 1e-6
      if error > 1e-3 * scale:
        raise ValueError(
            f"{self._model.name}: head(features(x)) differs from model(x) "
            f"by {error:.3g}: its features() is not what its head reads")
    return features, logits


def _looks_like_image_classifier(model):
  return all(
      hasattr(model, a)
      for a in ("backbone", "pooling", "input_mean", "input_std"))


def _image_classifier_features(model):
  """The pooled features an ``ImageClassifier`` feeds its head.

  Follows ``ImageClassifier.call`` up to the head (normalise, backbone,
  pool; dropout is off in inference); ``ClassifierFeatures`` checks on the
  first batch that the head applied to these reproduces the model's logits.
  """

  def features(images, training=False):
    images = keras.ops.cast(images, model.compute_dtype)
    mean = keras.ops.convert_to_tensor(model.input_mean, model.compute_dtype)
    std = keras.ops.convert_to_tensor(model.input_std, model.compute_dtype)
    mapped = model.backbone((images - mean) / std, training=training)
    if model.pooling == "first_token":
      return mapped[:, 0]
    return keras.ops.mean(mapped, axis=tuple(range(1, len(mapped.shape) - 1)))

  return features


def _is_functional(model):
  try:
    return bool(model.inputs) and bool(model.outputs)
  except (AttributeError, ValueError):
    return False


def _input_size(model):
  shape = getattr(model, "input_image_shape", None)
  if shape is None and _is_functional(model):
    shape = tuple(model.inputs[0].shape[1:3])
  return tuple(shape) if shape else None


def center_crop_resize(resolution):
  """Real images as the cascade sees them: square crop, resize, uint8.

  The same crop and anti-aliased bicubic resize the diffusion models are
  trained on (``diffusion_preprocessing``), rounded to uint8, so statistics
  of real images at ``resolution`` compare like with like against samples
  generated at that resolution.
  """
  resolution = int(resolution)

  def preprocess(image):
    square = diffusion_preprocessing.resize_square(
        diffusion_preprocessing.center_crop_square(image), resolution,
        quantize=True)
    return tf.cast(square, tf.uint8)

  return preprocess


def images_of(dataset, image_key=schema.IMAGE):
  """The uint8 images of a dataset of reader elements (or of images)."""
  if isinstance(dataset.element_spec, dict):
    return dataset.map(lambda element: element[image_key],
                       num_parallel_calls=tf.data.AUTOTUNE)
  return dataset


def extract(dataset, extractor, num_examples=None, batch_size=None,
            preprocess=None, image_key=schema.IMAGE, allow_fewer=False):
  """Features of the first ``num_examples`` images of ``dataset``, in order.

  Args:
    dataset: unbatched ``tf.data.Dataset`` of reader elements (dicts with
      ``image_key`` uint8 [H, W, 3]) or of uint8 images. Give it in a fixed
      order (``read_dataset(..., shuffle=False)``) to make "the first N"
      reproducible.
    extractor: a ``FeatureExtractor``.
    num_examples: how many images; None reads the whole dataset.
    batch_size: images per network call.
    preprocess: optional per-image uint8 -> uint8 function applied first,
      e.g. ``center_crop_resize(64)`` for real images.
    image_key: the image's key in dict elements.
    allow_fewer: return what there is when the dataset holds fewer than
      ``num_examples`` images, instead of raising.

  Returns:
    ``ExtractedFeatures``.

  Raises:
    ValueError: the dataset holds fewer than ``num_examples`` images.
  """
  batch_size = int(batch_size or DEFAULT_BATCH_SIZE)
  images = images_of(dataset, image_key)
  if num_examples is not None:
    images = images.take(int(num_examples))
  if preprocess is not None:
    images = images.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  batches = images.map(
      extractor.prepare,
      num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
  features, logits = [], []
  count = 0
  for batch in batches:
    batch_features, batch_logits = extractor.compute(batch)
    features.append(np.asarray(batch_features, np.float32))
    if batch_logits is not None:
      logits.append(np.asarray(batch_logits, np.float32))
    count += features[-1].shape[0]
    logging.log_every_n_seconds(logging.INFO, "%s: %d images", 60,
                                extractor.name, count)
  if num_examples is not None and count < num_examples:
    message = (f"the dataset holds {count} images, fewer than the "
               f"{num_examples} asked for")
    if not allow_fewer:
      raise ValueError(message)
    logging.warning("%s; using %d", message, count)
  if not features:
    raise ValueError("the dataset holds no images")
  return ExtractedFeatures(np.concatenate(features),
                           np.concatenate(logits) if logits else None,
                           extractor.name)
