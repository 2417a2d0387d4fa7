"""The pipeline's report: report.md and its PNGs in one movable folder.

``write_report`` reads what the steps left (``run_outputs``) and writes:

* ``samples_per_class.png``: per class, the first generated images next to
  the first real images of the class (``report_figures.sample_grid``);
* the classifiers' top-1 / top-5 on the real validation split as a table
  and ``accuracy.png``; the synthetic-only run is the CAS;
* the sample-quality metrics with their full labels (a label names the
  feature network: values of different networks are different quantities);
* ``loss_curves.png``, the diffusion models' last training sample sheets
  and the classifiers' per-class accuracy plots (copied in);
* the synthetic set, the settings, the step times and notes.

Any part may be missing (a step not run yet, a stopped run): the report
says so in its place. It is rewritten whole on every call; every file is
written atomically and referenced by a relative path, so the folder can be
moved or served as it is.
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.pipeline import report_figures
from cdm_tf.pipeline import run_outputs
from cdm_tf.sweeps import plots

REPORT_FILE = "report.md"
SAMPLES_PNG = "samples_per_class.png"
ACCURACY_PNG = "accuracy.png"
LOSS_PNG = "loss_curves.png"
# Above this many classes the grid shows this many, evenly spaced.
MAX_GRID_CLASSES = 32
NOT_RUN = run_outputs.NOT_RUN
NO_DATA = "no data"


def write_report(report_dir, *, title, real_data_dir, synthetic_dir,
                 diffusion_runs, classifier_runs, metrics_file=None,
                 baseline_metrics_file=None, metrics_heading="Sample quality",
                 settings=None, step_seconds=None, real_split="validation",
                 synthetic_split="train", samples_per_class=8,
                 max_grid_classes=MAX_GRID_CLASSES, notes=(),
                 extra_sections=()):
  """Writes ``<report_dir>/report.md`` and its PNGs from the steps' outputs.

  Args:
    report_dir: the report folder (created).
    title: the report's heading.
    real_data_dir: real data (ImageNet TFRecord format, classes.json).
    synthetic_dir: the generated set (shards and manifest).
    diffusion_runs: ordered {label: model_dir} of diffusion training runs.
    classifier_runs: ordered {label: model_dir} of classifier runs.
    metrics_file: a ``MetricsReport`` JSON.
    baseline_metrics_file: the same metrics of real images of the same
      count (tools/evaluate.py --real_baseline_split), shown for scale.
    metrics_heading: the heading of the metrics' section.
    settings: {setting: value} of what was run; nested dicts are flattened
      to dotted keys.
    step_seconds: {step name: wall seconds}.
    real_split: the real split shown in the sample grid (the classifiers'
      numbers are on the split they were evaluated on, the validation
      split).
    synthetic_split: the synthetic set's split.
    samples_per_class: images per class of each block of the grid.
    max_grid_classes: at most this many classes in the grid.
    notes: lines shown as a bullet list below the title.
    extra_sections: (heading, build, args) parts after the sample quality,
      each rendered by ``section``.

  Returns:
    The path of report.md.
  """
  tf.io.gfile.makedirs(report_dir)
  synthetic = _guarded(None, run_outputs.read_synthetic_set, synthetic_dir,
                       synthetic_split)
  diffusion = [
      _guarded(label, run_outputs.read_diffusion_run, label, path)
      for label, path in diffusion_runs.items()
  ]
  classifiers = [
      _guarded(label, run_outputs.read_classifier_run, label, path)
      for label, path in classifier_runs.items()
  ]
  names = _link_names(list(diffusion_runs) + list(classifier_runs))
  parts = [f"# {title}\n", bullets(notes)]
  parts.append(
      section("Samples per class", _samples_section, report_dir, real_data_dir,
              synthetic, real_split, samples_per_class, max_grid_classes))
  parts.append(
      section("Classifier accuracy", _accuracy_section, report_dir,
              classifiers))
  parts.append(
      section(metrics_heading, metrics_section, metrics_file,
              baseline_metrics_file))
  parts += [
      section(heading, build, *args) for heading, build, args in extra_sections
  ]
  parts.append(
      section("Training loss", _loss_section, report_dir, diffusion,
              classifiers))
  parts.append(
      section("Diffusion models", _diffusion_section, report_dir, diffusion,
              names))
  parts.append(
      section("Per-class accuracy", _per_class_section, report_dir, classifiers,
              names))
  parts.append(section("Synthetic set", _synthetic_section, synthetic))
  parts.append(section("Settings", settings_section, settings))
  parts.append(section("Step times", times_section, step_seconds))
  path = os.path.join(report_dir, REPORT_FILE)
  text = "\n".join(p for p in parts if p).rstrip() + "\n"
  files.atomic_write_bytes(path, text.encode("utf-8"))
  return path


# ----------------------------------------------------------- scaffolding


class _Unreadable:
  """Stands for an output that exists but could not be read."""

  def __init__(self, label, error):
    self.label = label
    self.error = error


def _guarded(label, read, *args):
  try:
    return read(*args)
  except run_outputs.READ_ERRORS as e:
    return _Unreadable(label, f"{type(e).__name__}: {e}")


def section(heading, build, *args):
  """``## heading`` and the body ``build`` returns; a part that cannot be
  read or drawn is reported in place of its body."""
  try:
    body = build(*args)
  except run_outputs.READ_ERRORS as e:
    body = f"{NO_DATA}: could not read this part ({type(e).__name__}: {e})"
  return f"## {heading}\n\n{body.rstrip()}\n"


def _cell(value):
  text = "-" if value is None else str(value)
  return text.replace("|", "\\|").replace("\n", " ")


def table(header, rows):
  lines = [
      "| " + " | ".join(_cell(h) for h in header) + " |",
      "|" + "|".join("---" for _ in header) + "|"
  ]
  lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def bullets(lines):
  lines = [str(line) for line in lines or ()]
  return "".join(f"- {_cell(line)}\n" for line in lines)


def image_link(file_name, alt):
  return f"![{alt}]({file_name})\n"


def _link_names(labels):
  """A distinct file-name part per run label ("real + synthetic" ->
  "real_synthetic")."""
  names, used = {}, set()
  for label in labels:
    base = plots.slug(label) or "run"
    name, k = base, 2
    while name in used:
      name, k = f"{base}_{k}", k + 1
    used.add(name)
    names[label] = name
  return names


def _copy(source, report_dir, file_name):
  with tf.io.gfile.GFile(source, "rb") as f:
    files.atomic_write_bytes(os.path.join(report_dir, file_name), f.read())
  return file_name


def _count(value):
  return "-" if value is None else f"{int(value):,}"


def _percent(value):
  return "-" if value is None else f"{100 * value:.2f}"


def number(value):
  """A metric value as shown: 4 significant digits (FID 12.35, KID
  0.001234); non-finite values as stored ("nan")."""
  try:
    return f"{float(value):.4g}"
  except (TypeError, ValueError):
    return str(value)


# ------------------------------------------------------------- sections


def _grid_classes(num_classes, max_classes):
  if num_classes <= max_classes:
    return list(range(num_classes))
  return sorted(
      {int(round(c)) for c in np.linspace(0, num_classes - 1, max_classes)})


def _samples_section(report_dir, real_data_dir, synthetic, real_split,
                     per_class, max_classes):
  if isinstance(synthetic, _Unreadable):
    return f"{NO_DATA}: the synthetic set is unreadable ({synthetic.error})"
  if not synthetic.shard_paths:
    return f"Generation {NOT_RUN}: no synthetic set in {synthetic.directory}."
  num_classes = None
  if synthetic.manifest:
    num_classes = synthetic.manifest.num_classes
  elif synthetic.record:
    num_classes = len(synthetic.record["plan"]["class_counts"])
  names = run_outputs.load_class_names(real_data_dir, num_classes)
  num_classes = num_classes or len(names)
  class_ids = _grid_classes(num_classes, max_classes)
  generated = run_outputs.synthetic_per_class(synthetic.shard_paths, class_ids,
                                              per_class)
  images = [i for row in generated.values() for i in row]
  if not images:
    return f"{NO_DATA}: the synthetic set holds no images of these classes."
  side = int(images[0].shape[0])
  try:
    real = run_outputs.real_per_class(real_data_dir, real_split, num_classes,
                                      class_ids, per_class)
    real_note = ""
  except run_outputs.READ_ERRORS as e:
    real = {c: [] for c in class_ids}
    real_note = (f" No real `{real_split}` images ({type(e).__name__}: "
                 f"{e}): grey cells.")
  report_figures.sample_grid(os.path.join(report_dir, SAMPLES_PNG),
                             [names[c] for c in class_ids],
                             [generated[c] for c in class_ids],
                             [real[c] for c in class_ids], per_class, side,
                             "generated", f"real ({real_split})")
  cell = report_figures.cell_size(side)
  shown = (f"all {num_classes} classes" if len(class_ids) == num_classes else
           f"{len(class_ids)} of {num_classes} classes, evenly spaced "
           "by label")
  incomplete = ("" if synthetic.manifest else
                " The set is still incomplete (no manifest yet).")
  return (image_link(SAMPLES_PNG, "generated and real images per class") +
          f"\nOne row per class ({shown}). Left: the first {per_class} "
          f"generated images of the class in record order; right: the first "
          f"{per_class} real images of the class in the `{real_split}` "
          f"split, centre-cropped and resized (anti-aliased) to the "
          f"generated {side} x {side} as for diffusion training. Shown at "
          f"{cell} px" +
          (" (nearest-neighbour upscaling)" if cell > side else "") +
          "; grey cells: the class has fewer images." + incomplete + real_note +
          "\n\nRows, top to bottom: " + ", ".join(names[c] for c in class_ids) +
          ".\n")


def _classifier_status(run):
  kind = ("CAS" if run.is_cas else
          "CAS protocol, real images" if run.is_cas_reference else "")
  if run.status == run_outputs.FINISHED:
    return kind
  return (kind + "; " if kind else "") + run.status


def _cas_ratio(classifiers):
  """The CAS over its real reference's accuracy, as a sentence, or ""."""
  finished = [
      r for r in classifiers
      if not isinstance(r, _Unreadable) and r.status == run_outputs.FINISHED
  ]
  synthetic = [r for r in finished if r.is_cas]
  reference = [r for r in finished if r.is_cas_reference]
  if len(synthetic) != 1 or len(reference) != 1 or not reference[0].top1:
    return ""
  cas_run, real_run = synthetic[0], reference[0]
  matched = cas_run.synthetic_images == real_run.real_images
  return (f"\nCAS / the same protocol on real images: {cas_run.top1:.4f} / "
          f"{real_run.top1:.4f} = **{cas_run.top1 / real_run.top1:.3f}** "
          f"(one run each; trained on {_count(cas_run.synthetic_images)} "
          f"generated and {_count(real_run.real_images)} real images" +
          ("" if matched else ": not the same number") + "; Azizi et "
          "al. report 69.24 / 73.09 = 0.947 on ImageNet).\n")


def _accuracy_section(report_dir, classifiers):
  if not classifiers:
    return f"Classifier training {NOT_RUN}."
  rows, labels, top1, is_cas = [], [], [], []
  split_sizes = set()
  for run in classifiers:
    if isinstance(run, _Unreadable):
      rows.append(
          [run.label, "-", "-", "-", "-", "-", "-", f"unreadable: {run.error}"])
      continue
    steps = None
    if run.step is not None:
      planned = run.run.get("num_steps")
      steps = (f"{run.step:,}" if planned in (None, run.step) else
               f"{run.step:,} of {planned:,}")
    if run.eval_examples:
      split_sizes.add(run.eval_examples)
    rows.append([
        run.label,
        run.run.get("model"),
        _count(run.real_images),
        _count(run.synthetic_images), steps,
        _percent(run.top1),
        _percent(run.top5),
        _classifier_status(run)
    ])
    labels.append(run.label)
    top1.append(run.top1)
    is_cas.append(run.is_cas)
  text = table([
      "run", "model", "real images", "synthetic images", "steps", "top-1 %",
      "top-5 %", "note"
  ], rows)
  evaluated = (" (" + ", ".join(f"{n:,}" for n in sorted(split_sizes)) +
               " images)") if split_sizes else ""
  text += (f"\nTop-1 / top-5 accuracy on the real validation split"
           f"{evaluated}. Training images are those of one epoch. CAS "
           "(Classification Accuracy Score): the classifier trained on "
           "generated images only, tested on real ones.\n")
  text += _cas_ratio(classifiers)
  if labels:
    report_figures.accuracy_chart(os.path.join(report_dir, ACCURACY_PNG),
                                  labels, top1, is_cas, "validation")
    text += "\n" + image_link(ACCURACY_PNG, "top-1 accuracy per classifier")
  return text


def _metrics_rows(metrics):
  rows = []
  for m in metrics:
    value = number(m["value"])
    if m.get("std") is not None:
      value += f" ± {number(m['std'])}"
    rows.append([m["label"], value, _count(m.get("num_samples"))])
  return rows


def metrics_section(metrics_file, baseline_file=None):
  """The table of a ``MetricsReport`` JSON [and of its real baseline]."""
  metrics = run_outputs.read_metrics(metrics_file)
  if metrics is None:
    return f"Sample-quality metrics {NOT_RUN}."
  if not metrics:
    return f"{NO_DATA}: {metrics_file} holds no metrics."
  text = (table(["metric (feature network)", "value", "generated images"],
                _metrics_rows(metrics)) +
          "\nEach label names the feature network: values computed on "
          "different networks, sample counts or reference splits are "
          "different quantities.\n")
  notes = run_outputs.read_metrics_notes(metrics_file)
  if notes:
    text += "\n" + bullets(notes)
  baseline = run_outputs.read_metrics(baseline_file)
  if baseline:
    text += ("\nFor scale, the same metrics of real images (the first "
             "ones of a real split not used as the reference), as many as "
             "the generated ones:\n\n" +
             table(["metric (feature network)", "value", "real images"],
                   _metrics_rows(baseline)))
  return text


def _loss_section(report_dir, diffusion, classifiers):

  def curve(run):
    if isinstance(run, _Unreadable):
      return (run.label, None, "unreadable")
    return (run.label, run.loss, NOT_RUN if run.status == NOT_RUN else NO_DATA)

  panels = [(f"diffusion: {c[0]}", [c]) for c in map(curve, diffusion)]
  panels.append(("classifiers", [curve(r) for r in classifiers]))
  if not any(
      s is not None and len(s) for _, curves in panels for _, s, _ in curves):
    return f"{NO_DATA}: no run has logged train/loss yet."
  report_figures.loss_curves(os.path.join(report_dir, LOSS_PNG), panels)
  return (image_link(LOSS_PNG, "train/loss per step") +
          "\ntrain/loss as logged (means over the logging interval), "
          "faint; smoothed on top.\n")


def _diffusion_section(report_dir, diffusion, names):
  if not diffusion:
    return f"Diffusion training {NOT_RUN}."
  rows, sheets = [], []
  for run in diffusion:
    if isinstance(run, _Unreadable):
      rows.append([run.label, "-", "-", f"unreadable: {run.error}"])
      continue
    status = {
        run_outputs.FINISHED: "finished, exported",
        run_outputs.NO_RESULT: "not exported (stopped or running)"
    }.get(run.status, run.status)
    last = (int(run.loss.steps[-1]),
            number(run.loss.values[-1])) if len(run.loss) else (None, None)
    rows.append([run.label, _count(last[0]), last[1], status])
    if run.last_sheet:
      file_name = _copy(run.last_sheet, report_dir,
                        f"samples_{names[run.label]}.png")
      sheets.append(f"\n### {run.label}: samples at step "
                    f"{run.last_sheet_step:,}\n\n" +
                    image_link(file_name, f"{run.label} samples"))
  return (
      table(["run", "last logged step", "last train/loss", "status"], rows) +
      "".join(sheets) +
      ("" if sheets else "\nNo training sample sheets yet.\n"))


def _per_class_section(report_dir, classifiers, names):
  parts = []
  for run in classifiers:
    if isinstance(run, _Unreadable):
      parts.append(f"### {run.label}\n\n{NO_DATA}: {run.error}\n")
    elif run.per_class_png:
      file_name = _copy(run.per_class_png, report_dir,
                        f"per_class_{names[run.label]}.png")
      parts.append(f"### {run.label}\n\n" +
                   image_link(file_name, f"{run.label} per-class accuracy"))
    else:
      status = (NO_DATA if run.status == run_outputs.FINISHED else run.status)
      parts.append(f"### {run.label}\n\n{status}.\n")
  return "\n".join(parts) if parts else f"Classifier training {NOT_RUN}."


def _stage_text(stage):
  """A cascade stage's scalar settings, "resolution=64, sampler=ddpm"."""
  return ", ".join(f"{k}={v}" for k, v in stage.items()
                   if k != "model_dir" and not isinstance(v, (dict, list)))


def _synthetic_section(synthetic):
  if isinstance(synthetic, _Unreadable):
    return f"{NO_DATA}: unreadable ({synthetic.error})"
  if synthetic.status == NOT_RUN:
    return f"Generation {NOT_RUN}."
  rows = [["directory", synthetic.directory], ["split", synthetic.split]]
  manifest = synthetic.manifest
  if manifest is None:
    planned = (synthetic.record or {}).get("plan", {}).get("num_shards")
    rows.append([
        "status", f"incomplete: {len(synthetic.shard_paths)} of "
        f"{planned or '?'} shards written, no manifest yet"
    ])
    return table(["", "value"], rows)
  low, high = min(manifest.class_counts), max(manifest.class_counts)
  per_class = f"{low:,}" if low == high else f"{low:,} to {high:,}"
  rows += [["images", f"{manifest.num_examples:,} ({per_class} per class)"],
           ["classes", manifest.num_classes],
           ["image format", manifest.image_format],
           ["shards", manifest.num_shards]]
  settings = dict(manifest.settings)
  cascade = settings.pop("cascade", None)
  stages = cascade.get("stages", []) if isinstance(cascade, dict) else []
  for k, stage in enumerate(stages, 1):
    rows.append([f"stage {k}", _stage_text(stage)])
  rows += [[key, value] for key, value in _flatten(settings).items()]
  return table(["", "value"], rows)


def _flatten(settings, prefix=""):
  out = {}
  for key, value in settings.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      out.update(_flatten(value, f"{name}."))
    elif isinstance(value, (list, tuple, dict)):
      out[name] = json.dumps(value)
    elif isinstance(value, float):
      out[name] = f"{value:g}"
    else:
      out[name] = value
  return out


def settings_section(settings):
  if not settings:
    return f"{NO_DATA}: no settings given."
  return table(["setting", "value"], list(_flatten(settings).items()))


def duration(seconds):
  """12.3 s, 4 min 05 s, 2 h 03 min."""
  seconds = float(seconds)
  if not math.isfinite(seconds):
    return str(seconds)
  if round(seconds, 1) < 60:
    return f"{seconds:.1f} s"
  whole = int(round(seconds))
  hours, rest = divmod(whole, 3600)
  minutes, secs = divmod(rest, 60)
  return (f"{hours} h {minutes:02d} min"
          if hours else f"{minutes} min {secs:02d} s")


def times_section(step_seconds):
  if not step_seconds:
    return f"{NO_DATA}: no step has recorded its time."
  total = sum(float(s) for s in step_seconds.values())
  rows = [[
      name,
      duration(s), f"{100 * float(s) / total:.1f}" if total > 0 else "-"
  ] for name, s in step_seconds.items()]
  rows.append(["total", duration(total), "100.0" if total > 0 else "-"])
  return table(["step", "wall time", "share %"], rows)
