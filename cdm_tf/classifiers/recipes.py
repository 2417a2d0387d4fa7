"""Training recipes of the ImageNet classifiers (Azizi et al. 2023, A.4).

``ClassifierRecipe`` holds one column of Table A.1 (ConvNets) or Table A.2
(vision transformers), field for field; a gin file per column binds it
(gin/classifiers/). None stands for the tables' "-" (not used). The builders
turn a recipe into the pieces of a training run:

* ``learning_rate_schedule``: the CAS ResNet-50's step-wise schedule (linear
  warmup from 0 over 5 epochs, then /10 at epochs 30, 60 and 80, as A.4's
  text says) or linear warmup from 0 then cosine decay to 0 at the last
  epoch, both in optimizer steps.
* ``scaled_learning_rate``: the linear scaling rule (Goyal et al. 2017):
  a run with global batch b uses learning_rate * b / batch_size, so a
  smaller machine can follow a recipe written for 1024 or 4096.
* ``create_optimizer``: SGD with momentum 0.9 or AdamW, with the table's
  weight decay applied the way the recipe it comes from applies it (see
  ``WEIGHT_DECAY_CONVENTIONS``), to kernels only (not batch-norm or
  layer-norm parameters, biases, position embeddings or tokens).
* ``create_training_augmentation``: RandAugment per image as the recipe's
  source runs it (``randaugment``: the TPU / big_vision code for the
  ResNets, ResNet-RS and ViT-S/16, timm's for DeiT; ``randaugment_variant``),
  then the recipe's random erasing (``random_erasing``), keras.layers.MixUp
  / CutMix per batch, labels one-hot.
* ``create_loss``: softmax cross-entropy on logits with the table's label
  smoothing.

Tables A.1 and A.2 label the last two rows "Mixup prob." and "Cutmix prob.",
but the values are the Beta(alpha, alpha) parameters of the cited recipes:
DeiT's mixup alpha 0.8 and cutmix alpha 1.0 (Touvron et al. 2021, Table 9,
with one of the two per batch) and the mixup parameter 0.2 of Beyer et al.
(2022). They are stored as ``mixup`` and ``cutmix`` and used as alphas.

Azizi et al. "follow (Touvron et al., 2021) to train DeiT family models";
DeiT's recipe (its Table 9) has ingredients Table A.2 leaves out, which
``ClassifierRecipe`` holds beyond the table's rows (None: not used) and the
DeiT gin files bind: weight decay 0.05 (Table A.2's "-"), random erasing
0.25 (``random_erasing``) and repeated augmentation with 3 copies
(``input_pipeline.repeat_examples``); its stochastic depth 0.1 is a model
argument (``models.create_classifier``).
"""

import dataclasses
import math
from typing import Optional

import keras
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import randaugment as randaugment_lib
from cdm_tf.classifiers import random_erasing as random_erasing_lib

OPTIMIZERS = ("momentum", "adamw")
DECAYS = ("stepwise", "cosine")

# A.4: the CAS ResNet-50's learning rate "decrease[s] by a factor of 10 at
# epochs 30, 60, and 80".
STEPWISE_DECAY_EPOCHS = (30, 60, 80)
STEPWISE_DECAY_FACTOR = 0.1

# How a table's weight decay w enters the update of a kernel v:
#   "l2": w/2 * ||v||^2 is added to the loss, i.e. w * v to the gradient
#     before momentum (coupled; the TPU ResNet code of the CAS protocol and
#     of ResNet-RS regularises this way).
#   "decoupled": v -= learning_rate(t) * w * v after the Adam step (Keras /
#     PyTorch AdamW; DeiT's recipe).
#   "decoupled_schedule": v -= w * learning_rate(t) / peak_learning_rate * v,
#     i.e. decay scaled by the schedule but not by the peak learning rate
#     (big_vision, where the ViT-S/16 recipe of Beyer et al. comes from); it
#     is Keras AdamW with weight_decay = w / peak_learning_rate.
WEIGHT_DECAY_CONVENTIONS = ("l2", "decoupled", "decoupled_schedule")

# Only kernels (conv, dense and attention weight matrices) are decayed. The
# regex, given to Keras' exclude_from_weight_decay, matches every other
# variable (gamma, beta, bias, embeddings, class_token, ...): its last name
# component is not "kernel". Keras matches it against "kernel" (a Keras
# variable's name) or "scope/kernel:0" (the TensorFlow variable it updates).
NOT_A_KERNEL = r"(^|/)(?!kernel(:\d+)?$)[^/]*$"

# Every cited recipe applies two RandAugment operations per image.
RANDAUGMENT_NUM_LAYERS = randaugment_lib.NUM_LAYERS
# Random erasing's per-image seed: stateless_fold_in(image seed, this).
RANDOM_ERASING_SEED_STREAM = 1
# DeiT's switch probability between mixup and cutmix when both are on.
CUTMIX_SWITCH_PROBABILITY = 0.5
# The augmentation layers run in the input pipeline on float32 images in
# [0, 1], whatever the model's mixed-precision policy: under a global
# mixed_bfloat16 policy they would otherwise compute in bfloat16, which
# CutMix's float32 arithmetic rejects and which would quantise the pixels.
AUGMENTATION_DTYPE = "float32"


@dataclasses.dataclass(frozen=True)
class ClassifierRecipe:
  """One column of Table A.1 or A.2; None is the table's "-".

  Attributes:
    epochs: training epochs.
    batch_size: global batch size the learning rate was set for.
    optimizer: "momentum" (SGD with momentum) or "adamw".
    learning_rate: peak learning rate at ``batch_size``.
    decay: "stepwise" or "cosine" (Table A.1 "Decay method", Table A.2
      "Learning rate decay").
    weight_decay: weight decay coefficient, or None.
    warmup_epochs: epochs of linear warmup from 0.
    label_smoothing: label smoothing of the loss, or None.
    dropout_rate: dropout before the classifier head, or None (Table A.1
      only).
    randaugment_magnitude: RandAugment magnitude, or None for no
      RandAugment.
    randaugment_variant: the RandAugment the magnitude is for
      (``randaugment.VARIANTS``): "tpu" (tensorflow/tpu's, which big_vision
      forks: the ResNet, ResNet-RS and ViT-S/16 recipes) or "timm" (DeiT's
      rand-m9-mstd0.5-inc1). The gin files bind it.
    mixup: mixup Beta alpha ("Mixup prob.", Table A.2 only), or None.
    cutmix: cutmix Beta alpha ("Cutmix prob.", Table A.2 only), or None.
    decay_epochs: epochs at which "stepwise" divides by 10 (A.4: 30, 60,
      80 of 90; shorter recipes scale them).
    random_erasing: probability of erasing a rectangle of each image
      (``random_erasing.RandomErasing``), or None (beyond the tables: DeiT's
      0.25).
    repeated_augmentations: copies of each sampled image per epoch, each
      augmented on its own (``input_pipeline.repeat_examples``), or None
      (beyond the tables: DeiT's 3).
  """

  epochs: int
  batch_size: int
  optimizer: str
  learning_rate: float
  decay: str
  weight_decay: Optional[float]
  warmup_epochs: float
  label_smoothing: Optional[float] = None
  dropout_rate: Optional[float] = None
  randaugment_magnitude: Optional[float] = None
  randaugment_variant: str = randaugment_lib.VARIANT_TPU
  mixup: Optional[float] = None
  cutmix: Optional[float] = None
  decay_epochs: tuple = STEPWISE_DECAY_EPOCHS
  random_erasing: Optional[float] = None
  repeated_augmentations: Optional[int] = None

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                       f"{self.optimizer!r}")
    if self.decay not in DECAYS:
      raise ValueError(f"decay must be one of {DECAYS}, got {self.decay!r}")
    if self.randaugment_variant not in randaugment_lib.VARIANTS:
      raise ValueError(f"randaugment_variant must be one of "
                       f"{sorted(randaugment_lib.VARIANTS)}, got "
                       f"{self.randaugment_variant!r}")
    if not 0 <= self.warmup_epochs < self.epochs:
      raise ValueError(f"warmup_epochs {self.warmup_epochs} must be in "
                       f"[0, epochs={self.epochs})")
    if self.batch_size <= 0 or self.learning_rate <= 0:
      raise ValueError("batch_size and learning_rate must be positive")
    epochs = [float(e) for e in self.decay_epochs]
    # Boundaries past the last epoch are allowed: a shortened run of a
    # paper recipe simply never reaches them.
    if epochs != sorted(epochs) or any(e < 0 for e in epochs):
      raise ValueError(f"decay_epochs {self.decay_epochs} must be "
                       "non-negative and increasing")
    if self.random_erasing is not None and not (0 <= self.random_erasing <= 1):
      raise ValueError(f"random_erasing is a probability in [0, 1], got "
                       f"{self.random_erasing}")
    if self.repeated_augmentations is not None and (
        self.repeated_augmentations != int(self.repeated_augmentations) or
        self.repeated_augmentations < 1):
      raise ValueError(f"repeated_augmentations must be a positive integer, "
                       f"got {self.repeated_augmentations}")


def scaled_learning_rate(recipe, global_batch_size=None):
  """The recipe's peak learning rate scaled linearly to a global batch.

  Args:
    recipe: a ClassifierRecipe.
    global_batch_size: the run's global batch; None means the recipe's.

  Returns:
    recipe.learning_rate * global_batch_size / recipe.batch_size.
  """
  if global_batch_size is None:
    return float(recipe.learning_rate)
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got "
                     f"{global_batch_size}")
  return recipe.learning_rate * global_batch_size / recipe.batch_size


@keras.saving.register_keras_serializable(package="cdm_tf")
class ClassifierLearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0, then step-wise or cosine decay, over epochs.

  Args:
    peak_learning_rate: learning rate at the end of warmup.
    steps_per_epoch: optimizer steps per epoch (may be fractional).
    epochs: total epochs; cosine reaches 0 here.
    warmup_epochs: epochs of linear warmup (learning rate 0 at step 0).
    decay: "cosine" or "stepwise".
    decay_epochs: epochs at which "stepwise" multiplies by decay_factor.
    decay_factor: the step-wise multiplier.
  """

  def __init__(self, peak_learning_rate, steps_per_epoch, epochs, warmup_epochs,
               decay="cosine", decay_epochs=STEPWISE_DECAY_EPOCHS,
               decay_factor=STEPWISE_DECAY_FACTOR):
    if decay not in DECAYS:
      raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if steps_per_epoch <= 0:
      raise ValueError(f"steps_per_epoch must be positive, got "
                       f"{steps_per_epoch}")
    self.peak_learning_rate = float(peak_learning_rate)
    self.steps_per_epoch = float(steps_per_epoch)
    self.epochs = float(epochs)
    self.warmup_epochs = float(warmup_epochs)
    self.decay = decay
    self.decay_epochs = tuple(float(e) for e in decay_epochs)
    self.decay_factor = float(decay_factor)

  def learning_rate_at_epoch(self, epoch):
    """The schedule as a function of (fractional) epochs, a float tensor."""
    ops = keras.ops
    epoch = ops.cast(epoch, "float32")
    if self.decay == "stepwise":
      decayed = ops.convert_to_tensor(self.peak_learning_rate, "float32")
      for boundary in self.decay_epochs:
        decayed = ops.where(epoch >= boundary, decayed * self.decay_factor,
                            decayed)
    else:
      span = max(self.epochs - self.warmup_epochs, 1e-9)
      progress = ops.clip((epoch - self.warmup_epochs) / span, 0.0, 1.0)
      decayed = 0.5 * self.peak_learning_rate * (1.0 +
                                                 ops.cos(math.pi * progress))
    if self.warmup_epochs <= 0:
      return decayed
    warmup = self.peak_learning_rate * epoch / self.warmup_epochs
    return ops.where(epoch < self.warmup_epochs, warmup, decayed)

  def __call__(self, step):
    epoch = keras.ops.cast(step, "float32") / self.steps_per_epoch
    return self.learning_rate_at_epoch(epoch)

  def get_config(self):
    return {
        "peak_learning_rate": self.peak_learning_rate,
        "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
        "warmup_epochs": self.warmup_epochs, "decay": self.decay,
        "decay_epochs": list(self.decay_epochs),
        "decay_factor": self.decay_factor
    }


def learning_rate_schedule(recipe, steps_per_epoch, global_batch_size=None):
  """The recipe's schedule in steps, its peak scaled to the global batch.

  Args:
    recipe: a ClassifierRecipe.
    steps_per_epoch: training examples per epoch / global batch size.
    global_batch_size: the run's global batch; None means the recipe's.

  Returns:
    A ClassifierLearningRate.
  """
  return ClassifierLearningRate(scaled_learning_rate(recipe, global_batch_size),
                                steps_per_epoch, recipe.epochs,
                                recipe.warmup_epochs, decay=recipe.decay,
                                decay_epochs=recipe.decay_epochs)


@keras.saving.register_keras_serializable(package="cdm_tf")
class L2RegularizedSGD(keras.optimizers.SGD):
  """SGD (with momentum) whose gradients include an L2 penalty's gradient.

  The update uses gradient + l2 * variable for every variable that
  ``exclude_from_weight_decay`` does not exclude, which is SGD on
  loss + l2/2 * sum ||v||^2. Unlike Keras' ``weight_decay`` (decoupled:
  applied after, outside the momentum), the penalty goes through momentum,
  as in the TPU ResNet recipes the tables come from.

  Args:
    l2: the penalty coefficient (the table's weight decay).
    **kwargs: keras.optimizers.SGD arguments; ``weight_decay`` must be
      unset.
  """

  def __init__(self, l2=0.0, **kwargs):
    if kwargs.get("weight_decay") is not None:
      raise ValueError("use l2, not weight_decay, with L2RegularizedSGD")
    super().__init__(**kwargs)
    self.l2 = float(l2)

  def update_step(self, gradient, variable, learning_rate):
    if self.l2 and self._use_weight_decay(variable):
      gradient = keras.ops.add(
          keras.ops.cast(gradient, variable.dtype),
          keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable))
    return super().update_step(gradient, variable, learning_rate)

  def get_config(self):
    return {**super().get_config(), "l2": self.l2}


def create_optimizer(recipe, steps_per_epoch, global_batch_size=None,
                     weight_decay_convention=None, momentum=0.9, nesterov=False,
                     beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """The recipe's optimizer with its learning-rate schedule.

  Args:
    recipe: a ClassifierRecipe.
    steps_per_epoch: training examples per epoch / global batch size.
    global_batch_size: the run's global batch; None means the recipe's.
    weight_decay_convention: one of ``WEIGHT_DECAY_CONVENTIONS``; None means
      "l2" for momentum and "decoupled" for AdamW. The gin files set it.
    momentum: SGD momentum (the tables' "Momentum"; 0.9 in the cited
      recipes).
    nesterov: Nesterov momentum; the tables say plain "Momentum".
    beta_1: AdamW beta_1 (DeiT and big_vision: 0.9).
    beta_2: AdamW beta_2 (DeiT and big_vision: 0.999).
    epsilon: AdamW epsilon (PyTorch and optax default 1e-8).

  Returns:
    A Keras optimizer that decays kernels only.
  """
  schedule = learning_rate_schedule(recipe, steps_per_epoch, global_batch_size)
  weight_decay = recipe.weight_decay or 0.0
  if weight_decay_convention is None:
    weight_decay_convention = ("l2" if recipe.optimizer == "momentum" else
                               "decoupled")
  if weight_decay_convention not in WEIGHT_DECAY_CONVENTIONS:
    raise ValueError(f"weight_decay_convention must be one of "
                     f"{WEIGHT_DECAY_CONVENTIONS}, got "
                     f"{weight_decay_convention!r}")
  if recipe.optimizer == "momentum":
    if weight_decay_convention != "l2":
      raise ValueError("the momentum recipes use L2 weight decay")
    optimizer = L2RegularizedSGD(l2=weight_decay, learning_rate=schedule,
                                 momentum=momentum, nesterov=nesterov)
  else:
    if weight_decay_convention == "l2":
      raise ValueError("AdamW decays decoupled; use 'decoupled' or "
                       "'decoupled_schedule'")
    if weight_decay_convention == "decoupled_schedule":
      weight_decay /= schedule.peak_learning_rate
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=weight_decay, beta_1=beta_1,
                                       beta_2=beta_2, epsilon=epsilon)
  optimizer.exclude_from_weight_decay(var_names=[NOT_A_KERNEL])
  return optimizer


def create_loss(recipe, reduction="sum_over_batch_size"):
  """Softmax cross-entropy on logits against one-hot or mixed labels.

  Args:
    recipe: a ClassifierRecipe (its label smoothing).
    reduction: a Keras loss reduction. Custom distributed loops want "none"
      (per-example losses to divide by the global batch): under
      tf.distribute Keras' "sum_over_batch_size" already divides by the
      number of replicas.
  """
  return keras.losses.CategoricalCrossentropy(
      from_logits=True, label_smoothing=recipe.label_smoothing or 0.0,
      reduction=reduction)


class TrainingAugmentation:
  """RandAugment and random erasing per image, then MixUp / CutMix per
  batch, one-hot labels.

  Use ``apply`` on a dataset of (image [H, W, 3] float in [0, 1], int label)
  examples (``cdm_tf.data.classifier_preprocessing.train_example``), or
  ``augment_image`` before batching and ``mix_batch`` after.

  Args:
    num_classes: label depth of the one-hot labels.
    randaugment: a ``randaugment.RandAugment``, or None.
    mixup: a keras.layers.MixUp, or None.
    cutmix: a keras.layers.CutMix, or None.
    seed: optional int for the per-image RandAugment and random erasing
      seeds and the per-batch choice between mixup and cutmix.
    random_erasing: a ``random_erasing.RandomErasing``, or None.
  """

  def __init__(self, num_classes, randaugment=None, mixup=None, cutmix=None,
               seed=None, random_erasing=None):
    self.num_classes = int(num_classes)
    self.randaugment = randaugment
    self.mixup = mixup
    self.cutmix = cutmix
    self.seed = seed
    self.random_erasing = random_erasing

  def augment_image(self, image, label, seed):
    """RandAugment one image with its stateless seed (int tensor [2]),
    then random erasing; label unchanged."""
    if self.randaugment is not None:
      image = self.randaugment(image, seed)
    # Random erasing comes last, as in DeiT's transform; its seed is folded
    # off the image's so that the two draw independently.
    if self.random_erasing is not None:
      image = self.random_erasing(
          image,
          tf.random.experimental.stateless_fold_in(seed,
                                                   RANDOM_ERASING_SEED_STREAM))
    return image, label

  def mix_batch(self, images, labels):
    """One-hot labels, then mixup or cutmix of the whole batch if enabled."""
    labels = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes,
                        dtype=tf.float32)
    images = tf.cast(images, tf.float32)

    def mix(layer):
      mixed = layer({"images": images, "labels": labels}, training=True)
      return (tf.cast(mixed["images"],
                      tf.float32), tf.cast(mixed["labels"], tf.float32))

    if self.mixup is not None and self.cutmix is not None:
      use_cutmix = tf.random.uniform(
          [], seed=self.seed) < (CUTMIX_SWITCH_PROBABILITY)
      return tf.cond(use_cutmix, lambda: mix(self.cutmix),
                     lambda: mix(self.mixup))
    if self.mixup is not None:
      return mix(self.mixup)
    if self.cutmix is not None:
      return mix(self.cutmix)
    return images, labels

  def apply(self, dataset, batch_size, drop_remainder=True, pipeline_id=0):
    """Augments, batches and mixes a dataset of single examples.

    ``pipeline_id`` (of ``tf.distribute``'s input context) gives each input
    pipeline its own sequence of per-image seeds."""
    autotune = tf.data.AUTOTUNE
    # One stateless seed [2] per example, a fixed sequence when self.seed
    # is set.
    seeds = tf.data.Dataset.random(seed=self.seed).batch(
        2, drop_remainder=True).map(lambda seed: tf.random.experimental.
                                    stateless_fold_in(seed, pipeline_id))
    dataset = tf.data.Dataset.zip(dataset, seeds).map(
        lambda example, seed: self.augment_image(*example, seed),
        num_parallel_calls=autotune)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.map(self.mix_batch, num_parallel_calls=autotune)


def create_training_augmentation(recipe, num_classes, seed=None,
                                 randaugment_num_layers=RANDAUGMENT_NUM_LAYERS,
                                 input_mean=models.IMAGENET_MEAN,
                                 input_std=models.IMAGENET_STD):
  """The recipe's augmentations.

  Args:
    recipe: a ClassifierRecipe.
    num_classes: label depth.
    seed: optional int seeding every layer.
    randaugment_num_layers: RandAugment operations per image.
    input_mean: the model's input normalisation (``ImageClassifier``),
      which random erasing's noise is drawn for.
    input_std: the same.

  Returns:
    A TrainingAugmentation.
  """
  randaugment = mixup = cutmix = None
  if recipe.randaugment_magnitude:
    randaugment = randaugment_lib.RandAugment(recipe.randaugment_variant,
                                              recipe.randaugment_magnitude,
                                              num_layers=randaugment_num_layers)
  if recipe.mixup:
    mixup = keras.layers.MixUp(alpha=recipe.mixup, seed=seed,
                               dtype=AUGMENTATION_DTYPE)
  if recipe.cutmix:
    # A (low, high) factor samples alpha in that range; (a, a) fixes it.
    cutmix = keras.layers.CutMix(factor=(recipe.cutmix, recipe.cutmix),
                                 seed=seed, dtype=AUGMENTATION_DTYPE)
  random_erasing = None
  if recipe.random_erasing:
    random_erasing = random_erasing_lib.RandomErasing(recipe.random_erasing,
                                                      input_mean=input_mean,
                                                      input_std=input_std)
  return TrainingAugmentation(num_classes, randaugment, mixup, cutmix, seed,
                              random_erasing=random_erasing)
