"""The training loop both trainers run (diffusion stages and classifiers).

It runs ``steps_per_execution`` (k) optimizer steps per compiled call, so a
TPU host does not wait for the device after every step; between calls it
checks the losses for NaN / Inf, keeps the window of metrics behind each
progress line and TensorBoard scalar, saves checkpoints (never weights
that are not finite), runs the trainer's periodic hooks (sample grids,
evaluation) and honours a stop request (SIGTERM: save and return). Every
interval is in steps and must be a multiple of k; a call ends early at a
multiple of k (after a resume from another k) and at the last step.

Why not Keras ``Model.fit`` (with ``BackupAndRestore``, ``TensorBoard``,
``TerminateOnNaN``): what the steps need is outside what fit controls.

* Input pipelines are built per input context
  (``distribute_datasets_from_function``): each one shards the files and
  derives its examples' stateless seeds from its pipeline id, and the
  diffusion trainer checkpoints the data iterator with the weights. fit
  builds and owns its iterator, and ``BackupAndRestore`` saves the model
  and the epoch / step, not the input pipeline's position.
* ``DiffusionModel.train_step`` all-reduces the gradients itself and clips
  their global norm after the all-reduce; Keras optimizers clip
  (``clipnorm`` / ``global_clipnorm``) each replica's gradients before
  theirs, which is another update under more than one replica.
* The diffusion EMA weights are variables of their own, checkpointed with
  the U-Net, swapped in for the sample grids during the run and exported;
  a Keras optimizer's ``use_ema`` keeps them as optimizer state and only
  writes them over the weights when fit ends.
* Preemption and resumption: a stop request saves a checkpoint and
  returns; a non-chief worker saves into scratch space
  (``preemption.WorkerCheckpoints``); a run refuses to resume from
  checkpoints made with another model or optimizer (``run_settings``);
  and a checkpoint is never written from non-finite weights.
"""

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import keras
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.training import preemption
from cdm_tf.training import run_settings
from cdm_tf.training import strategies

TENSORBOARD_DIR = "tensorboard"


class NonFiniteLossError(RuntimeError):
  """The loss (or the weights) became NaN or Inf; the run stopped without
  saving them."""
  exit_status = 3  # the binaries' status (cdm_tf/command_line.py)


def seed_and_loss_scaling(seed):
  """Seeds Python, NumPy and TensorFlow (same seed, same initial weights
  whatever the strategy); returns whether the loss must be scaled (float16
  does, bfloat16 has float32's exponent range)."""
  keras.utils.set_random_seed(seed)
  return keras.mixed_precision.global_policy().name == "mixed_float16"


def check_intervals(steps_per_execution, intervals):
  """Refuses intervals the loop cannot keep with k steps per call.

  Args:
    steps_per_execution: k, steps per compiled call.
    intervals: {setting name: interval in steps}; 0 means never.

  Raises:
    ConfigError (a ValueError): k is not positive, or intervals are not
      multiples of it (all of them named).
  """
  if steps_per_execution < 1:
    raise configuration.ConfigError(
        f"steps_per_execution must be positive, got {steps_per_execution}")
  bad = [
      f"{name} = {every}" for name, every in intervals.items()
      if every and every % steps_per_execution
  ]
  if bad:
    raise configuration.ConfigError(
        f"{', '.join(bad)}: progress, checkpoints, samples and evaluations "
        f"happen between compiled calls of steps_per_execution = "
        f"{steps_per_execution} steps; make these multiples of it")


def summary_writer(model_dir, strategy):
  """The run's TensorBoard writer (a no-op one on non-chief workers)."""
  if strategies.is_chief(strategy):
    return tf.summary.create_file_writer(
        os.path.join(model_dir, TENSORBOARD_DIR))
  return tf.summary.create_noop_writer()


class Checkpoints:
  """A run's checkpoints: what they hold, where they go, how often, and the
  record of the settings they were made with.

  Creating it refuses a ``model_dir`` whose checkpoints were made with
  other settings (``run_settings``) and records this run's.
  """

  def __init__(self, checkpoint, model_dir, strategy, settings, *, every, keep,
               weights, advice, before_save=None):
    """Args:
      checkpoint: the ``tf.train.Checkpoint`` of everything to save.
      model_dir: checkpoints go to ``<model_dir>/checkpoints``.
      strategy: the run's ``tf.distribute.Strategy``.
      settings: ``run_settings.describe(...)`` of this run.
      every: save every this many steps.
      keep: how many checkpoints the chief keeps.
      weights: variables that must be finite before a save.
      advice: the last sentence of a non-finite error (what to change).
      before_save: optional ``fn(step)`` run before every save.
    """
    self.checkpoint = checkpoint
    self.every = every
    self.advice = advice
    self.manager = preemption.checkpoint_manager(checkpoint, model_dir,
                                                 strategy, keep)
    run_settings.check_or_record(
        model_dir, settings, resuming=self.manager.latest_checkpoint
        is not None, chief=strategies.is_chief(strategy))
    floating = [v for v in weights if tf.as_dtype(v.dtype).is_floating]
    self._weights_are_finite = tf.function(lambda: tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v)) for v in floating]))
    self._before_save = before_save

  def restore(self):
    """Restores the latest checkpoint; returns its path, or None."""
    return preemption.restore_latest(self.checkpoint, self.manager)

  def non_finite(self, what, step, detail=""):
    """The error of a non-finite ``what`` (e.g. "loss nan") at ``step``."""
    return NonFiniteLossError(
        f"non-finite {what} at step {step}{detail}; stopped without saving. "
        f"The last good checkpoint is {self.manager.latest_checkpoint}. "
        f"{self.advice}")

  def save(self, step):
    """Saves the state at ``step``, unless the weights are not finite."""
    # A finite loss can still come with an update that made the weights
    # Inf or NaN (seen as a bad loss one step later): never save those.
    if not bool(self._weights_are_finite()):
      raise self.non_finite("weights", step)
    if self._before_save:
      self._before_save(step)
    self.manager.save(checkpoint_number=step)

  def save_unless_saved(self, step):
    """Saves the state at ``step`` if the latest checkpoint is not of it."""
    latest = self.manager.latest_checkpoint
    if latest is None or int(latest.rsplit("-", 1)[1]) != step:
      self.save(step)


@dataclasses.dataclass(frozen=True)
class Periodic:
  """A hook the loop runs every ``every`` steps (0: never).

  Attributes:
    flag: the setting ``every`` comes from (named when it is refused).
    every: the interval in steps.
    run: ``run(step)``.
    at_last_step: also when the interval falls on the run's last step.
    timed: whether its time counts in the training throughput.
  """
  flag: str
  every: int
  run: Callable[[int], None]
  at_last_step: bool = True
  timed: bool = True


class Window:
  """Sums of the step metrics since the last progress line."""

  def __init__(self):
    self.start = time.perf_counter()
    self.steps = 0
    self.sums = {}

  def add(self, values):
    self.steps += 1
    for name, value in values.items():
      self.sums[name] = self.sums.get(name, 0.0) + value

  def seconds(self):
    return max(time.perf_counter() - self.start, 1e-9)

  def reset(self):
    self.start, self.steps, self.sums = time.perf_counter(), 0, {}


def compile_steps(step_fn, steps_per_execution):
  """``step_fn`` (iterator -> dict of cross-replica scalars) as one
  tf.function running ``count`` steps per call.

  Returns:
    ``run(iterator, count)`` -> dict of float lists, one value per step.
  """
  # No AutoGraph: the steps have no tensor-dependent Python control flow,
  # and converting the U-Net's code took longer than tracing it.
  if steps_per_execution == 1:
    one_step = tf.function(step_fn, autograph=False)
    return lambda iterator, count: {
        name: [float(value)] for name, value in one_step(iterator).items()
    }

  @tf.function(autograph=False)
  def some_steps(iterator, count):
    # The first step outside the loop gives the metrics' names and dtypes.
    first = step_fn(iterator)
    names = sorted(first)
    arrays = [
        tf.TensorArray(first[name].dtype, size=count).write(0, first[name])
        for name in names
    ]

    def body(i, arrays):
      values = step_fn(iterator)
      return i + 1, [
          array.write(i, values[name]) for array, name in zip(arrays, names)
      ]

    _, arrays = tf.while_loop(lambda i, _: i < count, body,
                              (tf.constant(1), arrays), parallel_iterations=1)
    return {name: array.stack() for name, array in zip(names, arrays)}

  def run(iterator, count):
    values = some_steps(iterator, tf.constant(count, tf.int32))
    return {
        name: [float(v) for v in value.numpy()]
        for name, value in values.items()
    }

  return run


@dataclasses.dataclass
class TrainingLoop:
  """What a run repeats until ``num_steps``.

  Attributes:
    step_fn: iterator -> dict of cross-replica-reduced scalar metrics of
      one step, "loss" among them (traced into the compiled call).
    checkpoints: the run's ``Checkpoints``.
    num_steps: the step to stop at.
    log_every: a progress line and TensorBoard scalars every this many
      steps (and at the last step); ``log_flag`` names the setting.
    report: ``report(step, window)`` -> the metrics of a progress line
      (written as ``train/<name>`` scalars); prints the line.
    hooks: ``Periodic`` hooks, run in order after each checkpoint.
    steps_per_execution: steps per compiled call.
    non_finite_detail: ``fn(values of the bad step)`` -> text added to a
      non-finite loss error.
  """
  step_fn: Callable
  checkpoints: Checkpoints
  num_steps: int
  log_every: int
  log_flag: str
  checkpoint_flag: str
  report: Callable
  hooks: Sequence[Periodic] = ()
  steps_per_execution: int = 1
  non_finite_detail: Callable = lambda values: ""

  def __post_init__(self):
    check_intervals(
        self.steps_per_execution, {
            self.log_flag: self.log_every,
            self.checkpoint_flag: self.checkpoints.every,
            **{hook.flag: hook.every for hook in self.hooks}
        })

  def run(self, iterator, strategy, writer, start_step, print_fn, *,
          digest_variables, at_end=None):
    """Trains from ``start_step`` to ``num_steps`` or a stop request.

    Args:
      iterator: the distributed data iterator ``step_fn`` takes.
      strategy: the run's strategy.
      writer: its summary writer (``summary_writer``).
      start_step: the step the weights are at.
      print_fn: where progress lines go.
      digest_variables: weights whose digest a multi-worker run prints at
        the end (``strategies.print_weights_digest``).
      at_end: ``fn(step)`` run when the run completes (not when stopped),
        with the summary writer as default.

    Returns:
      dict of the last logged metrics, "step" and "stopped".

    Raises:
      NonFiniteLossError: the loss or the weights became NaN or Inf.
    """
    compiled = compile_steps(self.step_fn, self.steps_per_execution)
    step, metrics = start_step, {}
    window = Window()
    run_start = time.perf_counter()
    with preemption.StopRequested() as stop, writer.as_default():
      while step < self.num_steps and not stop.requested:
        # Up to the next multiple of k, so the intervals fall between calls.
        count = min(self.steps_per_execution - step % self.steps_per_execution,
                    self.num_steps - step)
        values = compiled(iterator, count)
        for i in range(count):
          self._add_step({name: value[i] for name, value in values.items()},
                         step + i + 1, window)
        step += count
        metrics = self._after_call(step, window) or metrics
      self.checkpoints.save_unless_saved(step)
      writer.flush()
      if stop.requested:
        print_fn(f"stopped at step {step} on request; checkpoint saved")
        return dict(metrics, step=step, stopped=True)
      if step > start_step:
        print_fn(f"trained steps {start_step}..{step} in "
                 f"{time.perf_counter() - run_start:.1f} s")
      strategies.print_weights_digest(strategy, digest_variables, print_fn)
      if at_end:
        at_end(step)
      writer.flush()
    return dict(metrics, step=step, stopped=False)

  def _add_step(self, values, step, window):
    if not math.isfinite(values["loss"]):
      raise self.checkpoints.non_finite(f"loss {values['loss']}", step,
                                        self.non_finite_detail(values))
    window.add(values)

  def _after_call(self, step, window):
    """Progress, checkpoint and hooks due at ``step``; returns the logged
    metrics, or None."""
    metrics = None
    if step % self.log_every == 0 or step == self.num_steps:
      metrics = self.report(step, window)
      window.reset()
      for name, value in metrics.items():
        tf.summary.scalar(f"train/{name}", value, step=step)
    if step % self.checkpoints.every == 0:
      self.checkpoints.save(step)
    for hook in self.hooks:
      if hook.every and step % hook.every == 0 and (hook.at_last_step or
                                                    step < self.num_steps):
        hook_start = time.perf_counter()
        hook.run(step)
        if not hook.timed:
          window.start += time.perf_counter() - hook_start
    return metrics
