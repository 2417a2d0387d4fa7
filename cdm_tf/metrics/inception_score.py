"""Inception Score from any classifier's logits.

IS (Salimans et al. 2016) = exp(E_x KL(p(y|x) || p(y))), computed as in the
original code on ``num_splits`` = 10 equal, consecutive parts of the
samples (the last N mod 10 samples are left out), with p(y) the mean
prediction of each part; the result is the mean and standard deviation of
the 10 scores. It ranges from 1 (every prediction alike, or every one
uniform) to the number of classes (confident and evenly spread).

The classifier is the caller's. On ImageNet the standard one, which
published scores use, is the 1008 logits of the 2015 Inception graph
(``inception_logits``: the FID Inception's pool3 and pytorch-fid's logits
layer), a softmax over all 1008; on other data (the embedded Fashion-MNIST)
a classifier trained on that data. Its name goes into the report: scores of
different classifiers do not compare.
Computed in float64 from log-softmax, so confident (one-hot) predictions do
not produce log(0).
"""

import numpy as np
from scipy import special

from cdm_tf.metrics import report

NUM_SPLITS = 10


def split_scores(logits, num_splits=NUM_SPLITS):
  """The Inception Score of each of ``num_splits`` parts of logits [N, C]."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2:
    raise ValueError(f"expected logits [N, C], got {logits.shape}")
  part = logits.shape[0] // num_splits
  if part < 1:
    raise ValueError(f"{logits.shape[0]} samples cannot fill {num_splits} "
                     "splits")
  scores = []
  for k in range(num_splits):
    log_p = special.log_softmax(logits[k * part:(k + 1) * part], axis=1)
    log_marginal = special.logsumexp(log_p, axis=0) - np.log(part)
    kl = np.sum(np.exp(log_p) * (log_p - log_marginal), axis=1)
    scores.append(np.exp(kl.mean()))
  return np.asarray(scores)


def inception_score(logits, network, num_splits=NUM_SPLITS):
  """``report.MetricValue`` "IS": mean and std over the splits.

  Args:
    logits: float [N, C] of the generated images.
    network: the classifier's name, for the report.
    num_splits: parts the samples are split into.
  """
  scores = split_scores(logits, num_splits)
  part = np.asarray(logits).shape[0] // num_splits
  return report.MetricValue("IS", float(scores.mean()), network,
                            part * num_splits, std=float(scores.std()),
                            details={"num_splits": num_splits})
