"""The figures of a sampler sweep (Azizi et al. 2023, Figures 3-4, A.1-A.6).

Two kinds, each drawn for a *view* of the grid: a curve field (the x axis
of metric plots, traced along Pareto curves; usually the guidance weight),
an optional line field (one line per value, e.g. the log-variance
coefficient) and the remaining fields, one panel per combination (e.g. the
number of steps):

* metric vs the curve field, one line per line value (Figure 3 left, A.2
  left, A.6 left): one PNG per metric label;
* Pareto curves of two metrics, one curve per line value through the curve
  field's values (each point annotated with its value), the non-dominated
  points of each panel circled: FID vs IS (Figure 3 centre, A.1 right, A.2
  right; one per reference split, at the largest N) and, when CAS was
  computed, CAS vs FID (Figure 4, A.3, A.4).

Every axis is labelled with the metric's full label, e.g. "FID@50K vs
validation (Inception-v3 pool3)": values of different feature networks,
sample counts or references are different quantities.

Figures are drawn on a ``matplotlib.figure.Figure`` with an Agg canvas (no
pyplot, no global backend state) and written atomically; ``index.json``
lists them with what they were drawn from, so a run that changes neither
the points nor the views does not draw them again.
"""

import dataclasses
import itertools
import json
import math
import os
import re
import textwrap

import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.metrics import report

# Which way each metric improves (Pareto fronts, and the figure titles).
HIGHER_IS_BETTER = {
    "FID": False, "KID": False, "IS": True, "precision": True, "recall": True,
    "CAS top-1": True, "CAS top-5": True
}
MAX_COLUMNS = 3
INDEX_FILE = "index.json"
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class PointMetrics:
  """One finished point: its parameters as display strings ({field:
  "1.25"}) and its metrics (``report.MetricValue.as_dict()`` dicts)."""
  parameters: dict
  metrics: list


@dataclasses.dataclass(frozen=True)
class PlotInfo:
  """A written figure: its path, kind ("metric" or "pareto"), axis labels
  and view (curve field, line field or None)."""
  path: str
  kind: str
  x_label: str
  y_label: str
  view: tuple


def slug(text):
  """"FID@50K vs validation" -> "fid_50k_vs_validation"."""
  return _SLUG.sub("_", text.lower()).strip("_")


def short_label(metric):
  """A metric dict's label without the network: "FID@50K vs validation"."""
  text = f"{metric['metric']}@{report.count_label(metric['num_samples'])}"
  if metric.get("reference"):
    text += f" vs {metric['reference']}"
  return text


def resolve_views(parameter_names, views=None):
  """[(curve field, line field or None)] of ``views`` or the default view.

  The default traces ``guidance_weight`` (the first field without it) with
  one line per value of the next field.

  Raises:
    ValueError: a view names a field the grid does not sweep, or the same
      field twice.
  """
  names = list(parameter_names)
  if not views:
    curve = "guidance_weight" if "guidance_weight" in names else names[0]
    others = [n for n in names if n != curve]
    views = [(curve, others[0] if others else None)]
  resolved = []
  for view in views:
    view = [view] if isinstance(view, str) else list(view)
    if not 1 <= len(view) <= 2:
      raise ValueError(f"a plot view is (curve field, line field), got {view}")
    curve, line = view[0], (view[1] if len(view) == 2 else None)
    for field in (curve, line):
      if field is not None and field not in names:
        raise ValueError(f"plot view {view}: {field!r} is not swept "
                         f"(the grid sweeps {names})")
    if curve == line:
      raise ValueError(f"plot view {view} uses {curve!r} twice")
    resolved.append((curve, line))
  return resolved


def _value_key(text):
  """Numbers sort numerically ("128" < "1000"), other strings after them."""
  try:
    return (0, float(text), "")
  except ValueError:
    return (1, 0.0, text)


def _values(points, field):
  return sorted({p.parameters[field] for p in points}, key=_value_key)


def pareto_mask(xs, ys, x_higher_is_better, y_higher_is_better):
  """Which points no other point beats on both metrics (NaNs never are)."""
  x = np.asarray(xs, np.float64) * (1 if x_higher_is_better else -1)
  y = np.asarray(ys, np.float64) * (1 if y_higher_is_better else -1)
  finite = np.isfinite(x) & np.isfinite(y)
  mask = np.zeros(len(x), bool)
  for i in np.nonzero(finite)[0]:
    others = finite.copy()
    others[i] = False
    dominated = (others & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))
    mask[i] = not dominated.any()
  return mask


def _catalogue(points):
  """{label: metric dict} in first-seen order, and each point's values."""
  catalogue, values = {}, []
  for point in points:
    row = {}
    for metric in point.metrics:
      catalogue.setdefault(metric["label"], metric)
      row[metric["label"]] = float(metric["value"])
    values.append(row)
  return catalogue, values


def _figure(num_panels):
  # Figure + Agg canvas, not pyplot: no global backend or figure state.
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  columns = min(MAX_COLUMNS, num_panels)
  rows = math.ceil(num_panels / columns)
  fig = figure.Figure(figsize=(5.2 * columns, 4.2 * rows), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  axes = [fig.add_subplot(rows, columns, k + 1) for k in range(num_panels)]
  return fig, axes


def _suptitle(fig, num_panels, text):
  """A title wrapped to the figure's width (labels can be long)."""
  width = 70 * min(MAX_COLUMNS, num_panels)
  fig.suptitle(textwrap.fill(text, width), fontsize=9)


def _panels(points, panel_fields):
  """Every combination of the panel fields' values, as dicts."""
  options = [_values(points, f) for f in panel_fields]
  return [
      dict(zip(panel_fields, combo)) for combo in itertools.product(*options)
  ]


def _title(panel):
  return ", ".join(f"{k} = {v}" for k, v in panel.items())


def _matching(points, values, panel, **fixed):
  """Values of the points matching the panel and the fixed fields."""
  for point, row in zip(points, values):
    wanted = dict(panel, **fixed)
    if all(point.parameters[k] == v for k, v in wanted.items()):
      return row
  return None


def _direction(metric):
  better = HIGHER_IS_BETTER.get(metric["metric"])
  if better is None:
    return ""
  return f"{metric['metric']}: {'higher' if better else 'lower'} is better"


def plot_metric(path, points, label, metric, curve, line, panel_fields):
  """Metric ``label`` against the curve field, one line per line value."""
  catalogue_values = _catalogue(points)[1]
  curve_values = _values(points, curve)
  line_values = _values(points, line) if line else [None]
  panels = _panels(points, panel_fields)
  fig, axes = _figure(len(panels))
  positions = np.arange(len(curve_values))
  for ax, panel in zip(axes, panels):
    for line_value in line_values:
      ys = []
      for curve_value in curve_values:
        fixed = {curve: curve_value}
        if line:
          fixed[line] = line_value
        row = _matching(points, catalogue_values, panel, **fixed)
        ys.append(np.nan if row is None else row.get(label, np.nan))
      ax.plot(positions, ys, marker="o",
              label=f"{line} = {line_value}" if line else None)
    ax.set_xticks(positions)
    ax.set_xticklabels(curve_values)
    ax.set_xlabel(curve)
    ax.set_ylabel(label, fontsize=8)
    ax.grid(alpha=0.3)
    if line:
      ax.legend(fontsize=7)
    if panel:
      ax.set_title(_title(panel), fontsize=9)
  _suptitle(fig, len(panels), f"{label} vs {curve} ({_direction(metric)})")
  files.atomic_write_figure(path, fig)
  return PlotInfo(path, "metric", curve, label, (curve, line))


def plot_pareto(path, points, x_label, x_metric, y_label, y_metric, curve, line,
                panel_fields):
  """``y_label`` against ``x_label``: one curve per line value through the
  curve field's values, non-dominated points circled."""
  values = _catalogue(points)[1]
  curve_values = _values(points, curve)
  line_values = _values(points, line) if line else [None]
  panels = _panels(points, panel_fields)
  x_better = HIGHER_IS_BETTER.get(x_metric["metric"], True)
  y_better = HIGHER_IS_BETTER.get(y_metric["metric"], True)
  fig, axes = _figure(len(panels))
  for ax, panel in zip(axes, panels):
    all_x, all_y = [], []
    for line_value in line_values:
      xs, ys, names = [], [], []
      for curve_value in curve_values:
        fixed = {curve: curve_value}
        if line:
          fixed[line] = line_value
        row = _matching(points, values, panel, **fixed)
        if row is None:
          continue
        xs.append(row.get(x_label, np.nan))
        ys.append(row.get(y_label, np.nan))
        names.append(curve_value)
      if not xs:
        continue
      ax.plot(xs, ys, marker="o",
              label=f"{line} = {line_value}" if line else f"along {curve}")
      for x, y, name in zip(xs, ys, names):
        if np.isfinite(x) and np.isfinite(y):
          ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4),
                      fontsize=7)
      all_x += xs
      all_y += ys
    front = pareto_mask(all_x, all_y, x_better, y_better)
    if front.any():
      ax.scatter(
          np.asarray(all_x)[front],
          np.asarray(all_y)[front], s=140, facecolors="none",
          edgecolors="black", linewidths=1.0, label="non-dominated", zorder=3)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if panel:
      ax.set_title(_title(panel), fontsize=9)
  _suptitle(
      fig, len(panels), f"points annotated with {curve}; "
      f"{_direction(y_metric)}, {_direction(x_metric)}")
  files.atomic_write_figure(path, fig)
  return PlotInfo(path, "pareto", x_label, y_label, (curve, line))


def write_plots(directory, points, parameter_names, views=None):
  """Every figure of the finished points, for each view, unless
  ``index.json`` says they were drawn from the same points and views.

  Args:
    directory: where the PNGs go.
    points: ``PointMetrics`` of the finished points.
    parameter_names: the swept fields, in grid order.
    views: [(curve field, line field or None), ...]; None: the default
      view (``resolve_views``).

  Returns:
    ``PlotInfo``s of the files written (none without finished points).
  """
  views = resolve_views(parameter_names, views)
  if not points:
    return []
  source = {
      "views": [list(v) for v in views],
      "points": [dataclasses.asdict(p) for p in points]
  }
  index_path = os.path.join(directory, INDEX_FILE)
  if tf.io.gfile.exists(index_path):
    with tf.io.gfile.GFile(index_path) as f:
      index = json.load(f)
    plots = [PlotInfo(**dict(p, view=tuple(p["view"]))) for p in index["plots"]]
    if index["source"] == source and all(
        tf.io.gfile.exists(p.path) for p in plots):
      return plots
  written = _draw(directory, points, parameter_names, views)
  files.atomic_write_json(
      index_path,
      {"source": source, "plots": [dataclasses.asdict(p) for p in written]})
  return written


def _draw(directory, points, parameter_names, views):
  """Draws every figure; returns their ``PlotInfo``s."""
  catalogue = _catalogue(points)[0]
  # Pareto curves use each reference's FID at the largest sample count.
  fids = {}
  for label, metric in catalogue.items():
    if metric["metric"] == "FID":
      best = fids.get(metric["reference"])
      if best is None or metric["num_samples"] > catalogue[best]["num_samples"]:
        fids[metric["reference"]] = label
  scores = [label for label, m in catalogue.items() if m["metric"] == "IS"]
  cas = [
      label for label, m in catalogue.items() if m["metric"].startswith("CAS")
  ]
  written = []
  for curve, line in views:
    panel_fields = [n for n in parameter_names if n not in (curve, line)]
    view_name = curve + (f"_by_{line}" if line else "")
    for label, metric in catalogue.items():
      path = os.path.join(directory,
                          f"{slug(short_label(metric))}_vs_{view_name}.png")
      written.append(
          plot_metric(path, points, label, metric, curve, line, panel_fields))
    pairs = [(s, f) for s in scores for f in fids.values()]
    pairs += [(c, f) for c in cas for f in fids.values()]
    for x_label, y_label in pairs:
      x_metric, y_metric = catalogue[x_label], catalogue[y_label]
      path = os.path.join(
          directory, (f"pareto_{slug(short_label(y_metric))}_vs_"
                      f"{slug(short_label(x_metric))}_along_{view_name}.png"))
      written.append(
          plot_pareto(path, points, x_label, x_metric, y_label, y_metric, curve,
                      line, panel_fields))
  return written
