"""What every binary in tools/ shares: a quiet TensorFlow start-up, absl
flag parsing, and expected failures as one ``error: ...`` line with a
documented exit status.

Exit statuses:
  0  done.
  1  an unexpected failure (a bug): Python's traceback.
  2  bad input: flags, gin files or bindings, data (a corrupt or missing
     file, a wrong label), model files, an output that cannot be written
     (read-only, disk full, over the file size limit) or a batch too large
     for the memory. Refused before anything is written where it can be
     found out in advance; otherwise nothing already written is changed.
  3  a conflict with earlier work (a run, set or sweep in the output
     directory made with other settings, a worker already running) or a
     non-finite training loss.

``--verbosity=1`` (absl's flag) adds the traceback to the error line.

Import this module before anything that imports TensorFlow: it hides the
lines TensorFlow's native libraries print while they load and find devices
(oneDNN, CUDA stubs), which no log level reaches, and sets
TF_CPP_MIN_LOG_LEVEL to 2 (errors only) unless it is set.
``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.
"""

import errno
import importlib
import os
import re
import sys
import traceback


def _import_tensorflow_quietly():
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or ("tensorflow"
                                                       in sys.modules):
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    tensorflow = importlib.import_module("tensorflow")
    # Finding the devices loads the CUDA stubs, which log their own failure
    # on a machine without GPUs.
    tensorflow.config.list_physical_devices()
  finally:
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    os.close(devnull)


_import_tensorflow_quietly()

# These imports follow _import_tensorflow_quietly() on purpose: it silences
# TensorFlow's start-up log, so they cannot move to the top (E402).
# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import tensorflow as tf  # noqa: E402

from cdm_tf import configuration  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

EXIT_BAD_INPUT = 2
EXIT_CONFLICT = 3

# TensorFlow errors that mean the input (a file, a record, a value) is bad
# (the library's own checks inside tf.data and tf.function raise them) or
# the output cannot be written: TF's file writers report a full disk as
# ResourceExhausted and the file size limit as OutOfRange.
_BAD_INPUT_OP_ERRORS = (tf.errors.DataLossError, tf.errors.NotFoundError,
                        tf.errors.InvalidArgumentError,
                        tf.errors.PermissionDeniedError,
                        tf.errors.FailedPreconditionError,
                        tf.errors.ResourceExhaustedError,
                        tf.errors.OutOfRangeError)


def exit_status(error):
  """The exit status an expected failure maps to, or None for a bug."""
  status = getattr(error, "exit_status", None)
  if isinstance(status, int):
    return status
  if isinstance(error, configuration.ConflictError):
    return EXIT_CONFLICT
  if isinstance(error, (ValueError, OSError) + _BAD_INPUT_OP_ERRORS):
    return EXIT_BAD_INPUT
  return None


def error_message(error):
  """One line saying what went wrong, without TensorFlow's graph dump."""
  if isinstance(error, tf.errors.OpError):
    text = _op_error_text(error.message)
  else:
    text = str(error)
    if isinstance(error, OSError) and error.filename and (str(error.filename)
                                                          not in text):
      text = f"{text}: {error.filename}"
  if _is_out_of_room(error):
    text += ("; the disk is full or a file size limit was reached: make room, "
             "then run again")
  # Gin appends "In call to configurable 'X' (<function ...>)" lines.
  text = re.sub(r"\s*In call to configurable '[^']*' \([^\n]*\)", "", text)
  return " ".join(text.split()) or type(error).__name__


def _is_out_of_room(error):
  if isinstance(error, OSError):
    return error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
  return isinstance(
      error,
      (tf.errors.ResourceExhaustedError, tf.errors.OutOfRangeError)) and any(
          s in error.message
          for s in ("No space left", "File too large", "quota exceeded"))


def _op_error_text(message):
  # tf.debugging.Assert: "assertion failed: [<our message>]".
  asserted = re.findall(r"assertion failed: \[(.*?)\]\s*(?:\n|$)", message)
  if asserted:
    return asserted[-1]
  lines = []
  in_stack = False
  for line in message.splitlines():
    stripped = line.strip()
    if stripped.startswith("Detected at node") or stripped.startswith(
        "Detected in the following"):
      in_stack = True
      continue
    if in_stack:
      # The stack ends at the first line that is not a frame.
      if (not stripped or stripped.startswith("File ") or
          line.startswith("  ") or stripped == "<stack traces unavailable>"):
        continue
      in_stack = False
    if not stripped or stripped == "Graph execution error:":
      continue
    lines.append(re.sub(r"\s*\[\[.*?\]\]|\s*\[Op:[^\]]*\]", "", stripped))
  return " ".join(text for text in lines if text)


def exit_with_error(message, status=EXIT_BAD_INPUT):
  """Prints "error: <message>" (no traceback) and exits with ``status``."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags(argv):
  """absl's flag parser, but a bad, unknown or missing flag is one error
  line and exit status 2."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(f"{e} (see --helpfull)")
  if len(remaining) > 1:
    exit_with_error(f"unexpected arguments {remaining[1:]}")
  return remaining


def run(main):
  """``app.run(main)`` with the flag parsing and exit statuses above."""

  def main_with_exit_statuses(argv):
    show_traceback = flags.FLAGS.verbosity >= 1  # before main changes it
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      status = exit_status(e)
      if status is None:
        raise
      if show_traceback:
        traceback.print_exc()
      exit_with_error(error_message(e), status)

  app.run(main_with_exit_statuses, flags_parser=parse_flags)
