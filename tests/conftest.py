"""Shared test setup: quiet TensorFlow, float32 CPU execution."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
