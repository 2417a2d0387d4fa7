"""Data layer: ImageNet-format TFRecords in and out, preprocessing, mixing."""
