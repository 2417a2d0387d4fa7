"""Stopping a training loop cleanly when the process is asked to stop.

Preemptible machines (TPU pods, spot GPUs) get SIGTERM before they go away;
the loops save a checkpoint and return instead of dying mid-step. SIGKILL
cannot be caught: the loops resume from their last periodic checkpoint.
"""

import signal


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
