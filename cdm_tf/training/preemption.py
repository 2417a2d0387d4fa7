"""Stopping a training loop cleanly and resuming it after a stop or a kill.

Preemptible machines (TPU pods, spot GPUs) get SIGTERM before they go away;
the loops save a checkpoint and return instead of dying mid-step. SIGKILL
cannot be caught: the loops resume from their last periodic checkpoint.
"""

import os
import shutil
import signal
import tempfile

import tensorflow as tf

from cdm_tf.training import strategies

# A run's checkpoints, under its model directory.
CHECKPOINTS_DIR = "checkpoints"


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

  Every worker of a multi-worker run must take part in saving, but only the
  chief's copy is kept: the others get a ``WorkerCheckpoints``, which writes
  to a private temporary directory and deletes it, and restores from the
  chief's directory (which every worker must be able to read).
  """
  directory = os.path.join(model_dir, CHECKPOINTS_DIR)
  if not strategies.is_chief(strategy):
    return WorkerCheckpoints(checkpoint, directory)
  return tf.train.CheckpointManager(checkpoint, directory,
                                    max_to_keep=max_to_keep)


class WorkerCheckpoints:
  """A non-chief worker's stand-in for the chief's ``CheckpointManager``.

  ``latest_checkpoint`` names the chief's copy of the last checkpoint this
  worker saved (or the chief's latest when it started), so every worker
  restores the same state and decides to save at the same steps. Saves go
  to a fresh directory under the system's temporary directory, removed
  right after: a worker writes nothing into the chief's ``model_dir`` (often
  the same path on a shared file system), and two workers on one machine
  never share a directory.
  """

  def __init__(self, checkpoint, chief_directory):
    self._checkpoint = checkpoint
    self.directory = chief_directory
    # What the chief's CheckpointManager reads when it starts.
    state = tf.train.get_checkpoint_state(chief_directory)
    self.latest_checkpoint = state.model_checkpoint_path if state else None

  def save(self, checkpoint_number):
    scratch = tempfile.mkdtemp(prefix="cdm_tf_worker_checkpoint_")
    try:
      path = tf.train.CheckpointManager(
          self._checkpoint, scratch,
          max_to_keep=1).save(checkpoint_number=checkpoint_number)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    self.latest_checkpoint = os.path.join(self.directory,
                                          os.path.basename(path))
    return self.latest_checkpoint


def restore_latest(checkpoint, manager):
  """Restores the manager's latest checkpoint; returns its path, or None."""
  if not manager.latest_checkpoint:
    return None
  status = checkpoint.restore(manager.latest_checkpoint)
  status.assert_existing_objects_matched()
  return manager.latest_checkpoint
