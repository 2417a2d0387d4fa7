"""Parameter counts of the full-size classifiers of Azizi et al. (Table 3).

Builds the model of every gin/classifiers/*.gin file at its input size with
1000 classes (random weights, nothing downloaded) and prints the config, the
model, the input size, the parameter count (all weights, including batch-norm
moving statistics, as gin/classifiers states it), the trainable count,
Table 3's count in millions and the build time, so the architectures can be
checked against the paper.

  python benchmarks/classifier_sizes.py
"""

import gc
import glob
import math
import os
import time

import gin

from cdm_tf.classifiers import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 3 "Params (M)" per model name.
TABLE_3_MILLIONS = {
    "resnet50": 36,
    "resnet101": 45,
    "resnet152": 64,
    "resnet_rs50": 36,
    "resnet_rs101": 64,
    "resnet_rs152": 87,
    "vit_s16": 22,
    "deit_s": 22,
    "deit_b": 87,
    "deit_l": 307,
}


def _bound_value(binding):
  """A gin binding's value, following a %MACRO reference."""
  value = gin.query_parameter(binding)
  if isinstance(value, gin.config.ConfigurableReference):
    value = gin.query_parameter("%" + value.scoped_selector.split("/")[0])
  return value


def main():
  print(f"{'config':18s} {'model':13s} {'input':>7s} {'parameters':>13s} "
        f"{'trainable':>13s} {'Table 3 (M)':>11s} {'build s':>8s}")
  for path in sorted(
      glob.glob(os.path.join(ROOT, "gin", "classifiers", "*.gin"))):
    gin.clear_config()
    gin.parse_config_files_and_bindings([path], [])
    start = time.perf_counter()
    model = gin.get_configurable(models.create_classifier)()
    seconds = time.perf_counter() - start
    size = _bound_value("models.create_classifier.image_size")
    config = os.path.splitext(os.path.basename(path))[0]
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    print(
        f"{config:18s} {model.name:13s} {size:>3d}x{size:<3d} "
        f"{model.count_params():13,d} {trainable:13,d} "
        f"{TABLE_3_MILLIONS[model.name]:11d} {seconds:8.1f}", flush=True)
    del model
    gc.collect()
  gin.clear_config()


if __name__ == "__main__":
  main()
