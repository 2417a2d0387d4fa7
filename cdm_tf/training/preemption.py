"""Stopping a training loop cleanly and resuming it after a stop or a kill.

Preemptible machines (TPU pods, spot GPUs) get SIGTERM before they go away;
the loops save a checkpoint and return instead of dying mid-step. SIGKILL
cannot be caught: the loops resume from their last periodic checkpoint.
"""

import os
import signal

import tensorflow as tf

from cdm_tf.training import strategies


class StopRequested:
  """Within ``with StopRequested() as stop:``, SIGTERM sets ``stop.requested``
  instead of ending the process; the previous handler comes back on exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


def checkpoint_manager(checkpoint, model_dir, strategy, max_to_keep):
  """The ``CheckpointManager`` of a run's ``<model_dir>/checkpoints``.

  Every worker must take part in saving; only the chief's copy is kept, the
  others write to a temporary directory of their own.
  """
  directory = os.path.join(model_dir, "checkpoints")
  if not strategies.is_chief(strategy):
    directory = os.path.join(
        directory, f"worker_{strategy.cluster_resolver.task_id}_tmp")
  return tf.train.CheckpointManager(checkpoint, directory,
                                    max_to_keep=max_to_keep)


def restore_latest(checkpoint, manager):
  """Restores the manager's latest checkpoint; returns its path, or None."""
  if not manager.latest_checkpoint:
    return None
  status = checkpoint.restore(manager.latest_checkpoint)
  status.assert_existing_objects_matched()
  return manager.latest_checkpoint
