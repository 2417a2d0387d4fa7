"""The claims job's report: each claim's measurements over repeated runs.

``write_report`` reads what the claims job's steps left (classifier
eval.json files, sweep.csv files; see ``claims``) and writes report.md and
its PNGs. Every value is a mean over runs with its 95% t-interval and the
number of runs (``repeated_runs.summarize``); a difference is called an
effect only when the two intervals separate (``repeated_runs.separated``),
and the report says which way each comparison came out. Parts not run yet
are reported as such, so the report can be written at any time.
"""

import dataclasses
import os

import numpy as np

from cdm_tf import files
from cdm_tf.generation import sweep
from cdm_tf.metrics import repeated_runs
from cdm_tf.pipeline import claims
from cdm_tf.pipeline import report
from cdm_tf.pipeline import report_figures
from cdm_tf.pipeline import run_outputs

REPORT_FILE = report.REPORT_FILE
MIX_PNG = "real_plus_synthetic.png"
GUIDANCE_PNG = "guidance_pareto.png"
AUGMENTATION_PNG = "conditioning_augmentation.png"
FID_PREFIX = "FID@"
IS_PREFIX = "IS@"
CAS_PREFIX = "CAS top-1"


@dataclasses.dataclass(frozen=True)
class Metric:
  """A sweep column summarised over seeds."""
  name: str  # "FID", "IS", "CAS top-1 %"
  label: str  # the full column label (network, sample count, reference)
  higher_is_better: bool
  scale: float = 1.0


def _column(header, prefix, contains=""):
  for name in header:
    if name.startswith(prefix) and contains in name and not name.endswith(
        " std"):
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


def _read_sweeps(directories):
  """{point name: {column: [values over the seeds that finished it]}},
  the parameter columns of the first row seen, and the metric columns."""
  points, parameters, header = {}, {}, None
  for directory in directories:
    path = os.path.join(directory, sweep.CSV_FILE)
    if not os.path.exists(path):
      continue
    for row in sweep.read_csv(path):
      header = header or list(row)
      values = points.setdefault(row["point"], {})
      parameters.setdefault(row["point"], row)
      for name, text in row.items():
        try:
          values.setdefault(name, []).append(float(text))
        except (TypeError, ValueError):
          continue
  return points, parameters, sweep_metrics(header or [])


def _summary(values, scale=1.0):
  if not values:
    return None
  return repeated_runs.summarize([scale * v for v in values])


def _shown(summary, spec=".2f"):
  return "-" if summary is None else summary.format(spec)


def judgment(a, b, higher_is_better):
  """How summary a compares with summary b of one metric, in words."""
  if a is None or b is None:
    return "not measured yet"
  if not (a.has_interval and b.has_interval):
    return "one run only, no interval: no claim"
  if not repeated_runs.separated(a, b):
    return "the intervals overlap: no difference resolved"
  better = (a.mean > b.mean) == higher_is_better
  return f"**effect: {'better' if better else 'worse'}** (intervals separate)"


def _verdict(a, b, higher_is_better, what_a, what_b):
  return f"{what_a} vs {what_b}: {judgment(a, b, higher_is_better)}."


def _best(points, names, metric):
  """The point among ``names`` with the best mean of ``metric``."""
  scored = [(np.mean(points[n][metric.label]), n) for n in names
            if points[n].get(metric.label)]
  if not scored:
    return None
  scored.sort(reverse=metric.higher_is_better)
  return scored[0][1]


# ----------------------------------------------------------------- claim 1


def _augmentation_section(config, output_dir, report_dir):
  rows, curves, verdicts = [], [], []
  by_variant = {}
  metrics = []
  for variant in config.augmentation_variants:
    points, parameters, found = _read_sweeps(
        [claims.augmentation_dir(output_dir, variant, s)
         for s in config.generation_seeds])
    metrics = metrics or found
    for name, values in points.items():
      level = parameters[name].get("aug_level", "-")
      rows.append([variant.description, level] + [
          _shown(_summary(values.get(m.label), m.scale)) for m in found])
      curves.append((variant.description, level, values))
    by_variant[variant.name] = (points, found)
  if not rows:
    return "Not run yet."
  text = report.table(["super-resolution training", "sampling s"]
                      + [m.name for m in metrics], rows)
  text += ("\nEach cell: mean [95% interval] (runs) over generation seeds; "
           f"columns: {'; '.join(m.label for m in metrics)}.\n")
  baseline = config.augmentation_baseline
  if baseline in by_variant:
    base_points, _ = by_variant[baseline]
    base_name = next(v.description for v in config.augmentation_variants
                     if v.name == baseline)
    for variant in config.augmentation_variants:
      if variant.name == baseline:
        continue
      points, found = by_variant[variant.name]
      for metric in found:
        mine = _best(points, list(points), metric)
        theirs = _best(base_points, list(base_points), metric)
        if mine is None or theirs is None:
          continue
        level = points[mine].get("aug_level", [None])
        level_text = (f" at s = {level[0]:g}" if level and level[0]
                      is not None else "")
        verdicts.append(_verdict(
            _summary(points[mine][metric.label], metric.scale),
            _summary(base_points[theirs][metric.label], metric.scale),
            metric.higher_is_better,
            f"{metric.name}: {variant.description}{level_text}", base_name))
  if verdicts:
    text += "\n" + report.bullets(verdicts)
  if metrics:
    _error_bar_plot(os.path.join(report_dir, AUGMENTATION_PNG), curves,
                    metrics, "sampling s")
    text += "\n" + report.image_link(AUGMENTATION_PNG,
                                     "metrics per augmentation variant")
  return text


# ----------------------------------------------------------------- claim 2


def _guidance_section(config, output_dir, report_dir):
  points, parameters, metrics = _read_sweeps(
      [claims.guidance_dir(output_dir, s) for s in config.generation_seeds])
  if not points:
    return "Not run yet."
  names = sorted(points, key=lambda n: points[n].get("guidance_weight",
                                                     [0.0])[0])
  rows = [[parameters[n].get("guidance_weight", n)] + [
      _shown(_summary(points[n].get(m.label), m.scale)) for m in metrics]
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
      verdicts.append(_verdict(
          _summary(points[best_cas][cas.label], cas.scale),
          _summary(points[best_fid][cas.label], cas.scale), True,
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


# ----------------------------------------------------------------- claim 3


def _classifier_top1(config, output_dir, mix, k):
  values = []
  for seed in config.classifier_seeds:
    run = run_outputs.read_classifier_run(
        "", claims.classifier_dir(output_dir, mix, k, seed))
    if run.status == run_outputs.FINISHED:
      values.append(run.top1)
  return values


def _mix_section(config, output_dir, report_dir):
  text, curves = "", []
  for mix in config.data_mixes:
    base = _summary(_classifier_top1(config, output_dir, mix, 0.0), 100.0)
    rows = []
    for k in mix.multipliers:
      summary = _summary(_classifier_top1(config, output_dir, mix, k), 100.0)
      if k and base is not None and summary is not None:
        difference = f"{summary.mean - base.mean:+.2f}"
        verdict = judgment(summary, base, True)
      else:
        difference, verdict = "-", "-"
      rows.append([f"{k:g}", _shown(summary), difference, verdict])
      if summary is not None:
        curves.append((mix.name, k, summary))
    text += (f"\n**{mix.name}**: floor({mix.real_fraction:g} x count) real "
             "images per class, + k x as many generated ones.\n\n")
    text += report.table(["k", "top-1 % on real validation",
                          "vs real only", "verdict"], rows)
  if curves:
    _mix_plot(os.path.join(report_dir, MIX_PNG), curves)
    text += "\n" + report.image_link(MIX_PNG, "top-1 against k per mix")
  text += ("\nEach value: mean [95% interval] (runs) over classifier seeds "
           "(the same generated images; the seed changes initialisation, "
           "order and augmentation).\n")
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
        summary = _summary(values.get(metric.label), metric.scale)
        if curve_label != label or summary is None:
          continue
        xs.append(float(x) if _is_number(x) else len(xs))
        means.append(summary.mean)
        errors.append([summary.mean - summary.low,
                       summary.high - summary.mean])
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
      x = _summary(values.get(x_metric.label), x_metric.scale)
      y = _summary(values.get(metric.label), metric.scale)
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


def _mix_plot(path, curves):
  fig = report_figures.new_figure(5.0, 3.6)
  axes = fig.add_subplot()
  for name in dict.fromkeys(c[0] for c in curves):
    points = [(k, s) for n, k, s in curves if n == name]
    axes.errorbar([k for k, _ in points], [s.mean for _, s in points],
                  yerr=[[s.mean - s.low for _, s in points],
                        [s.high - s.mean for _, s in points]], marker="o",
                  capsize=3, label=name)
  axes.set_xlabel("k (synthetic images per real one)")
  axes.set_ylabel("top-1 % on real validation")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  files.atomic_write_figure(path, fig)


def _is_number(value):
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False


# ------------------------------------------------------------------ report


def write_report(config, output_dir, step_seconds=None, notes=(),
                 settings=None):
  """Writes ``<output_dir>/report/report.md`` and its PNGs.

  Args:
    config: the ``claims.ClaimsConfig`` the job ran.
    output_dir: the job's output directory.
    step_seconds: {step name: wall seconds}.
    notes: lines shown below the title.
    settings: {setting: value} of what was run.

  Returns:
    The path of report.md.
  """
  report_dir = os.path.join(output_dir, claims.REPORT_DIR)
  os.makedirs(report_dir, exist_ok=True)
  parts = [f"# {config.title}\n",
           report.bullets(list(notes) + [
               "Every value is a mean over repeated runs with its 95% "
               "t-interval and the number of runs; a difference is called "
               "an effect only when the two intervals separate."]),
           report.section(
               "Claim 1: conditioning augmentation (CDM Tables 2b, 3a)",
               _augmentation_section, config, output_dir, report_dir),
           report.section(
               "Claim 2: guidance against classification (Azizi et al. "
               "Fig. 3)", _guidance_section, config, output_dir, report_dir),
           report.section(
               "Claim 3: real + synthetic training data (Azizi et al. "
               "Table 4, Fig. 6)", _mix_section, config, output_dir,
               report_dir),
           report.section("Settings", report.settings_section, settings),
           report.section("Wall time per step", report.times_section,
                          step_seconds)]
  path = os.path.join(report_dir, REPORT_FILE)
  text = "\n".join(p for p in parts if p).rstrip() + "\n"
  files.atomic_write_bytes(path, text.encode("utf-8"))
  return path
