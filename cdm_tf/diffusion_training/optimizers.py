"""Optimizers and learning-rate schedules of the papers' configs."""

import keras

OPTIMIZERS = ("adam", "adamw", "adafactor", "sgd")


@keras.saving.register_keras_serializable(package="cdm_tf")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then
  constant (the diffusion papers' schedule)."""

  def __init__(self, learning_rate, warmup_steps):
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = keras.ops.cast(step, "float32")
    if self.warmup_steps <= 0:
      return keras.ops.convert_to_tensor(self.learning_rate, "float32")
    return self.learning_rate * keras.ops.minimum(
        1.0, (step + 1.0) / self.warmup_steps)

  def get_config(self):
    return {
        "learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps
    }


def create_optimizer(name="adam", learning_rate=1e-4, warmup_steps=0,
                     weight_decay=None, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                     momentum=0.9, loss_scaling=False):
  """An optimizer with linear warmup; gradients are clipped by the model.

  ``loss_scaling`` wraps it in a dynamic ``LossScaleOptimizer`` (float16).
  """
  schedule = LinearWarmup(learning_rate, warmup_steps)
  if name == "adam":
    optimizer = keras.optimizers.Adam(schedule, beta_1=beta_1, beta_2=beta_2,
                                      epsilon=epsilon)
  elif name == "adamw":
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay or
                                       0.0, beta_1=beta_1, beta_2=beta_2,
                                       epsilon=epsilon)
  elif name == "adafactor":
    # Keras' Adafactor (factored second moments; Azizi et al.'s base
    # fine-tune): its step is the learning rate times each weight's RMS
    # (at least 1e-3), so learning rates are relative to weight scale.
    optimizer = keras.optimizers.Adafactor(schedule)
  elif name == "sgd":
    optimizer = keras.optimizers.SGD(schedule, momentum=momentum)
  else:
    raise ValueError(f"unknown optimizer {name!r}; expected one of "
                     f"{OPTIMIZERS}")
  if loss_scaling:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer
