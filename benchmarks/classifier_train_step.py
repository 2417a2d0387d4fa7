"""Classifier training throughput in float32 and bfloat16 on this CPU.

Times compiled training steps of a full-size classifier (ResNet-50 by
default: keras-hub ResNet v1.5, 1000 classes) as ``tools/train_classifier.py``
runs them (``trainer.make_replica_step``: forward, softmax cross-entropy with
the recipe's label smoothing, backward, the recipe's SGD with momentum and
L2 weight decay) at a small fixed batch of random images, and prints
images/s per precision. The first step (tracing, compilation) is not timed.

  python benchmarks/classifier_train_step.py --batch_size=8
  python benchmarks/classifier_train_step.py \
      --config=fashion_mnist/resnet_tiny --batch_size=128 --steps=20
"""

import os
import time

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import gin
import keras
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import recipes
from cdm_tf.classifiers import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string(
    "config", "resnet50", "A gin/classifiers config, its "
    "path below gin/classifiers without .gin: its model and "
    "recipe.")
flags.DEFINE_integer("batch_size", 8, "Examples per step.")
flags.DEFINE_integer("image_size", None, "Input side; default the config's.")
flags.DEFINE_integer("steps", 5, "Timed steps per precision.")
FLAGS = flags.FLAGS

WARMUP_STEPS = 2


def _time_policy(policy, recipe, batch_size, image_size, steps):
  keras.mixed_precision.set_global_policy(policy)
  try:
    keras.utils.set_random_seed(0)
    overrides = {"image_size": image_size} if image_size else {}
    model = gin.get_configurable(models.create_classifier)(**overrides)
    size = model.input_image_shape[0]
    optimizer = gin.get_configurable(recipes.create_optimizer)(
        recipe, steps_per_epoch=1000, global_batch_size=batch_size)
    optimizer.build(model.trainable_variables)
    step = tf.function(
        trainer.make_replica_step(model, optimizer,
                                  recipes.create_loss(recipe, reduction="none"),
                                  batch_size, model.num_classes))
    images = tf.random.uniform([batch_size, size, size, 3])
    labels = tf.one_hot(
        tf.range(batch_size) % model.num_classes, model.num_classes)
    for _ in range(WARMUP_STEPS):  # tracing, compilation, first allocations
      float(step(images, labels)["loss"])
    start = time.perf_counter()
    for _ in range(steps):
      metrics = step(images, labels)
    float(metrics["loss"])
    return (time.perf_counter() - start) / steps, model, size
  finally:
    keras.mixed_precision.set_global_policy("float32")


def main(argv):
  del argv
  gin.parse_config_files_and_bindings(
      [os.path.join(ROOT, "gin", "classifiers", f"{FLAGS.config}.gin")], [])
  recipe = gin.get_configurable(recipes.ClassifierRecipe)()
  for policy in ("float32", "mixed_bfloat16"):
    seconds, model, size = _time_policy(policy, recipe, FLAGS.batch_size,
                                        FLAGS.image_size, FLAGS.steps)
    print(
        f"{FLAGS.config} ({model.count_params():,} parameters) "
        f"{size}x{size} batch {FLAGS.batch_size} {policy:15s} "
        f"{1 / seconds:6.2f} steps/s {FLAGS.batch_size / seconds:7.1f} "
        "images/s", flush=True)


if __name__ == "__main__":
  command_line.run(main)
