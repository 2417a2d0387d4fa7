"""The claims job's report: each claim's measurements over repeated runs.

``write_report`` reads what the claims job's steps left (classifier
eval.json files, sweep.csv files; see ``claims``) and writes report.md and
its PNGs. Every value is a mean over runs with its 95% t-interval and the
number of runs (``repeated_runs.summarize``); a difference is called an
effect only when the two intervals separate (``repeated_runs.separated``),
and the report says which way each comparison came out. Parts not run yet
are reported as such, so the report can be written at any time.
"""

import os

from cdm_tf import files
from cdm_tf.metrics import repeated_runs
from cdm_tf.pipeline import claim_sweeps
from cdm_tf.pipeline import claims
from cdm_tf.pipeline import job
from cdm_tf.pipeline import report
from cdm_tf.pipeline import report_figures
from cdm_tf.pipeline import run_outputs

MIX_PNG = "real_plus_synthetic.png"


def _augmentation_section(config, output_dir, report_dir):
  stages = [
      claim_sweeps.SweptStage(
          v.description,
          tuple(
              claims.augmentation_dir(output_dir, v, s)
              for s in config.generation_seeds))
      for v in config.augmentation_variants
  ]
  baseline = next(v.description
                  for v in config.augmentation_variants
                  if v.name == config.augmentation_baseline)
  return claim_sweeps.augmentation_section(report_dir, stages, baseline)


def _guidance_section(config, output_dir, report_dir):
  return claim_sweeps.guidance_section(
      report_dir,
      [claims.guidance_dir(output_dir, s) for s in config.generation_seeds])


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
    base = claim_sweeps.summary(_classifier_top1(config, output_dir, mix, 0.0),
                                100.0)
    rows = []
    for k in mix.multipliers:
      summary = base if not k else claim_sweeps.summary(
          _classifier_top1(config, output_dir, mix, k), 100.0)
      if k and base is not None and summary is not None:
        difference = f"{summary.mean - base.mean:+.2f}"
        verdict = repeated_runs.verdict(summary, base, True)
      else:
        difference, verdict = "-", "-"
      rows.append([f"{k:g}", claim_sweeps.shown(summary), difference, verdict])
      if summary is not None:
        curves.append((mix.name, k, summary))
    text += (f"\n**{mix.name}**: floor({mix.real_fraction:g} x count) real "
             "images per class, + k x as many generated ones.\n\n")
    text += report.table(
        ["k", "top-1 % on real validation", "vs real only", "verdict"], rows)
  if curves:
    _mix_plot(os.path.join(report_dir, MIX_PNG), curves)
    text += "\n" + report.image_link(MIX_PNG, "top-1 against k per mix")
  text += ("\nEach value: mean [95% interval] (runs) over classifier seeds "
           "(the same generated images; the seed changes initialisation, "
           "order and augmentation). An epoch is a pass over the real and "
           "generated images together, as in Azizi et al.'s merged-data "
           "training, so a larger k also trains for more steps.\n")
  return text


# ----------------------------------------------------------------- figures


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
  report_dir = os.path.join(output_dir, job.REPORT_DIR)
  os.makedirs(report_dir, exist_ok=True)
  parts = [
      f"# {config.title}\n",
      report.bullets(
          list(notes) + [
              "Every value is a mean over repeated runs with its 95% "
              "t-interval and the number of runs; a difference is called "
              "an effect only when the two intervals separate."
          ]),
      report.section("Claim 1: conditioning augmentation (CDM Tables 2b, 3a)",
                     _augmentation_section, config, output_dir, report_dir),
      report.section(
          "Claim 2: guidance against classification (Azizi et al. "
          "Fig. 3)", _guidance_section, config, output_dir, report_dir),
      report.section(
          "Claim 3: real + synthetic training data (Azizi et al. "
          "Table 4, Fig. 6)", _mix_section, config, output_dir, report_dir),
      report.section("Settings", report.settings_section, settings),
      report.section("Wall time per step", report.times_section, step_seconds)
  ]
  path = os.path.join(report_dir, report.REPORT_FILE)
  text = "\n".join(p for p in parts if p).rstrip() + "\n"
  files.atomic_write_bytes(path, text.encode("utf-8"))
  return path
