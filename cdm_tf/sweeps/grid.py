"""The points of a sweep: the grid expanded, named and checked.

A grid is {``Stage`` field: [values]} expanded in its key order, or a list
of explicit points [{``Stage`` field: value}, ...]; every point is the
configured cascade with the swept stage's fields replaced
(``point_stages``), checked before anything runs. A point's name is made
of its parameters alone, so it stays the same when the grid grows.
``describe`` is the ``--dry_run`` text: the points and the network
evaluations they cost.
"""

import dataclasses
import itertools
import re

import gin
import tensorflow as tf

from cdm_tf.generation import cascade as cascade_lib

# Stage fields a sweep may vary; the model is what is being tuned, not swept.
SWEEPABLE_FIELDS = tuple(f.name
                         for f in dataclasses.fields(cascade_lib.Stage)
                         if f.name != "model_dir")
# Characters kept in point directory names (values such as "10,20,30" too).
_UNSAFE = re.compile(r"[^A-Za-z0-9.,+_-]")
# Fields whose integer values are floats to ``Stage``.
_FLOAT_FIELDS = ("guidance_weight", "logvar_coeff", "eta", "aug_level",
                 "dynamic_threshold_percentile")


@dataclasses.dataclass(frozen=True)
class SweepPoint:
  """One point of the grid.

  Attributes:
    index: position in the grid (key-major, as ``itertools.product``).
    parameters: {Stage field: value}, in the grid's key order.
  """
  index: int
  parameters: dict

  @property
  def name(self):
    """Directory name made of the parameters alone, e.g.
    ``guidance_weight_1.25-logvar_coeff_0``: stable when the grid grows."""
    return "-".join(f"{key}_{_UNSAFE.sub('_', format_value(value))}"
                    for key, value in self.parameters.items())

  def describe(self):
    return ", ".join(f"{key}={format_value(value)}"
                     for key, value in self.parameters.items())


def format_value(value):
  """1.0 -> "1", 0.25 -> "0.25", "ddim32" -> "ddim32", None -> "None"."""
  if isinstance(value, float):
    return format(value, "g")
  return str(value)


def _normalise(field, value):
  """Grid values as ``Stage`` takes them: step counts as respacing strings."""
  if field == "timestep_respacing" and isinstance(value, int):
    return str(value)
  if isinstance(value, bool) or value is None or isinstance(value, str):
    return value
  if isinstance(value, int) and field in _FLOAT_FIELDS:
    return float(value)
  return value


def _check_field(field):
  if field not in SWEEPABLE_FIELDS:
    raise ValueError(f"cannot sweep {field!r}: not a Stage field (one of "
                     f"{', '.join(SWEEPABLE_FIELDS)})")


def expand_grid(grid):
  """The ``SweepPoint``s of {Stage field: [values]}, key-major; or of a list
  of explicit points [{Stage field: value}, ...] with the same fields (for
  settings that do not form a product, e.g. ``ddpm`` with a respacing next
  to solvers with steps, the other field None).

  Raises:
    ValueError: an empty grid or value list, an unknown field, or a value
      (point) given twice.
  """
  if not grid:
    raise ValueError("the sweep grid is empty: bind "
                     "sweep.SweepSettings.grid to {Stage field: [values], "
                     "...}")
  if isinstance(grid, (list, tuple)):
    return _explicit_points(grid)
  fields, values = [], []
  for field, options in dict(grid).items():
    _check_field(field)
    if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
      options = [options]
    options = [_normalise(field, v) for v in options]
    if not options:
      raise ValueError(f"the grid gives {field!r} no values")
    names = [format_value(v) for v in options]
    if len(set(names)) != len(names):
      raise ValueError(f"the grid gives {field!r} a value twice: {names}")
    fields.append(field)
    values.append(options)
  return [
      SweepPoint(index, dict(zip(fields, combination)))
      for index, combination in enumerate(itertools.product(*values))
  ]


def _explicit_points(grid):
  points = []
  for index, parameters in enumerate(grid):
    if not isinstance(parameters, dict) or not parameters:
      raise ValueError(f"sweep point {index} must be a non-empty "
                       f"{{Stage field: value}} dict, got {parameters!r}")
    for field in parameters:
      _check_field(field)
    if list(parameters) != list(grid[0]):
      raise ValueError(f"sweep point {index} sets {list(parameters)}, the "
                       f"first point {list(grid[0])}: give every point the "
                       "same fields (None where one does not apply)")
    points.append(
        SweepPoint(index, {
            field: _normalise(field, value)
            for field, value in parameters.items()
        }))
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise ValueError(f"the sweep gives a point twice: {names}")
  return points


def configured_stage_names():
  """Names of the stages in gin's ``Cascade.stages``: their scopes
  (``base`` for ``@base/cascade.Stage()``), or their positions."""
  names = []
  for position, reference in enumerate(gin.query_parameter("Cascade.stages")):
    scopes = getattr(reference, "scopes", None)
    names.append(scopes[-1] if scopes else str(position))
  return names


def resolve_stage(stage, num_stages, stage_names=None):
  """The index of ``stage``: an index, or one of ``stage_names``."""
  if isinstance(stage, str) and not stage.lstrip("-").isdigit():
    names = list(stage_names or ())
    if stage not in names:
      raise ValueError(f"no stage named {stage!r}; the cascade's stages are "
                       f"{names or list(range(num_stages))}")
    return names.index(stage)
  index = int(stage)
  if not 0 <= index < num_stages:
    raise ValueError(f"stage {index} outside the cascade's 0..{num_stages - 1}")
  return index


def point_stages(stages, stage_index, parameters):
  """The cascade's stages with stage ``stage_index``'s fields replaced
  (``Stage`` checks the combination)."""
  stages = list(stages)
  try:
    stages[stage_index] = dataclasses.replace(stages[stage_index], **parameters)
  except (TypeError, ValueError) as e:
    raise ValueError(f"sweep point {parameters}: {e}") from e
  return stages


def reuses_earlier_stages(stages, stage_index, points):
  """Whether the earlier stages' outputs are the same at every point: the
  swept stage is not the first, and no point truncates its input (then
  the earlier stage stops at the point's own level)."""
  if stage_index == 0:
    return False
  return not any(
      point_stages(stages, stage_index, p.parameters)[stage_index].truncated
      for p in points)


def _evaluations(stage_list):
  """Network evaluations per image of ``stage_list``, None when an export
  cannot be read."""
  try:
    return cascade_lib.estimated_evaluations_per_image(stage_list)
  except (OSError, ValueError, KeyError, tf.errors.OpError):
    return None


def describe(stages, stage_index, points, num_images, reuse_earlier,
             stage_names=None):
  """The ``--dry_run`` text: points and the network evaluations they cost
  (from the exports' configs; "?" when an export is not there)."""
  name = (stage_names[stage_index] if stage_names else str(stage_index))
  lines = [
      f"sweep of stage {name!r} (index {stage_index}) over "
      f"{len(points)} points of {num_images} images each"
  ]
  total = 0
  known = True
  if reuse_earlier:
    earlier = _evaluations(stages[:stage_index])
    lines.append(f"earlier stages generated once and reused: "
                 f"{earlier if earlier is not None else '?'} evaluations per "
                 "image")
    known &= earlier is not None
    total += (earlier or 0) * num_images
  for point in points:
    point_list = point_stages(stages, stage_index, point.parameters)
    count = _evaluations(point_list[stage_index if reuse_earlier else 0:])
    known &= count is not None
    total += (count or 0) * num_images
    lines.append(f"  {point.index:4d}  {point.describe()}  "
                 f"({count if count is not None else '?'} evaluations per "
                 "image)")
  lines.append(f"network evaluations in all: {total:,}" if known else
               "network evaluations in all: unknown (exports not found)")
  return "\n".join(lines)
