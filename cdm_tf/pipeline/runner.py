"""Runs the end-to-end job's steps, each a binary of tools/, resumably.

Each step runs as its own process: the binaries parse their own gin files
(gin's configuration is global to a process), set their own mixed-precision
policy and free their accelerator memory when they exit. Every binary
already resumes its own work (checkpoints, complete shards); the runner adds
step markers so a finished step is not started again:

  <output_dir>/steps/<step>.json   the step's command line and wall time,
                                   written after its product exists
  <output_dir>/logs/<step>.log     everything the step printed

A step is finished when its process exits 0 *and* its product (an export,
a manifest, an eval.json ...) exists: the training binaries also exit 0
when SIGTERM stopped them after a checkpoint. A marker whose command differs
from the one the current settings give means the output directory was made
with other settings; the runner stops rather than mixing them.
"""

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time

import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files

STEPS_DIR = "steps"
LOGS_DIR = "logs"
TOOLS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "tools")


class StepFailedError(RuntimeError):
  """A step's process failed or stopped before making its product."""

  def __init__(self, message, exit_status):
    super().__init__(message)
    self.exit_status = exit_status


class StepConflictError(configuration.ConflictError):
  """A finished step was run with another command line."""


@dataclasses.dataclass(frozen=True)
class Step:
  """One step of the job.

  Attributes:
    name: short identifier, also the marker's and the log's file name.
    tool: the binary's file name in tools/, e.g. "train.py".
    args: its flags.
    product: the file whose existence shows the step finished.
    description: one line for progress output.
  """
  name: str
  tool: str
  args: tuple
  product: str
  description: str = ""

  def command(self):
    return [os.path.join(TOOLS_DIR, self.tool), *self.args]


def marker_path(output_dir, name):
  return os.path.join(output_dir, STEPS_DIR, f"{name}.json")


def read_marker(output_dir, name):
  """The marker of a finished step, or None."""
  path = marker_path(output_dir, name)
  if not tf.io.gfile.exists(path):
    return None
  return files.read_json(path)


def _check_marker(output_dir, step, marker):
  recorded = marker.get("args")
  if recorded == list(step.args):
    return
  old, new = set(recorded or ()), set(step.args)
  raise StepConflictError(
      f"step {step.name!r} in {output_dir} was run with other settings "
      f"(only before: {sorted(old - new)}; only now: {sorted(new - old)}). "
      f"Use another --output_dir, or delete "
      f"{marker_path(output_dir, step.name)} and the step's output to "
      "redo it and the steps after it.")


class _ForwardSignals:
  """SIGTERM/SIGINT to the runner go to the running step, which saves a
  checkpoint and stops; the runner then stops without a marker."""

  def __init__(self):
    self.process = None
    self.received = None
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    if self.process is not None and self.process.poll() is None:
      # The binaries save on SIGTERM; SIGINT would only raise in them.
      self.process.send_signal(signal.SIGTERM)

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _stop_with_parent():
  """In the child, before exec: SIGTERM it when the runner dies, even by
  SIGKILL, so a restarted job never has two processes writing one run
  directory (Linux; elsewhere the child outlives a killed runner)."""
  try:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
  except OSError:
    return
  pr_set_pdeathsig = 1
  libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _run_process(step, log_path, forward, print_fn, env):
  prefix = f"[{step.name}] "
  tf.io.gfile.makedirs(os.path.dirname(log_path))
  # gfile: the output directory may be a bucket (gs://...).
  with tf.io.gfile.GFile(log_path, "a") as log:
    log.write(f"$ {' '.join([sys.executable, *step.command()])}\n")
    process = subprocess.Popen([sys.executable, *step.command()],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", env=env, bufsize=1,
                               preexec_fn=_stop_with_parent)
    forward.process = process
    try:
      for line in process.stdout:
        log.write(line)
        log.flush()
        if not _is_noise(line):
          print_fn(prefix + line.rstrip("\n"))
    finally:
      status = process.wait()
      forward.process = None
  return status


# TensorFlow's start-up chatter (kept in the step's log, not echoed).
_NOISE_PREFIXES = ("WARNING: All log messages before absl::InitializeLog",
                   "To enable the following instructions:", "I0000 ", "E0000 ",
                   "W0000 ")


def _is_noise(line):
  if line.startswith(_NOISE_PREFIXES):
    return True
  # absl/TF C++ lines: "I1122 03:47:27.123 ..." / "W1122 ..."
  head = line[:5]
  return (len(head) == 5 and head[0] in "IWE" and head[1:].isdigit() and
          line[5:6] == " ")


def run(output_dir, steps, print_fn=print, env=None):
  """Runs the steps in order, skipping finished ones.

  Args:
    output_dir: where markers and logs go.
    steps: ``Step``s in order.
    print_fn: progress lines (the steps' own output, prefixed by the step).
    env: the steps' environment; None is this process's, with TensorFlow's
      C++ logging reduced to errors unless TF_CPP_MIN_LOG_LEVEL is set.

  Returns:
    {step name: wall seconds of the run that finished it}.

  Raises:
    StepConflictError: a finished step was run with other flags.
    StepFailedError: a step failed or was stopped; finished steps keep
      their markers, so running again resumes at this step.
  """
  if env is None:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Before anything runs: a conflict anywhere stops the job up front.
  markers = {}
  for step in steps:
    marker = read_marker(output_dir, step.name)
    if marker is not None:
      _check_marker(output_dir, step, marker)
      markers[step.name] = marker
  seconds = {}
  with _ForwardSignals() as forward:
    for number, step in enumerate(steps, 1):
      label = f"step {number}/{len(steps)} {step.name}"
      marker = markers.get(step.name)
      if marker is not None and tf.io.gfile.exists(step.product):
        print_fn(f"{label}: finished before "
                 f"({marker['seconds']:.0f} s), skipped")
        seconds[step.name] = marker["seconds"]
        continue
      print_fn(f"{label}: {step.description or step.tool}")
      started = time.time()
      status = _run_process(
          step, os.path.join(output_dir, LOGS_DIR, f"{step.name}.log"), forward,
          print_fn, env)
      elapsed = time.time() - started
      if forward.received is not None:
        raise StepFailedError(
            f"{label} stopped by signal {forward.received} after "
            f"{elapsed:.0f} s; run again to resume it", 128 + forward.received)
      if status != 0:
        raise StepFailedError(
            f"{label} failed with exit status {status} after {elapsed:.0f} "
            f"s; see {os.path.join(output_dir, LOGS_DIR, step.name)}.log",
            # Killed by signal N (status -N): the shell's 128 + N.
            status if status > 0 else 128 - status)
      if not tf.io.gfile.exists(step.product):
        raise StepFailedError(
            f"{label} ended without writing {step.product} (stopped "
            "early?); run again to resume it", 1)
      seconds[step.name] = round(elapsed, 1)
      files.atomic_write_json(
          marker_path(output_dir, step.name), {
              "tool": step.tool, "args": list(step.args), "seconds": seconds[
                  step.name], "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")
          })
      print_fn(f"{label}: done in {elapsed:.0f} s")
  return seconds


def recorded_seconds(output_dir, steps):
  """{step name: wall seconds} of the steps that have a marker."""
  seconds = {}
  for step in steps:
    marker = read_marker(output_dir, step.name)
    if marker is not None:
      seconds[step.name] = marker["seconds"]
  return seconds
