"""Settings records: what a job that writes into a directory over several
runs was started with, kept as JSON next to its output, so a rerun with
other settings is refused (saying what differs) instead of mixing two
jobs' results in one place.

Used by the training loops (``checkpoint_settings.json``), synthetic-set
generation (``generation-<split>.json``), sweeps (``sweep.json``) and the
embedded data's conversion (its manifest's settings).
"""

import json

import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files

# How many differences a refusal lists before "and N more".
SHOWN_DIFFERENCES = 5


class SettingsConflictError(configuration.ConflictError):
  """A directory holds the output of a job made with other settings."""


def plain(value):
  """JSON types only (tuples become lists), as a record reads back."""
  return json.loads(json.dumps(value, default=repr))


def differences(recorded, current, ignore=(), where=""):
  """``"<key path>: <recorded> -> <current>"`` for every difference
  between two JSON-like values; keys named in ``ignore`` are skipped at
  any depth."""
  if isinstance(recorded, dict) and isinstance(current, dict):
    found = []
    for key in sorted(set(recorded) | set(current)):
      if key in ignore:
        continue
      path = f"{where}.{key}" if where else key
      if key not in recorded:
        found.append(f"{path}: not set -> {current[key]!r}")
      elif key not in current:
        found.append(f"{path}: {recorded[key]!r} -> not set")
      else:
        found += differences(recorded[key], current[key], ignore, path)
    return found
  if (isinstance(recorded, list) and isinstance(current, list) and
      len(recorded) == len(current)):
    found = []
    for index, (old, new) in enumerate(zip(recorded, current)):
      found += differences(old, new, ignore, f"{where}[{index}]")
    return found
  if recorded != current:
    if isinstance(recorded, list) and isinstance(current, list):
      return [f"{where}: {len(recorded)} entries -> {len(current)}"]
    return [f"{where}: {recorded!r} -> {current!r}"]
  return []


def summary(found):
  """The first ``SHOWN_DIFFERENCES`` differences joined, then a count."""
  shown = "; ".join(found[:SHOWN_DIFFERENCES])
  more = len(found) - SHOWN_DIFFERENCES
  return shown + (f"; and {more} more" if more > 0 else "")


def read(path):
  """The record at ``path``, or None if there is none."""
  return files.read_json(path) if tf.io.gfile.exists(path) else None


def check(path, settings, conflict, *, ignore=(), compare=None):
  """Refuses ``settings`` if the record at ``path`` differs from them.

  Args:
    path: the record's file.
    settings: this run's JSON-like settings.
    conflict: ``conflict(found)`` -> the refusal's message, given the
      differences (strings, as ``differences`` makes them).
    ignore: keys not compared, at any depth.
    compare: ``compare(recorded, settings)`` -> differences, for records
      that summarise some differences (default ``differences``).

  Returns:
    Whether a record was there.

  Raises:
    SettingsConflictError: the record differs.
  """
  recorded = read(path)
  if recorded is None:
    return False
  found = (compare or (lambda a, b: differences(a, b, ignore)))(recorded,
                                                                plain(settings))
  if found:
    raise SettingsConflictError(conflict(found))
  return True


def check_or_write(path, settings, conflict, *, ignore=(), compare=None,
                   rewrite=False, write=True):
  """``check``, then writes the record (atomically) if there was none, or
  always with ``rewrite`` (for ignored keys that may grow, e.g. a sweep's
  grid); ``write=False`` only checks (a non-chief worker)."""
  existed = check(path, settings, conflict, ignore=ignore, compare=compare)
  if write and (rewrite or not existed):
    files.atomic_write_json(path, settings)
