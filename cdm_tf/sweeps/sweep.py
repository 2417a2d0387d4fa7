"""Sampler-parameter sweeps of one cascade stage, scored point by point.

Azizi et al. (2023, Sec. 4.2, Figures 3-4 and A.1-A.6) choose the sampler
of each stage by sweeping it: guidance weight x log-variance mixing x
sampling steps for the 64x64 base model, then guidance x noise (conditioning)
augmentation x log-variance x steps for the 64->256 stage with the base
fixed, scoring every point by FID, IS and the Classification Accuracy Score.
``Sweep`` does that for any ``Stage`` fields of one stage, as
``SweepSettings`` (bound in gin) say:

* The grid is expanded in its key order (``grid``); every point is the
  configured cascade with that stage's fields replaced, checked before
  anything runs.
* Every point generates the same ``num_images`` examples
  (``plan.uniform_counts``: class-balanced, and every prefix is too) with
  ``synthetic_dataset.generate`` into ``points/<name>/``: the same example
  ids and seeds at every point, so points differ only in the swept fields.
  The point directory is an ordinary synthetic set (shards, manifest,
  provenance), identical to what ``tools/generate.py --total=<num_images>``
  writes with those settings.
* Sweeping a later stage, the earlier stages' outputs are generated once
  (``earlier_stages``) into ``earlier_stages/`` and every point samples
  only its own stage and the ones after it from them. A truncated handover
  (the earlier stage stops at the swept stage's level s) depends on the
  point, and is regenerated.
* Metrics (``scoring.PointScorer``: FID@N against each reference split,
  KID, precision/recall, IS; optionally CAS) are computed on the point's
  images and written to ``points/<name>/metrics.json`` (``records``).

Every step survives a kill: a point with a ``metrics.json`` is skipped, a
point killed while generating resumes at its first incomplete shard (the
generation record refuses other settings), the earlier stages' set likewise.
``sweep.json`` records what the sweep is and a run with other settings in
the same directory stops with ``settings_record.SettingsConflictError``.
After each point ``sweep.csv`` is rewritten; at the end the figures of
``plots`` are written to ``plots/``.
"""

import dataclasses
import gc
import os
import time
from typing import Any, Optional

import gin
import tensorflow as tf

from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.metrics import kid
from cdm_tf.metrics import precision_recall
from cdm_tf.sweeps import earlier_stages
from cdm_tf.sweeps import grid as grid_lib
from cdm_tf.sweeps import plots as plots_lib
from cdm_tf.sweeps import records
from cdm_tf.sweeps import scoring

POINTS_DIR = "points"
EARLIER_STAGES_DIR = "earlier_stages"
PLOTS_DIR = "plots"
SPLIT = "train"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """What a sweep is: the swept stage, its grid and how points are scored.

  Attributes:
    stage: the swept stage: its gin scope (``"base"``, ``"sr256"``) or
      index.
    grid: {Stage field: [values]}, e.g. {"guidance_weight": [1.0, 1.25],
      "logvar_coeff": [0.0, 0.3]}, or a list of explicit points (see
      ``grid.expand_grid``); step counts go to ``timestep_respacing``.
    num_images: images per point (class-balanced).
    fid_sample_counts: the N's of FID@N (each <= num_images); None: the
      point's ``num_images``.
    kid_subsets, kid_subset_size, neighbourhood: see ``sample_quality``.
    metrics_batch_size: images per feature-network call.
    reuse_earlier: generate the earlier stages' outputs once (when the
      swept stage is not the first and no point truncates its input).
    plot_views: see ``plots.write_plots``; None: one view along
      ``guidance_weight`` (or the first field).
  """
  stage: Any = gin.REQUIRED
  grid: Any = gin.REQUIRED
  num_images: Any = gin.REQUIRED
  fid_sample_counts: Optional[tuple] = None
  kid_subsets: int = kid.NUM_SUBSETS
  kid_subset_size: int = kid.SUBSET_SIZE
  neighbourhood: int = precision_recall.NEIGHBOURHOOD
  metrics_batch_size: Optional[int] = None
  reuse_earlier: bool = True
  plot_views: Optional[list] = None

  def checked_points(self, stages, stage_names=None):
    """The swept stage's index and the grid's ``SweepPoint``s, every
    point's stage checked.

    Raises:
      ValueError: a bad stage, grid or point.
    """
    stage_index = grid_lib.resolve_stage(self.stage, len(stages), stage_names)
    points = grid_lib.expand_grid(self.grid)
    for point in points:  # every point's stage must be valid before any work
      grid_lib.point_stages(stages, stage_index, point.parameters)
    return stage_index, points

  def metric_settings(self):
    """``scoring.MetricSettings``, the FID sample counts checked.

    Raises:
      ValueError: a sample count outside 2..num_images.
    """
    num_images = int(self.num_images)
    counts = tuple(int(n) for n in (self.fid_sample_counts or (num_images,)))
    if max(counts) > num_images or min(counts) < 2:
      raise ValueError(f"FID sample counts {counts} must be in "
                       f"2..num_images ({num_images})")
    return scoring.MetricSettings(counts, kid_subsets=self.kid_subsets,
                                  kid_subset_size=self.kid_subset_size,
                                  neighbourhood=self.neighbourhood,
                                  batch_size=self.metrics_batch_size)

  def reuses_earlier(self, stages, stage_index, points):
    """Whether the earlier stages are generated once for every point."""
    return self.reuse_earlier and grid_lib.reuses_earlier_stages(
        stages, stage_index, points)


def configured_settings():
  """The ``SweepSettings`` the parsed gin files bind.

  Raises:
    ValueError: gin binds no stage, grid or number of images.
  """
  try:
    return SweepSettings()
  except RuntimeError as e:  # gin's "Required bindings ... not provided"
    raise ValueError("bind sweep.SweepSettings.stage, "
                     "sweep.SweepSettings.grid and "
                     f"sweep.SweepSettings.num_images ({e})") from e


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """What ``Sweep.run`` did and wrote.

  Attributes:
    finished: ``records.FinishedPoint``s of the grid, in grid order.
    computed: names of the points generated and scored by this call.
    skipped: names of the points already finished before it.
    csv_path: ``sweep.csv``.
    plots: ``plots.PlotInfo``s of the plots written.
  """
  finished: list
  computed: list
  skipped: list
  csv_path: str
  plots: list


class Sweep:
  """One sweep in one output directory; see the module docstring.

  Args:
    output_dir: where ``sweep.json``, ``sweep.csv``, ``points/``,
      ``earlier_stages/`` and ``plots/`` go.
    settings: ``SweepSettings``.
    stages: the cascade's ``Stage``s with their fixed settings
      (``cascade.configured_stages()``).
    make_cascade: ``stages -> Cascade`` (loads the exports: the tool binds
      the strategy and precision).
    classes: the class table (``class_names.load_classes``).
    scorer: a ``scoring.PointScorer``.
    generation_settings: ``synthetic_dataset.GenerationSettings``; None:
      gin's.
    stage_names: names of the stages (``grid.configured_stage_names()``),
      for a stage given by name.
    print_fn: where progress lines go.
    on_point_done: optional callback(point, FinishedPoint) after each point.

  Raises:
    ValueError: a bad grid, stage or metric setting.
  """

  def __init__(self, output_dir, settings, stages, make_cascade, classes,
               scorer, generation_settings=None, stage_names=None,
               print_fn=print, on_point_done=None):
    self.output_dir = output_dir
    self.stages = list(stages)
    self.stage_index, self.points = settings.checked_points(
        self.stages, stage_names)
    self.parameter_names = list(self.points[0].parameters)
    self.plot_views = settings.plot_views
    plots_lib.resolve_views(self.parameter_names, self.plot_views)  # early
    self.num_images = int(settings.num_images)
    self.metric_settings = settings.metric_settings()
    self.generation_settings = (generation_settings or
                                synthetic_dataset.GenerationSettings())
    self.classes = classes
    self.plan = plan_lib.GenerationPlan(
        plan_lib.uniform_counts(self.num_images, len(classes)),
        self.generation_settings.examples_per_shard, SPLIT)
    self.reuse = settings.reuses_earlier(self.stages, self.stage_index,
                                         self.points)
    self.scorer = scorer
    self._make_cascade = make_cascade
    self._print_fn = print_fn
    self._on_point_done = on_point_done
    self._earlier = earlier_stages.EarlierStages(
        os.path.join(output_dir, EARLIER_STAGES_DIR), self.stages,
        self.stage_index, make_cascade, self.plan, classes,
        self.generation_settings, print_fn) if self.reuse else None
    self._results = {}

  @property
  def csv_path(self):
    return os.path.join(self.output_dir, records.CSV_FILE)

  def _point_dir(self, point):
    return os.path.join(self.output_dir, POINTS_DIR, point.name)

  def _record(self):
    fixed = records.fixed_settings(self.stages, self.stage_index, self.points,
                                   self.plan, self.generation_settings,
                                   self.classes)
    return {**fixed, **self.scorer.record(self.metric_settings)}

  def _finished(self):
    return [
        self._results[p.name]
        for p in self.points
        if self._results[p.name] is not None
    ]

  def run(self, plots_only=False):
    """Generates and scores every unfinished point (none with
    ``plots_only``), then writes the CSV and plots of the finished ones.

    Returns:
      ``SweepResult``.

    Raises:
      settings_record.SettingsConflictError: ``output_dir`` holds a sweep
        with other settings.
    """
    tf.io.gfile.makedirs(self.output_dir)
    records.check_or_write_record(self.output_dir, self._record())
    results = {}
    for p in self.points:
      results[p.name] = records.read_finished(self._point_dir(p), p)
    self._results = results
    skipped = [p.name for p in self.points if self._results[p.name] is not None]
    computed = []
    records.write_csv(self.csv_path, self._finished(), self.parameter_names)
    for point in [] if plots_only else self.points:
      if self._results[point.name] is None:
        self._results[point.name] = self._generate_and_score(point)
        computed.append(point.name)
        records.write_csv(self.csv_path, self._finished(), self.parameter_names)
        if self._on_point_done is not None:
          self._on_point_done(point, self._results[point.name])
    finished = self._finished()
    plots_dir = os.path.join(self.output_dir, PLOTS_DIR)
    plots = plots_lib.write_plots(plots_dir, [
        plots_lib.PointMetrics(
            {k: grid_lib.format_value(v)
             for k, v in r.point.parameters.items()}, r.metrics)
        for r in finished
    ], self.parameter_names, views=self.plot_views)
    self._print_fn(f"{len(finished)} of {len(self.points)} points finished "
                   f"({len(computed)} now, {len(skipped)} before); wrote "
                   f"{self.csv_path} and {len(plots)} plots in {plots_dir}")
    return SweepResult(finished, computed, skipped, self.csv_path, plots)

  def _generate(self, point, label):
    """Generates (or resumes) a point's set; returns its resolution,
    network evaluations per image and images per second."""
    outputs = self._earlier.outputs() if self._earlier else None
    cascade = self._make_cascade(
        grid_lib.point_stages(self.stages, self.stage_index, point.parameters))
    sampler = cascade if outputs is None else (
        earlier_stages.CascadeOnEarlierOutputs(cascade, self.stage_index,
                                               outputs))
    summary = synthetic_dataset.generate(
        self._point_dir(point), sampler, self.plan, self.classes,
        self.generation_settings,
        print_fn=lambda line: self._print_fn(f"{label} {line}"))
    resolution = int(self.generation_settings.output_resolution or
                     cascade.resolutions[-1])
    evaluations = cascade.network_evaluations_per_example()
    del sampler, cascade
    gc.collect()  # the point's models, before the next point loads its own
    return resolution, evaluations, summary["images_per_second"]

  def _generate_and_score(self, point):
    """Generates (or resumes) a point's set, scores it, writes its
    ``metrics.json``; returns its ``records.FinishedPoint``."""
    label = (f"[point {point.index + 1}/{len(self.points)} "
             f"{point.describe()}]")
    self._print_fn(f"{label} generating {self.num_images} images")
    started = time.time()
    resolution, evaluations, speed = self._generate(point, label)
    generated_at = time.time()
    num_classes = len(self.classes)
    metrics = self.scorer.score(self._point_dir(point), SPLIT, resolution,
                                num_classes, self.num_images,
                                self.metric_settings)
    info = {
        "resolution": resolution, "num_images": self.num_images,
        "network_evaluations_per_image": evaluations,
        "generation_images_per_second": round(speed, 4),
        "generation_seconds": round(generated_at - started, 2),
        "evaluation_seconds": round(time.time() - generated_at,
                                    2), "earlier_stages_reused": self.reuse,
        "references": self.scorer.reference_fingerprint(
            resolution, num_classes, self.metric_settings.batch_size)
    }
    finished = records.write_point(self._point_dir(point), point,
                                   metrics.as_dict()["metrics"], info)
    self._print_fn(f"{label} done\n" + metrics.format_table())
    return finished
