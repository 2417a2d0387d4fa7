"""Sampler-parameter sweeps of one cascade stage, scored point by point.

Azizi et al. (2023, Sec. 4.2, Figures 3-4 and A.1-A.6) choose the sampler
of each stage by sweeping it: guidance weight x log-variance mixing x
sampling steps for the 64x64 base model, then guidance x noise (conditioning)
augmentation x log-variance x steps for the 64->256 stage with the base
fixed, scoring every point by FID, IS and the Classification Accuracy Score.
``run`` does that for any ``Stage`` fields of one stage:

* The grid (``grid``, a dict of ``Stage`` field -> values, bound in gin) is
  expanded in its key order; every point is the configured cascade with
  that stage's fields replaced, checked before anything runs.
* Every point generates the same ``num_images`` examples
  (``plan.uniform_counts``: class-balanced, and every prefix is too) with
  ``synthetic_dataset.generate`` into ``points/<name>/``: the same example
  ids and seeds at every point, so points differ only in the swept fields.
  The point directory is an ordinary synthetic set (shards, manifest,
  provenance), identical to what ``tools/generate.py --total=<num_images>``
  writes with those settings.
* Sweeping a later stage, the earlier stages' outputs do not change from
  point to point: they are generated once (``earlier_stages/``, a lossless
  PNG synthetic set at the earlier resolution) and every point samples only
  its own stage and the ones after it from them. The handover is the one
  ``Cascade.sample`` makes (the previous stage's z_0 on the 8-bit grid, then
  corrupted by the stage's own augmentation), so the pixels are the same as
  a full regeneration's. A truncated handover (the earlier stage stops at
  the swept stage's level s) depends on the point, and is regenerated.
* Metrics (``sample_quality.evaluate``: FID@N against each reference split,
  KID, precision/recall, IS; optionally CAS through ``cas_fn``) are computed
  on the point's images with the given feature network, each labelled with
  it, and written to ``points/<name>/metrics.json``.

Every step survives a kill: a point with a ``metrics.json`` is skipped, a
point killed while generating resumes at its first incomplete shard (the
generation record refuses other settings), the earlier stages' set likewise.
``sweep.json`` records what the sweep is (stages, fixed settings, weights,
feature network, references, metric settings) and a run with other settings
in the same directory stops with ``SweepConflictError``; the grid itself may
grow (new points are added, finished ones kept). After each point
``sweep.csv`` (one row per finished point: parameters and metrics) is
rewritten atomically; at the end the plots of ``sweep_plots`` are written
to ``plots/``.
"""

import csv
import dataclasses
import gc
import hashlib
import io
import itertools
import os
import re
import time
from typing import Optional

import gin
import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.data import mixing
from cdm_tf.data import schema
from cdm_tf.data import synthetic_writer
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import sweep_plots
from cdm_tf.generation import synthetic_dataset
from cdm_tf.metrics import fid
from cdm_tf.metrics import kid
from cdm_tf.metrics import precision_recall
from cdm_tf.metrics import report
from cdm_tf.metrics import sample_quality
from cdm_tf.models import export

RECORD_FILE = "sweep.json"
CSV_FILE = "sweep.csv"
METRICS_FILE = "metrics.json"
POINTS_DIR = "points"
EARLIER_STAGES_DIR = "earlier_stages"
PLOTS_DIR = "plots"
SPLIT = "train"
CAS_METRICS = {"top1": "CAS top-1", "top5": "CAS top-5"}
DEFAULT_CAS_NAME = "CAS classifier trained on the point's images"
# Stage fields a sweep may vary; the model is what is being tuned, not swept.
SWEEPABLE_FIELDS = tuple(f.name for f in dataclasses.fields(cascade_lib.Stage)
                         if f.name != "model_dir")
_RECORD_VERSION = 1
# Characters kept in point directory names (values such as "10,20,30" too).
_UNSAFE = re.compile(r"[^A-Za-z0-9.,+_-]")


class SweepConflictError(configuration.ConflictError):
  """The output directory holds a sweep made with other settings."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReferenceSpec:
  """The real splits every point is compared with (their statistics are
  computed once per resolution and cached, ``fid.reference_statistics``).

  Attributes:
    data_dir: real ImageNet-format data (the tool's ``--real_data_dir``).
    splits: reference splits; FID is reported against each.
    num_examples: use the first N images of each split; None uses all.
    keep_features: real features kept for KID and precision/recall (0: no
      KID or precision/recall).
    cache_dir: where statistics are cached when ``data_dir`` is read-only.
  """
  data_dir: str
  splits: tuple = ("train", "validation")
  num_examples: Optional[int] = None
  keep_features: int = 10_000
  cache_dir: Optional[str] = None

  def description(self):
    """What decides the statistics, for the sweep record."""
    return {"data_dir": self.data_dir.rstrip("/"),
            "splits": list(self.splits), "num_examples": self.num_examples,
            "keep_features": self.keep_features}


# ------------------------------------------------------------------- grid


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
  if isinstance(value, int) and field in (
      "guidance_weight", "logvar_coeff", "eta", "aug_level",
      "dynamic_threshold_percentile"):
    return float(value)
  return value


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
    raise ValueError("the sweep grid is empty: bind sweep.run.grid to "
                     "{Stage field: [values], ...}")
  if isinstance(grid, (list, tuple)):
    return _explicit_points(grid)
  fields, values = [], []
  for field, options in dict(grid).items():
    if field not in SWEEPABLE_FIELDS:
      raise ValueError(f"cannot sweep {field!r}: not a Stage field (one of "
                       f"{', '.join(SWEEPABLE_FIELDS)})")
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
  return [SweepPoint(index, dict(zip(fields, combination)))
          for index, combination in enumerate(itertools.product(*values))]


def _explicit_points(grid):
  points = []
  for index, parameters in enumerate(grid):
    if not isinstance(parameters, dict) or not parameters:
      raise ValueError(f"sweep point {index} must be a non-empty "
                       f"{{Stage field: value}} dict, got {parameters!r}")
    unknown = [f for f in parameters if f not in SWEEPABLE_FIELDS]
    if unknown:
      raise ValueError(f"cannot sweep {unknown[0]!r}: not a Stage field (one "
                       f"of {', '.join(SWEEPABLE_FIELDS)})")
    if list(parameters) != list(grid[0]):
      raise ValueError(f"sweep point {index} sets {list(parameters)}, the "
                       f"first point {list(grid[0])}: give every point the "
                       "same fields (None where one does not apply)")
    points.append(SweepPoint(index, {
        field: _normalise(field, value) for field, value in parameters.items()}))
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
    stages[stage_index] = dataclasses.replace(stages[stage_index],
                                              **parameters)
  except (TypeError, ValueError) as e:
    raise ValueError(f"sweep point {parameters}: {e}") from e
  return stages


def reuses_earlier_stages(stages, stage_index, points):
  """Whether the earlier stages' outputs are the same at every point: the
  swept stage is not the first, and no point truncates its input (then
  the earlier stage stops at the point's own level)."""
  if stage_index == 0:
    return False
  return not any(point_stages(stages, stage_index, p.parameters)
                 [stage_index].truncated for p in points)


# --------------------------------------------- earlier stages, generated once


class EarlierStageOutputs:
  """The earlier stages' uint8 output of every example of a plan, read back
  from their synthetic set one shard at a time.

  A point's generation walks the plan shard by shard, and its shards are
  the earlier set's (same plan), so one shard is held at a time.
  """

  def __init__(self, directory, plan, base_seed):
    self.directory = directory
    self.plan = plan
    self.base_seed = int(base_seed)
    self._shard_of = {}
    for index in range(plan.num_shards):
      for example in plan.shard(index).example_ids():
        self._shard_of[int(example)] = index
    self._loaded_shard = None
    self._images = {}

  def _load(self, shard_index):
    path = os.path.join(self.directory, self.plan.shard(shard_index).file_name)
    images = {}
    for element in mixing.read_synthetic([path]).as_numpy_iterator():
      example = int(plan_lib.example_id(element[schema.LABEL],
                                        element[schema.CLASS_INDEX]))
      images[example] = element[schema.IMAGE]
    self._images = images
    self._loaded_shard = shard_index

  def images(self, seeds):
    """uint8 [B, h, w, 3] of the examples whose seeds are ``seeds`` [B, 2]
    ((base_seed, example id), as ``synthetic_dataset`` makes them)."""
    seeds = np.asarray(seeds, np.int64)
    if (seeds[:, 0] != self.base_seed).any():
      raise ValueError(f"the earlier stages' outputs were made with base seed "
                       f"{self.base_seed}, asked for seeds {seeds[:, 0]}")
    rows = []
    for example in seeds[:, 1]:
      example = int(example)
      if example not in self._shard_of:
        raise ValueError(f"example {example} is not in the sweep's plan")
      shard = self._shard_of[example]
      if shard != self._loaded_shard:
        self._load(shard)
      rows.append(self._images[example])
    return np.stack(rows)


class _CascadeOnEarlierOutputs:
  """A point's cascade whose earlier stages' outputs come from disk.

  Everything but sampling (config id, description, resolutions, ...) is the
  point's full cascade's, so the point's set records the same provenance
  as a full regeneration.
  """

  def __init__(self, cascade, first_stage, earlier_outputs):
    self._cascade = cascade
    self._first_stage = first_stage
    self._earlier = earlier_outputs

  def __getattr__(self, name):
    return getattr(self._cascade, name)

  def sample(self, seeds, labels, progress=None):
    del progress  # per-stage progress is not reported for partial cascades
    return self._cascade.sample(seeds, labels, first_stage=self._first_stage,
                                low_res=self._earlier.images(seeds))


# ------------------------------------------------------------------ metrics


def _reference_fingerprint(references):
  digest = {}
  for name, reference in sorted(references.items()):
    stats = reference.statistics
    value = np.concatenate([stats.mean.ravel(), stats.covariance.ravel()])
    digest[name] = {"count": stats.count,
                    "sha256": hashlib.sha256(value.tobytes()).hexdigest()[:16],
                    "features": (None if reference.features is None
                                 else len(reference.features))}
  return digest


def cas_values(scores, network, num_samples, reference="validation"):
  """``report.MetricValue``s of a ``cas_fn`` result {"top1", "top5"}."""
  values = []
  for key, metric in CAS_METRICS.items():
    if key in scores and scores[key] is not None:
      values.append(report.MetricValue(
          metric, float(scores[key]), scores.get("network", network),
          num_samples, reference,
          details={"protocol": "classifier trained on the generated images "
                               "only, accuracy on the real split"}))
  if not values:
    raise ValueError(f"cas_fn returned no top1/top5: {scores}")
  return values


@dataclasses.dataclass(frozen=True)
class FinishedPoint:
  """A point's parameters and metrics (its ``metrics.json``)."""
  point: SweepPoint
  metrics: list  # of MetricValue.as_dict() dicts
  info: dict


def _read_finished(point_dir, point):
  path = os.path.join(point_dir, METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  stored = files.read_json(path)
  names = {k: format_value(v) for k, v in stored["parameters"].items()}
  if names != {k: format_value(v) for k, v in point.parameters.items()}:
    raise SweepConflictError(f"{path} holds the metrics of "
                             f"{stored['parameters']}, not {point.parameters}")
  return FinishedPoint(point, stored["metrics"], stored.get("info", {}))


# ---------------------------------------------------------------- outputs


def write_csv(path, finished, parameter_names):
  """One row per finished point: name, parameters, metric values (and the
  standard deviation of those that have one), cost. Written atomically."""
  columns = []  # (header, metric label, key of the metric dict)
  seen = set()
  for result in finished:
    for metric in result.metrics:
      if metric["label"] not in seen:
        seen.add(metric["label"])
        columns.append((metric["label"], metric["label"], "value"))
        if metric.get("std") is not None:
          columns.append((f"{metric['label']} std", metric["label"], "std"))
  info_columns = ["resolution", "num_images", "network_evaluations_per_image",
                  "generation_images_per_second"]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["point", *parameter_names, *[c[0] for c in columns],
                   *info_columns])
  for result in finished:
    by_label = {m["label"]: m for m in result.metrics}
    row = [result.point.name]
    row += [format_value(result.point.parameters[p]) for p in parameter_names]
    for _, label, key in columns:
      value = by_label.get(label, {}).get(key)
      row.append("" if value is None else value)
    row += [result.info.get(c, "") for c in info_columns]
    writer.writerow(row)
  files.atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
  return path


def read_csv(path):
  """The rows of a ``sweep.csv`` as dicts of strings."""
  with tf.io.gfile.GFile(path) as f:
    return list(csv.DictReader(f))


def _check_or_write_record(output_dir, record):
  path = os.path.join(output_dir, RECORD_FILE)
  # A grid may grow; its points keep their names.
  differing = files.json_differences(path, record, ignore=("grid",))
  if differing:
    raise SweepConflictError(
        f"{output_dir} holds a sweep made with other settings "
        f"({', '.join(differing)} differ, see {path}); use a new output "
        "directory or the same settings")
  files.atomic_write_json(path, record)


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """What ``run`` did and wrote.

  Attributes:
    finished: ``FinishedPoint``s of the grid, in grid order.
    computed: names of the points generated and scored by this call.
    skipped: names of the points already finished before it.
    csv_path: ``sweep.csv``.
    plots: ``sweep_plots.PlotInfo``s of the plots written.
  """
  finished: list
  computed: list
  skipped: list
  csv_path: str
  plots: list


def _fixed_settings(stages, stage_index, points, plan, settings, classes):
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
      "grid": {k: list(dict.fromkeys(format_value(p.parameters[k])
                                     for p in points)) for k in swept},
  }


def _prefixed(print_fn, prefix):
  return lambda line: print_fn(f"{prefix} {line}")


def _plan(num_images, num_classes, settings):
  return plan_lib.GenerationPlan(
      plan_lib.uniform_counts(int(num_images), num_classes),
      settings.examples_per_shard, SPLIT)


def describe(stages, stage_index, points, num_images, reuse_earlier,
             stage_names=None):
  """The ``--dry_run`` text: points and the network evaluations they cost
  (from the exports' configs; "?" when an export is not there)."""
  name = (stage_names[stage_index] if stage_names
          else str(stage_index))
  lines = [f"sweep of stage {name!r} (index {stage_index}) over "
           f"{len(points)} points of {num_images} images each"]

  def evaluations(stage_list):
    try:
      return cascade_lib.estimated_evaluations_per_image(stage_list)
    except (OSError, ValueError, KeyError, tf.errors.OpError):
      return None

  total = 0
  known = True
  if reuse_earlier:
    earlier = evaluations(stages[:stage_index])
    lines.append(f"earlier stages generated once and reused: "
                 f"{earlier if earlier is not None else '?'} evaluations per "
                 "image")
    known &= earlier is not None
    total += (earlier or 0) * num_images
  for point in points:
    point_list = point_stages(stages, stage_index, point.parameters)
    count = evaluations(point_list[stage_index if reuse_earlier else 0:])
    known &= count is not None
    total += (count or 0) * num_images
    lines.append(f"  {point.index:4d}  {point.describe()}  "
                 f"({count if count is not None else '?'} evaluations per "
                 "image)")
  lines.append(f"network evaluations in all: {total:,}" if known else
               "network evaluations in all: unknown (exports not found)")
  return "\n".join(lines)


@gin.configurable(denylist=[
    "output_dir", "stages", "make_cascade", "classes", "extractor",
    "references", "settings", "classifier", "cas_fn", "stage_names",
    "plots_only", "print_fn", "on_point_done"])
def run(output_dir, stages, make_cascade, classes, extractor, references,
        settings=None, *, stage=gin.REQUIRED, grid=gin.REQUIRED,
        num_images=gin.REQUIRED, fid_sample_counts=None,
        kid_subsets=kid.NUM_SUBSETS, kid_subset_size=kid.SUBSET_SIZE,
        neighbourhood=precision_recall.NEIGHBOURHOOD,
        metrics_batch_size=None, reuse_earlier=True, plot_views=None,
        classifier=None, cas_fn=None, cas_name=DEFAULT_CAS_NAME,
        stage_names=None, plots_only=False, print_fn=print,
        on_point_done=None):
  """Sweeps sampler fields of one stage; see the module docstring.

  Args:
    output_dir: where ``sweep.json``, ``sweep.csv``, ``points/``,
      ``earlier_stages/`` and ``plots/`` go.
    stages: the cascade's ``Stage``s with their fixed settings
      (``cascade.configured_stages()``).
    make_cascade: ``stages -> Cascade`` (loads the exports: the tool binds
      the strategy and precision).
    classes: the class table (``class_names.load_classes``).
    extractor: the ``features.FeatureExtractor`` of FID, KID and
      precision/recall (and IS when it has logits).
    references: a ``ReferenceSpec``.
    settings: ``synthetic_dataset.GenerationSettings``; None: gin's.
    stage: the swept stage: its gin scope (``"base"``, ``"sr256"``) or index.
    grid: {Stage field: [values]}, e.g. {"guidance_weight": [1.0, 1.25],
      "logvar_coeff": [0.0, 0.3]}; step counts go to ``timestep_respacing``.
    num_images: images per point (class-balanced).
    fid_sample_counts: the N's of FID@N (each <= num_images); None: the
      point's ``num_images``.
    kid_subsets, kid_subset_size, neighbourhood: see ``sample_quality``.
    metrics_batch_size: images per feature-network call.
    reuse_earlier: generate the earlier stages' outputs once (when the
      swept stage is not the first and no point truncates its input).
    plot_views: see ``sweep_plots.write_plots``; None: one view along
      ``guidance_weight`` (or the first field).
    classifier: optional ``FeatureExtractor`` with logits for the IS when
      ``extractor`` has none (e.g. an ImageNet classifier next to the FID
      Inception).
    cas_fn: optional ``synthetic_dir -> {"top1": .., "top5": ..}``, the
      Classification Accuracy Score of a point's set (may add "network").
    cas_name: the CAS classifier's description for the metric labels.
    stage_names: names of the stages (``configured_stage_names()``), for
      ``stage`` given by name.
    plots_only: write the CSV and plots of the finished points, generate
      nothing.
    print_fn: where progress lines go.
    on_point_done: optional callback(point, FinishedPoint) after each point.

  Returns:
    ``SweepResult``.

  Raises:
    ValueError: a bad grid, stage or metric setting.
    SweepConflictError: ``output_dir`` holds a sweep with other settings.
  """
  settings = settings or synthetic_dataset.GenerationSettings()
  stages = list(stages)
  stage_index = resolve_stage(stage, len(stages), stage_names)
  points = expand_grid(grid)
  for point in points:  # every point's stage must be valid before any work
    point_stages(stages, stage_index, point.parameters)
  parameter_names = list(points[0].parameters)
  sweep_plots.resolve_views(parameter_names, plot_views)  # fails early
  num_images = int(num_images)
  sample_counts = tuple(int(n) for n in (fid_sample_counts or (num_images,)))
  if max(sample_counts) > num_images or min(sample_counts) < 2:
    raise ValueError(f"FID sample counts {sample_counts} must be in "
                     f"2..num_images ({num_images})")
  plan = _plan(num_images, len(classes), settings)
  reuse = reuse_earlier and reuses_earlier_stages(stages, stage_index, points)

  tf.io.gfile.makedirs(output_dir)
  _check_or_write_record(output_dir, {
      **_fixed_settings(stages, stage_index, points, plan, settings, classes),
      "feature_network": {"name": extractor.name,
                          "fingerprint": extractor.fingerprint},
      "inception_score_classifier": None if classifier is None else {
          "name": classifier.name, "fingerprint": classifier.fingerprint},
      "references": references.description(),
      "metrics": {"fid_sample_counts": list(sample_counts),
                  "kid_subsets": kid_subsets,
                  "kid_subset_size": kid_subset_size,
                  "neighbourhood": neighbourhood,
                  "cas": cas_name if cas_fn is not None else None},
  })

  reference_cache = {}

  def references_at(resolution):
    if resolution not in reference_cache:
      reference_cache[resolution] = {
          split: fid.reference_statistics(
              references.data_dir, extractor, split=split,
              num_examples=references.num_examples, resolution=resolution,
              num_classes=len(classes), batch_size=metrics_batch_size,
              keep_features=references.keep_features,
              cache_dir=references.cache_dir)
          for split in references.splits}
    return reference_cache[resolution]

  earlier_outputs = None

  def earlier_stage_outputs():
    nonlocal earlier_outputs
    if earlier_outputs is None:
      directory = os.path.join(output_dir, EARLIER_STAGES_DIR)
      print_fn(f"earlier stages 0..{stage_index - 1}: their outputs are "
               f"generated once into {directory}")
      earlier_settings = dataclasses.replace(
          settings, image_format="png", output_resolution=None)
      cascade = make_cascade(stages[:stage_index])
      synthetic_dataset.generate(directory, cascade, plan, classes,
                                 earlier_settings,
                                 print_fn=_prefixed(print_fn, "[earlier]"))
      del cascade
      earlier_outputs = EarlierStageOutputs(directory, plan,
                                            settings.base_seed)
    return earlier_outputs

  csv_path = os.path.join(output_dir, CSV_FILE)
  results = {p.name: _read_finished(
      os.path.join(output_dir, POINTS_DIR, p.name), p) for p in points}
  skipped = [p.name for p in points if results[p.name] is not None]
  computed = []

  def finished_points():
    return [results[p.name] for p in points if results[p.name] is not None]

  write_csv(csv_path, finished_points(), parameter_names)

  def generate_and_score(point):
    """Generates (or resumes) a point's set, scores it, writes its
    ``metrics.json``; returns its ``FinishedPoint``."""
    point_dir = os.path.join(output_dir, POINTS_DIR, point.name)
    label = f"[point {point.index + 1}/{len(points)} {point.describe()}]"
    print_fn(f"{label} generating {num_images} images")
    started = time.time()
    earlier = earlier_stage_outputs() if reuse else None
    cascade = make_cascade(point_stages(stages, stage_index,
                                        point.parameters))
    sampler = cascade if earlier is None else _CascadeOnEarlierOutputs(
        cascade, stage_index, earlier)
    summary = synthetic_dataset.generate(
        point_dir, sampler, plan, classes, settings,
        print_fn=_prefixed(print_fn, label))
    resolution = int(settings.output_resolution or cascade.resolutions[-1])
    evaluations = cascade.network_evaluations_per_example()
    del sampler, cascade
    gc.collect()  # the point's models, before the next point loads its own
    generated_at = time.time()
    manifest = synthetic_writer.read_manifest(point_dir, SPLIT)
    metrics = sample_quality.evaluate(
        mixing.read_synthetic(manifest.shard_paths(point_dir)), extractor,
        references_at(resolution), sample_counts=sample_counts,
        classifier=classifier, batch_size=metrics_batch_size,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
        neighbourhood=neighbourhood)
    if cas_fn is not None:
      metrics.extend(cas_values(cas_fn(point_dir), cas_name, num_images))
    info = {"resolution": resolution, "num_images": num_images,
            "network_evaluations_per_image": evaluations,
            "generation_images_per_second": round(
                summary["images_per_second"], 4),
            "generation_seconds": round(generated_at - started, 2),
            "evaluation_seconds": round(time.time() - generated_at, 2),
            "earlier_stages_reused": reuse,
            "references": _reference_fingerprint(references_at(resolution))}
    values = metrics.as_dict()["metrics"]
    # Written last: a point with this file is finished.
    files.atomic_write_json(os.path.join(point_dir, METRICS_FILE), {
        "parameters": point.parameters, "name": point.name,
        "metrics": values, "info": info})
    print_fn(f"{label} done\n" + metrics.format_table())
    return FinishedPoint(point, values, info)

  for point in [] if plots_only else points:
    if results[point.name] is None:
      results[point.name] = generate_and_score(point)
      computed.append(point.name)
      write_csv(csv_path, finished_points(), parameter_names)
      if on_point_done is not None:
        on_point_done(point, results[point.name])
  finished = finished_points()
  plots = sweep_plots.write_plots(
      os.path.join(output_dir, PLOTS_DIR),
      [sweep_plots.PointMetrics(
          {k: format_value(v) for k, v in r.point.parameters.items()},
          r.metrics) for r in finished], parameter_names, views=plot_views)
  print_fn(f"{len(finished)} of {len(points)} points finished "
           f"({len(computed)} now, {len(skipped)} before); wrote {csv_path} "
           f"and {len(plots)} plots in {os.path.join(output_dir, PLOTS_DIR)}")
  return SweepResult(finished, computed, skipped, csv_path, plots)

