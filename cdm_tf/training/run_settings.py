"""What a run's checkpoints were made with: the model (its configuration
and variable shapes) and the optimizer, recorded in
``<model_dir>/checkpoint_settings.json``.

A run resumed with another model or optimizer would fail deep inside the
checkpoint restore (a shape mismatch) or, worse, restore part of the state
and go on (another optimizer's slots are simply left out). Training loops
compare first and refuse, saying what differs. The number of steps, the
data and the mixed-precision policy may change between runs.
"""

import json
import os

import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files

SETTINGS_FILE = "checkpoint_settings.json"
# Keys compared nowhere: a dtype policy may change between runs (weights
# are float32 either way); Keras names layers by a per-process counter.
_IGNORED_KEYS = frozenset({"dtype", "name"})
_SHOWN_DIFFERENCES = 5


def describe(model_config, optimizer, variables):
  """The record of a run: ``model_config`` (a JSON-like description of the
  model), the optimizer's class and configuration (inside any loss-scale
  wrapper) and the shapes of ``variables`` in order."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  optimizer_config = dict(inner.get_config())
  optimizer_config.pop("name", None)
  return _plain({
      "model": model_config,
      "optimizer": {"class": type(inner).__name__, **optimizer_config},
      "variable_shapes": [list(v.shape) for v in variables],
  })


def check_or_record(model_dir, settings, resuming, chief=True):
  """Refuses to resume a run made with other settings; records them.

  Args:
    model_dir: the run's directory.
    settings: ``describe(...)`` of this run.
    resuming: whether a checkpoint of ``model_dir`` is about to be restored.
    chief: whether this process writes the run's files.

  Raises:
    ConflictError: the recorded settings differ (the message lists how).
  """
  path = os.path.join(model_dir, SETTINGS_FILE)
  if resuming and tf.io.gfile.exists(path):
    differences = _summary(files.read_json(path), settings)
    if differences:
      shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
      more = len(differences) - _SHOWN_DIFFERENCES
      raise configuration.ConflictError(
          f"{model_dir} holds a run made with another model or optimizer "
          f"({shown}{f'; and {more} more' if more > 0 else ''}; recorded in "
          f"{path}): resume it with its own settings, or train in a new "
          "--model_dir")
    return
  # A new run, or one whose checkpoints predate the record.
  if chief:
    files.atomic_write_json(path, settings)


def _summary(recorded, current):
  """The differences, the optimizer's class first and the variable shapes
  counted rather than listed."""
  found = []
  for key in ("optimizer", "model"):
    old, new = recorded.get(key, {}), current.get(key, {})
    if key == "optimizer" and old.get("class") != new.get("class"):
      return [f"optimizer: {old.get('class')} -> {new.get('class')}"]
    found += differences_between(old, new, key)
  old, new = recorded.get("variable_shapes"), current.get("variable_shapes")
  if old != new:
    if len(old or ()) != len(new or ()):
      found.append(f"{len(old or ())} variables -> {len(new or ())}")
    else:
      changed = sum(a != b for a, b in zip(old, new))
      found.append(f"{changed} of {len(old)} variables change shape")
  return found


def differences_between(recorded, current, where=""):
  """``"<key path>: <recorded> -> <current>"`` for every difference
  between two JSON-like values, keys in ``_IGNORED_KEYS`` left out."""
  if isinstance(recorded, dict) and isinstance(current, dict):
    found = []
    for key in sorted(set(recorded) | set(current)):
      if key in _IGNORED_KEYS:
        continue
      path = f"{where}.{key}" if where else key
      if key not in recorded:
        found.append(f"{path}: not set -> {current[key]!r}")
      elif key not in current:
        found.append(f"{path}: {recorded[key]!r} -> not set")
      else:
        found += differences_between(recorded[key], current[key], path)
    return found
  if (isinstance(recorded, list) and isinstance(current, list) and
      len(recorded) == len(current)):
    found = []
    for index, (old, new) in enumerate(zip(recorded, current)):
      found += differences_between(old, new, f"{where}[{index}]")
    return found
  if recorded != current:
    if isinstance(recorded, list) and isinstance(current, list):
      return [f"{where}: {len(recorded)} entries -> {len(current)}"]
    return [f"{where}: {recorded!r} -> {current!r}"]
  return []


def _plain(value):
  """JSON types only (tuples become lists), as the record reads back."""
  return json.loads(json.dumps(value, default=repr))
