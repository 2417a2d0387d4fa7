"""Turning sources into the package's record sets: the embedded
Fashion-MNIST data in ImageNet's TFRecord format, captioned sets for the
text-conditioned stages and class-balanced subsets of a real set.

Separate from ``cdm_tf.data`` (the readers and the record format) because
these write shards with split manifests (``cdm_tf.synthetic_set``), which
itself reads through ``cdm_tf.data``.
"""
