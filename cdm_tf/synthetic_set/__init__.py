"""The synthetic-set format: ImageNet-schema TFRecord shards plus a manifest
per split.

One place for everything that writes or reads such a set:
``shard_writer`` (records, shard names, shards that appear only when
complete), ``split_manifest`` (each split's counts and settings, checked
against the shards), ``reader`` (our records with their provenance, for
classifiers and metrics) and ``tfds_builder`` (the set as a TFDS dataset).
The embedded real data (Fashion-MNIST, captioned subsets) is stored in the
same format, so every ImageNet reader consumes both.
"""
