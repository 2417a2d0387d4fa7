"""What a sweep keeps on disk besides the points' sets.

* ``sweep.json`` (``RECORD_FILE``): what the sweep is (stages, fixed
  settings, weights, feature network, references, metric settings),
  through ``settings_record``: a run with other settings in the same
  directory stops with ``settings_record.SettingsConflictError``; the grid
  itself may grow (new points are added, finished ones kept).
* each point's ``metrics.json`` (``sample_scores.METRICS_FILE``): its
  parameters, metrics and cost; written last, so a point with one is
  finished (``read_finished``).
* ``sweep.csv`` (``CSV_FILE``): one row per finished point, parameters
  and metrics, rewritten atomically after each point.
"""

import csv
import dataclasses
import io
import os

import tensorflow as tf

from cdm_tf import files
from cdm_tf import settings_record
from cdm_tf.metrics import sample_scores
from cdm_tf.models import export
from cdm_tf.sweeps import grid as grid_lib

RECORD_FILE = "sweep.json"
CSV_FILE = "sweep.csv"
_RECORD_VERSION = 1
# The columns after the metrics: what a point cost.
INFO_COLUMNS = ("resolution", "num_images", "network_evaluations_per_image",
                "generation_images_per_second")


@dataclasses.dataclass(frozen=True)
class FinishedPoint:
  """A point's parameters and metrics (its ``metrics.json``)."""
  point: grid_lib.SweepPoint
  metrics: list  # of MetricValue.as_dict() dicts
  info: dict


def fixed_settings(stages, stage_index, points, plan, settings, classes):
  """What the sweep record compares: every stage's settings but the swept
  fields, the exports' weights, the plan and the image settings (plus the
  grid, which may grow)."""
  swept = list(points[0].parameters)
  described = []
  for index, stage in enumerate(stages):
    values = stage.settings()
    if index == stage_index:
      for field in swept:
        values.pop(field, None)  # solver fields are absent for ddpm / ddim
    values["weights"] = export.weights_fingerprint(stage.model_dir)
    described.append(values)
  return {
      "version": _RECORD_VERSION,
      "stage_index": stage_index,
      "swept_fields": swept,
      "stages": described,
      "plan": plan.to_json(),
      "generation": settings.stored(),
      "classes": [c.synset for c in classes],
      "grid": {
          k: list(
              dict.fromkeys(
                  grid_lib.format_value(p.parameters[k])
                  for p in points)) for k in swept
      },
  }


def check_or_write_record(output_dir, record):
  """Refuses a sweep whose ``sweep.json`` differs from ``record`` (but for
  its grid, which may grow), then writes ``record``.

  Raises:
    settings_record.SettingsConflictError: the recorded sweep differs.
  """
  path = os.path.join(output_dir, RECORD_FILE)

  def conflict(found):
    return (f"{output_dir} holds a sweep made with other settings "
            f"({settings_record.summary(found)}; see {path}); use a new "
            "output directory or the same settings")

  # A grid may grow; its points keep their names.
  settings_record.check_or_write(path, record, conflict, ignore=("grid",),
                                 rewrite=True)


def write_point(point_dir, point, metrics, info):
  """Writes a point's ``metrics.json`` (last: a point with it is finished);
  returns its ``FinishedPoint``."""
  files.atomic_write_json(
      os.path.join(point_dir, sample_scores.METRICS_FILE), {
          "parameters": point.parameters, "name": point.name,
          "metrics": metrics, "info": info
      })
  return FinishedPoint(point, metrics, info)


def read_finished(point_dir, point):
  """The point's ``FinishedPoint`` if its ``metrics.json`` is there, else
  None.

  Raises:
    settings_record.SettingsConflictError: the file holds another point's
      metrics.
  """
  path = os.path.join(point_dir, sample_scores.METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  stored = files.read_json(path)
  names = {k: grid_lib.format_value(v) for k, v in stored["parameters"].items()}
  expected = {k: grid_lib.format_value(v) for k, v in point.parameters.items()}
  if names != expected:
    raise settings_record.SettingsConflictError(
        f"{path} holds the metrics of {stored['parameters']}, not "
        f"{point.parameters}")
  return FinishedPoint(point, stored["metrics"], stored.get("info", {}))


def _metric_columns(finished):
  """(header, metric label, key of the metric dict) of every metric, and
  of the standard deviation of those that have one, in first-seen order."""
  columns = []
  seen = set()
  for result in finished:
    for metric in result.metrics:
      if metric["label"] not in seen:
        seen.add(metric["label"])
        columns.append((metric["label"], metric["label"], "value"))
        if metric.get("std") is not None:
          columns.append((f"{metric['label']} std", metric["label"], "std"))
  return columns


def write_csv(path, finished, parameter_names):
  """One row per finished point: name, parameters, metric values (and the
  standard deviation of those that have one), cost. Written atomically."""
  columns = _metric_columns(finished)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(
      ["point", *parameter_names, *[c[0] for c in columns], *INFO_COLUMNS])
  for result in finished:
    by_label = {m["label"]: m for m in result.metrics}
    row = [result.point.name]
    row += [
        grid_lib.format_value(result.point.parameters[p])
        for p in parameter_names
    ]
    for _, label, key in columns:
      value = by_label.get(label, {}).get(key)
      row.append("" if value is None else value)
    row += [result.info.get(c, "") for c in INFO_COLUMNS]
    writer.writerow(row)
  files.atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
  return path


def read_csv(path):
  """The rows of a ``sweep.csv`` as dicts of strings."""
  with tf.io.gfile.GFile(path) as f:
    return list(csv.DictReader(f))
