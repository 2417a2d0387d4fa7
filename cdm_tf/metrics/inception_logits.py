"""The 1008 logits of the 2015 Inception graph: the standard ImageNet IS.

Published ImageNet Inception Scores come from the Inception-v3 graph of
2015-12-05, as Salimans et al. 2016's code computes them (and the code that
followed it, e.g. ADM's evaluator): the graph's 2048-d ``pool_3`` times the
weight of its ``softmax/logits`` layer, a softmax over all 1008 outputs
(the graph's 1000 ImageNet classes plus 8 unused ones, kept). That code
multiplies by the layer's weight matrix only; the layer's bias is not added
(torch-fidelity's default "logits_unbiased" does the same). So here:
logits = pool3 @ fc.weight^T, no bias. The bias is no detail: with it the
score of CIFAR-10's test images rises from 10.95 to 11.23
(openai/improved-gan issue #39), so scores computed the other way do not
compare exactly.

pool3 is the FID network's (``fid_inception.FidInception``, the same 299
resize and scaling), so the IS costs no second pass over the images when it
shares the FID's extractor (``sample_quality.evaluate``). The layer's
weights come from pytorch-fid's port of the same graph, the user-supplied
``pt_inception-2015-12-05-6726825d.pth`` (a ``torch.save`` state dict,
read without torch by ``torchscript_archive``; pytorch-fid publishes it as
a GitHub release asset, ``WEIGHTS_SOURCE``, and no registry package ships
it). Only its ``fc.weight`` [1008, 2048] is used: the convolutions stay
those of ``default_1.pt``, the one file the FID is computed with (checked
against the original network by tools/check_fid_inception.py). The file's
convolution kernels must equal those, though, or its fc would sit on
another network's pool3; they are the same 2015 graph's constants in
both files.

Without the file the FID Inception has no logits and the IS is not
reported (``not_reported_note`` says why and which file to give).
"""

import collections
import os

import numpy as np

from cdm_tf import fingerprints
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import fid_inception
from cdm_tf.metrics import torchscript_archive

NAME = "Inception-v3 2015-12-05, 1008 logits"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# Where the file is published (a GitHub release asset of that project).
WEIGHTS_SOURCE = "the fid_weights release of the pytorch-fid project"
FC_KEY = "fc.weight"
NUM_LOGITS = 1008
# A kernel equals the FID network's when it differs by at most this times
# the kernel's largest magnitude: copies of the same float32 constants are
# exact, a different network differs at order 1.
KERNEL_TOLERANCE = 1e-5


def not_reported_note(network_name):
  """Why no IS is reported for a feature network without logits, and what
  to give for the standard one."""
  return (f"IS not reported: {network_name} has no logits. The standard "
          "ImageNet IS is on the 2015 Inception's 1008 logits: give "
          f"pytorch-fid's {WEIGHTS_FILE} ({WEIGHTS_SOURCE}) as "
          "--is_inception_weights (or a Keras classifier as "
          "--is_classifier_model).")


def _expected(path):
  return f"expected pytorch-fid's {WEIGHTS_FILE}: {path}"


def _check_convolutions(path, state, reference_kernels):
  """Each reference kernel must equal one 4-D tensor of ``state``."""
  # The file's kernels by shape, in file order: with both files in the
  # graph's order the first candidate matches.
  candidates = collections.defaultdict(list)
  for value in state.values():
    if isinstance(value, np.ndarray) and value.ndim == 4:
      candidates[value.shape].append(value)
  for name, kernel in reference_kernels:
    same_shape = candidates[kernel.shape]
    tolerance = KERNEL_TOLERANCE * float(np.abs(kernel).max())
    for index, value in enumerate(same_shape):
      if float(np.abs(value - kernel).max()) <= tolerance:
        del same_shape[index]
        break
    else:
      raise ValueError(
          f"{path}: none of its convolution kernels equals the FID "
          f"Inception's {name} {kernel.shape}: not the weights of the 2015 "
          "Inception, so its fc does not fit the FID network's pool3 "
          f"({_expected(path)})")


def read_fc_weight(path, reference_kernels):
  """The weight [1008, 2048] of the logits layer of pytorch-fid's file.

  Args:
    path: ``pt_inception-2015-12-05-6726825d.pth`` (legacy or zip
      ``torch.save``).
    reference_kernels: [(name, OIHW kernel)] of the network whose pool3 the
      logits are computed on (``fid_inception.read_convolutions``); each
      must be in the file.

  Returns:
    float32 [1008, 2048].

  Raises:
    ValueError: not a torch file, no state dict, ``fc.weight`` missing, of
      another shape, not float or not finite, or a reference kernel not in
      the file; the message names the file and the problem.
    OSError: the file cannot be read.
  """
  path = os.fspath(path)
  state = torchscript_archive.load(path)
  if not isinstance(state, dict):
    raise ValueError(f"{path}: holds a {type(state).__name__}, not a state "
                     f"dict ({_expected(path)})")
  if FC_KEY not in state:
    raise ValueError(f"{path}: no {FC_KEY!r} (the 1008-way logits layer) "
                     f"among its {len(state)} entries ({_expected(path)})")
  weight = state[FC_KEY]
  shape = getattr(weight, "shape", None)
  if shape != (NUM_LOGITS, fid_inception.FEATURE_DIM):
    raise ValueError(
        f"{path}: {FC_KEY} has shape {shape}, expected "
        f"[{NUM_LOGITS}, {fid_inception.FEATURE_DIM}] (pool3 -> the 2015 "
        f"graph's {NUM_LOGITS} logits; {_expected(path)})")
  if not np.issubdtype(weight.dtype, np.floating):
    raise ValueError(f"{path}: {FC_KEY} is {weight.dtype}, not float")
  non_finite = int(np.size(weight) - np.isfinite(weight).sum())
  if non_finite:
    raise ValueError(f"{path}: {FC_KEY} holds {non_finite} non-finite "
                     "values (a damaged file)")
  _check_convolutions(path, state, reference_kernels)
  return np.asarray(weight, np.float32)


class InceptionLogits(features_lib.FeatureExtractor):
  """pool3 features and the 1008 logits of the 2015 Inception graph.

  Args:
    inception: the extractor of the pool3 features, a
      ``fid_inception.FidInception`` (pass the FID's own: then the IS needs
      no second pass over the images).
    fc_weight: float [C, D] (1008 x 2048 from ``read_fc_weight``).
    weights_path: the file it came from, for messages.

  Example::

    inception = fid_inception.FidInception()
    logits = inception_logits.from_file(path, inception)
    result = sample_quality.evaluate(images, inception, references,
                                     classifier=logits)
  """

  def __init__(self, inception, fc_weight, weights_path=None):
    fc_weight = np.asarray(fc_weight, np.float32)
    if fc_weight.ndim != 2:
      raise ValueError(f"fc_weight must be [classes, features], got "
                       f"{fc_weight.shape}")
    self.inception = inception
    self.fc_weight = fc_weight
    self.weights_path = weights_path
    self._fingerprint = None

  @property
  def name(self):
    policy = getattr(self.inception, "dtype_policy", "float32")
    return NAME if policy == "float32" else f"{NAME}, {policy}"

  @property
  def fingerprint(self):
    if self._fingerprint is None:
      self._fingerprint = fingerprints.of_json({
          "network": NAME, "inception": self.inception.fingerprint,
          "bias": False, "fc_weight": fingerprints.of_arrays([self.fc_weight])
      })
    return self._fingerprint

  @property
  def has_logits(self):
    return True

  def reads_features_of(self, extractor):
    """Whether ``extractor``'s features are the pool3 these logits are
    computed from (then the logits follow from features at hand)."""
    return (extractor is self.inception or
            extractor.fingerprint == self.inception.fingerprint)

  def logits(self, features):
    """pool3 features [N, D] -> logits float32 [N, C]: features @ fc^T
    (no bias, as the published IS code), computed in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != self.fc_weight.shape[1]:
      raise ValueError(f"expected features [N, {self.fc_weight.shape[1]}], "
                       f"got {features.shape}")
    return (features @ self.fc_weight.T.astype(np.float64)).astype(np.float32)

  def prepare(self, image):
    return self.inception.prepare(image)

  def compute(self, prepared):
    features, _ = self.inception.compute(prepared)
    features = np.asarray(features, np.float32)
    return features, self.logits(features)


def from_file(weights_path, inception):
  """``InceptionLogits`` of pytorch-fid's file on ``inception``'s pool3.

  Args:
    weights_path: ``pt_inception-2015-12-05-6726825d.pth``.
    inception: a ``fid_inception.FidInception``; the file's convolutions
      must equal those of its weights file.

  Raises:
    ValueError, OSError: see ``read_fc_weight``.
  """
  references = [
      (unit["name"], unit["kernel"])
      for unit in fid_inception.read_convolutions(inception.weights_path)
  ]
  weights_path = os.fspath(weights_path)
  return InceptionLogits(inception, read_fc_weight(weights_path, references),
                         weights_path)
