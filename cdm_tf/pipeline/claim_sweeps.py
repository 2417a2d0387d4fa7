"""The two claims measured by sampler sweeps, for both jobs.

1. Conditioning augmentation (Ho et al., CDM, Table 3a; Table 2b when
   stages trained with and without it are compared): a super-resolution
   stage's cascade scored at several sampling levels s.
2. Guidance against classification (Azizi et al., Fig. 3 and A.1): the base
   stage's guidance weight swept through the whole cascade.

Each is one ``tools/sweep.py --cas`` run per generation seed (FID, IS and
CAS per point, on a classifier's features); ``augmentation_section`` and
``guidance_section`` give each point's metrics over the seeds as mean and
95% t-interval (``repeated_runs``) and say which comparisons separate. The
claims job (``claims``) sweeps three super-resolution stages at full size;
the main job (``job``) sweeps its one cascade at reduced size, for the
headline.
"""

import dataclasses
import os

import numpy as np

from cdm_tf import files
from cdm_tf.metrics import repeated_runs
from cdm_tf.pipeline import report
from cdm_tf.pipeline import report_figures
from cdm_tf.pipeline import runner
from cdm_tf.sweeps import records

GUIDANCE_DIR = "guidance"
AUGMENTATION_DIR = "augmentation"
GENERATION_SEED_BINDING = "synthetic_dataset.GenerationSettings.base_seed"
GUIDANCE_PNG = "guidance_pareto.png"
AUGMENTATION_PNG = "conditioning_augmentation.png"
FID_PREFIX = "FID@"
IS_PREFIX = "IS@"
CAS_PREFIX = "CAS top-1"

# ----------------------------------------------------------------- steps


def guidance_dir(root, seed):
  return os.path.join(root, GUIDANCE_DIR, f"seed_{seed}")


def augmentation_dir(root, stage_name, seed):
  return os.path.join(root, AUGMENTATION_DIR, stage_name, f"seed_{seed}")


def classifier_network_flags(classifier_model, feature_network_name=None):
  """Feature-network flags for a classifier's features (not ImageNet's)."""
  network = [
      "--feature_network=classifier", f"--classifier_model={classifier_model}"
  ]
  if feature_network_name:
    network.append(f"--feature_network_name={feature_network_name}")
  return network


def sweep_step(name, sweep_dir, gin_flags, real_data_dir, network_flags,
               description, strategy_flags=()):
  """One ``tools/sweep.py --cas`` run.

  Args:
    name: the step's name.
    sweep_dir: its output directory (sweep.csv, plots).
    gin_flags: --gin_file / --gin_bindings of the CAS classifier, then the
      sweep and its cascade (so a sweep file can fit the CAS recipe to its
      image count).
    real_data_dir: real data (FID reference, CAS validation).
    network_flags: the feature network's flags (--feature_network=...).
    description: what the step shows.
    strategy_flags: --strategy / --mixed_precision ... flags.
  """
  return runner.Step(
      name, "sweep.py",
      (*gin_flags, "--cas", f"--real_data_dir={real_data_dir}",
       f"--output_dir={sweep_dir}", *network_flags, *strategy_flags),
      product=os.path.join(sweep_dir,
                           records.CSV_FILE), description=description)


# ---------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class Metric:
  """A sweep column summarised over seeds."""
  name: str  # "FID", "IS", "CAS top-1 %"
  label: str  # the full column label (network, sample count, reference)
  higher_is_better: bool
  scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class SweptStage:
  """A super-resolution stage's augmentation sweeps, one per seed."""
  description: str
  directories: tuple


def _column(header, prefix, contains=""):
  for name in header:
    if name.startswith(
        prefix) and contains in name and not name.endswith(" std"):
      return name
  return None


def sweep_metrics(header):
  """The FID (vs train), IS and CAS top-1 columns a sweep.csv has."""
  found = []
  fid = _column(header, FID_PREFIX, "vs train") or _column(header, FID_PREFIX)
  if fid:
    found.append(Metric("FID", fid, False))
  inception = _column(header, IS_PREFIX)
  if inception:
    found.append(Metric("IS", inception, True))
  cas = _column(header, CAS_PREFIX)
  if cas:
    found.append(Metric("CAS top-1 %", cas, True, 100.0))
  return found


def read_sweeps(directories):
  """{point name: {column: [values over the seeds that finished it]}},
  the parameter columns of the first row seen, and the metric columns."""
  points, parameters, header = {}, {}, None
  for directory in directories:
    path = os.path.join(directory, records.CSV_FILE)
    if not os.path.exists(path):
      continue
    for row in records.read_csv(path):
      header = header or list(row)
      values = points.setdefault(row["point"], {})
      parameters.setdefault(row["point"], row)
      for name, text in row.items():
        try:
          values.setdefault(name, []).append(float(text))
        except (TypeError, ValueError):
          continue
  return points, parameters, sweep_metrics(header or [])


def summary(values, scale=1.0):
  """``repeated_runs.summarize`` of scaled values; None for none."""
  if not values:
    return None
  return repeated_runs.summarize([scale * v for v in values])


def shown(value, spec=".2f"):
  return "-" if value is None else value.format(spec)


def compared(a, b, higher_is_better, what_a, what_b):
  return (f"{what_a} vs {what_b}: "
          f"{repeated_runs.verdict(a, b, higher_is_better)}.")


def _best(points, names, metric):
  """The point among ``names`` with the best mean of ``metric``."""
  scored = [(np.mean(points[n][metric.label]), n)
            for n in names
            if points[n].get(metric.label)]
  if not scored:
    return None
  scored.sort(reverse=metric.higher_is_better)
  return scored[0][1]


def _level(points, name):
  return points[name].get("aug_level", [None])[0]


def _at_level(level):
  return "" if level is None else f" at s = {level:g}"


def _reference(by_stage, baseline, points, metric):
  """(points, point name, words) a stage's best point is compared with: the
  baseline stage's best, or with no baseline the stage's own s = 0."""
  if baseline is None:
    at_zero = next((n for n in points if _level(points, n) == 0.0), None)
    return points, at_zero, "s = 0"
  if baseline in by_stage:
    baseline_points = by_stage[baseline][0]
    return (baseline_points,
            _best(baseline_points, list(baseline_points), metric), baseline)
  return None, None, None  # the baseline's sweeps have not run yet


def augmentation_section(report_dir, stages, baseline=None):
  """Claim 1's table, verdicts and error-bar plot.

  Args:
    report_dir: where the plot goes.
    stages: ``SweptStage``s.
    baseline: the description of the stage trained without augmentation:
      each other stage's best point per metric is compared with its best.
      None compares each stage's best s with its own s = 0 (one stage).
  """
  rows, curves, verdicts = [], [], []
  by_stage, metrics = {}, []
  for stage in stages:
    points, parameters, found = read_sweeps(stage.directories)
    metrics = metrics or found
    for name, values in points.items():
      level = parameters[name].get("aug_level", "-")
      rows.append([stage.description, level] +
                  [shown(summary(values.get(m.label), m.scale)) for m in found])
      curves.append((stage.description, level, values))
    by_stage[stage.description] = (points, found)
  if not rows:
    return "Not run yet."
  text = report.table(["super-resolution training", "sampling s"] +
                      [m.name for m in metrics], rows)
  text += ("\nEach cell: mean [95% interval] (runs) over generation seeds; "
           f"columns: {'; '.join(m.label for m in metrics)}.\n")
  for description, (points, found) in by_stage.items():
    if description == baseline:
      continue
    for metric in found:
      mine = _best(points, list(points), metric)
      reference_points, theirs, what_b = _reference(by_stage, baseline, points,
                                                    metric)
      if mine is None or theirs is None:
        continue
      if reference_points is points and theirs == mine:
        verdicts.append(f"{metric.name}: {description}: best at s = 0.")
        continue
      verdicts.append(
          compared(
              summary(points[mine][metric.label], metric.scale),
              summary(reference_points[theirs][metric.label],
                      metric.scale), metric.higher_is_better,
              f"{metric.name}: {description}{_at_level(_level(points, mine))}",
              what_b))
  if verdicts:
    text += "\n" + report.bullets(verdicts)
  if metrics:
    _error_bar_plot(os.path.join(report_dir, AUGMENTATION_PNG), curves, metrics,
                    "sampling s")
    text += "\n" + report.image_link(AUGMENTATION_PNG,
                                     "metrics per augmentation variant")
  return text


def guidance_section(report_dir, directories):
  """Claim 2's table, verdicts and Pareto plots from one sweep per seed."""
  points, parameters, metrics = read_sweeps(directories)
  if not points:
    return "Not run yet."
  names = sorted(points,
                 key=lambda n: points[n].get("guidance_weight", [0.0])[0])
  rows = [[parameters[n].get("guidance_weight", n)] +
          [shown(summary(points[n].get(m.label), m.scale))
           for m in metrics]
          for n in names]
  text = report.table(["base guidance"] + [m.name for m in metrics], rows)
  text += ("\nEach cell: mean [95% interval] (runs) over generation seeds; "
           f"columns: {'; '.join(m.label for m in metrics)}.\n")
  verdicts = []
  by_name = {m.name: m for m in metrics}
  cas = by_name.get("CAS top-1 %")
  for metric in metrics:
    best = _best(points, names, metric)
    if best is not None:
      verdicts.append(f"best {metric.name}: guidance "
                      f"{parameters[best].get('guidance_weight')}")
  fid = by_name.get("FID")
  if cas and fid:
    best_cas, best_fid = _best(points, names, cas), _best(points, names, fid)
    if best_cas and best_fid and best_cas != best_fid:
      verdicts.append(
          compared(
              summary(points[best_cas][cas.label], cas.scale),
              summary(points[best_fid][cas.label], cas.scale), True,
              f"CAS at guidance {parameters[best_cas].get('guidance_weight')}",
              f"at the best-FID guidance "
              f"{parameters[best_fid].get('guidance_weight')}"))
  text += "\n" + report.bullets(verdicts)
  curves = [("guidance", parameters[n].get("guidance_weight"), points[n])
            for n in names]
  if fid and (cas or by_name.get("IS")):
    _pareto_plot(os.path.join(report_dir, GUIDANCE_PNG), curves, fid,
                 [m for m in (cas, by_name.get("IS")) if m])
    text += "\n" + report.image_link(GUIDANCE_PNG,
                                     "FID against CAS and IS per guidance")
  return text


# ----------------------------------------------------------------- figures


def _error_bar_plot(path, curves, metrics, x_name):
  """One panel per metric; one line per curve label, x the parameter."""
  fig = report_figures.new_figure(4.6 * len(metrics), 3.6)
  for index, metric in enumerate(metrics):
    axes = fig.add_subplot(1, len(metrics), index + 1)
    for label in dict.fromkeys(c[0] for c in curves):
      xs, means, errors = [], [], []
      for curve_label, x, values in curves:
        value = summary(values.get(metric.label), metric.scale)
        if curve_label != label or value is None:
          continue
        xs.append(float(x) if _is_number(x) else len(xs))
        means.append(value.mean)
        errors.append([value.mean - value.low, value.high - value.mean])
      if xs:
        axes.errorbar(xs, means, yerr=np.transpose(errors), marker="o",
                      capsize=3, label=label)
    axes.set_xlabel(x_name)
    axes.set_ylabel(metric.name)
    axes.grid(alpha=0.3)
  fig.axes[0].legend(fontsize=7)
  files.atomic_write_figure(path, fig)


def _pareto_plot(path, curves, x_metric, y_metrics):
  """y metric against FID per point, 95% intervals both ways, labelled."""
  fig = report_figures.new_figure(4.6 * len(y_metrics), 3.8)
  for index, metric in enumerate(y_metrics):
    axes = fig.add_subplot(1, len(y_metrics), index + 1)
    for _, value, values in curves:
      x = summary(values.get(x_metric.label), x_metric.scale)
      y = summary(values.get(metric.label), metric.scale)
      if x is None or y is None:
        continue
      axes.errorbar([x.mean], [y.mean], xerr=[[x.mean - x.low],
                                              [x.high - x.mean]],
                    yerr=[[y.mean - y.low], [y.high - y.mean]], marker="o",
                    capsize=3, color="tab:blue")
      axes.annotate(f"{value}", (x.mean, y.mean), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel(f"{x_metric.name} (lower is better)")
    axes.set_ylabel(metric.name)
    axes.grid(alpha=0.3)
  files.atomic_write_figure(path, fig)


def _is_number(value):
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False
