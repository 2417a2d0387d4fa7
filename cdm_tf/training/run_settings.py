"""What a run's checkpoints were made with: the model (its configuration
and variable shapes) and the optimizer, recorded in
``<model_dir>/checkpoint_settings.json``.

A run resumed with another model or optimizer would fail deep inside the
checkpoint restore (a shape mismatch) or, worse, restore part of the state
and go on (another optimizer's slots are simply left out). Training loops
compare first and refuse, saying what differs. The number of steps, the
data and the mixed-precision policy may change between runs.
"""

import os

from cdm_tf import files
from cdm_tf import settings_record

SETTINGS_FILE = "checkpoint_settings.json"
# Keys compared nowhere: a dtype policy may change between runs (weights
# are float32 either way); Keras names layers by a per-process counter.
_IGNORED_KEYS = frozenset({"dtype", "name"})


def describe(model_config, optimizer, variables):
  """The record of a run: ``model_config`` (a JSON-like description of the
  model), the optimizer's class and configuration (inside any loss-scale
  wrapper) and the shapes of ``variables`` in order."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  optimizer_config = dict(inner.get_config())
  optimizer_config.pop("name", None)
  return settings_record.plain({
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
    SettingsConflictError: the recorded settings differ (the message lists
      how).
  """
  path = os.path.join(model_dir, SETTINGS_FILE)

  def conflict(found):
    return (f"{model_dir} holds a run made with another model or optimizer "
            f"({settings_record.summary(found)}; recorded in {path}): resume "
            "it with its own settings, or train in a new --model_dir")

  if resuming:
    # Checkpoints that predate the record get one.
    settings_record.check_or_write(path, settings, conflict, compare=_summary,
                                   write=chief)
  elif chief:  # a new run
    files.atomic_write_json(path, settings)


def _summary(recorded, current):
  """The differences, the optimizer's class first and the variable shapes
  counted rather than listed."""
  found = []
  for key in ("optimizer", "model"):
    old, new = recorded.get(key, {}), current.get(key, {})
    if key == "optimizer" and old.get("class") != new.get("class"):
      return [f"optimizer: {old.get('class')} -> {new.get('class')}"]
    found += settings_record.differences(old, new, _IGNORED_KEYS, key)
  old, new = recorded.get("variable_shapes"), current.get("variable_shapes")
  if old != new:
    if len(old or ()) != len(new or ()):
      found.append(f"{len(old or ())} variables -> {len(new or ())}")
    else:
      changed = sum(a != b for a, b in zip(old, new))
      found.append(f"{changed} of {len(old)} variables change shape")
  return found
