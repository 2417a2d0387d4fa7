"""Sample quality per network evaluation of every sampler, on the trained
embedded cascade.

Run after `make demo` (it needs the main job's exported stages and its
real-data classifier, the feature network and CAS reference on
Fashion-MNIST). For each stage in turn, with the other stage at the main
job's setting, ``tools/sweep.py`` generates the same class-balanced images
(same seeds) with DDPM 1000 and 250 steps, DDIM 50 and DPM-Solver++ (2M,
3M, SDE 2M) at 10-25 evaluations (gin/sweeps/fashion_mnist_sampler_quality_
{base,sr}.gin), and scores FID, precision/recall and the CAS. Then prints,
per stage, each setting's cost and quality next to DDPM 250's, and the
cheapest setting whose FID is within --tolerance of DDPM 250's. With
several --seeds (each a generation seed, so other noise at every point and
other base images), each setting's FID ratio to DDPM 250 is summarized over
the seeds: mean and 95% interval, and whether the whole interval is within
the tolerance. Resumable: killed and run again, finished points are kept.

  python benchmarks/sampler_quality.py --run_dir=runs/pipeline \
      --output_dir=runs/sampler_quality --seeds=0,1,2
"""

import csv
import os
import subprocess
import sys

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags

from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.diffusion_training import trainer
from cdm_tf.metrics import repeated_runs
from cdm_tf.pipeline import job
from cdm_tf.sweeps import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("base", "sr")
REFERENCE_POINT = {"sampler": "ddpm", "timestep_respacing": "250"}
REFERENCE_SETTING = "ddpm 250"
flags.DEFINE_string("run_dir", "runs/pipeline", "The main job's output.")
flags.DEFINE_string("real_data_dir", "data/fashion_mnist", "Real data.")
flags.DEFINE_string("output_dir", "runs/sampler_quality", "Sweeps go here.")
flags.DEFINE_list("stages", list(STAGES), "Stages to sweep.")
flags.DEFINE_list(
    "seeds", ["0"], "Generation seeds (base_seed); one sweep "
    "per seed and stage, in <output_dir>/seed_<seed>/<stage>.")
flags.DEFINE_integer("num_images", 200, "Images per point (class-balanced).")
flags.DEFINE_bool("cas", True, "Also train the CAS classifier per point.")
flags.DEFINE_float(
    "tolerance", 0.05, "FID within this fraction of DDPM "
    "250's counts as equal quality.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra bindings for the sweeps.")
flags.DEFINE_bool(
    "summarize_only", False, "Print the tables of the points "
    "finished so far; generate nothing.")
FLAGS = flags.FLAGS


def _sweep(stage, seed, output_dir):
  command = [
      sys.executable,
      os.path.join(ROOT, "tools", "sweep.py"),
      f"--gin_file={ROOT}/gin/sweeps/fashion_mnist_sampler_quality_{stage}.gin",
      "--gin_bindings=BASE_MODEL_DIR = "
      f"'{os.path.join(FLAGS.run_dir, 'base', trainer.EXPORT_DIR)}'",
      "--gin_bindings=SR_MODEL_DIR = "
      f"'{os.path.join(FLAGS.run_dir, 'sr', trainer.EXPORT_DIR)}'",
      f"--gin_bindings=sweep.SweepSettings.num_images = {FLAGS.num_images}",
      "--gin_bindings=sweep.SweepSettings.fid_sample_counts = "
      f"[{FLAGS.num_images}]",
      f"--gin_bindings=synthetic_dataset.GenerationSettings.base_seed = {seed}",
      *[f"--gin_bindings={b}" for b in FLAGS.gin_bindings],
      f"--real_data_dir={FLAGS.real_data_dir}", f"--output_dir={output_dir}",
      "--feature_network=classifier", "--classifier_model=" + os.path.join(
          FLAGS.run_dir, job.CLASSIFIER_REAL, classifier_trainer.MODEL_FILE),
      "--feature_network_name=Fashion-MNIST tiny ResNet features"
  ]
  if FLAGS.cas:
    command += [
        "--cas", f"--gin_file={ROOT}/gin/classifiers/fashion_mnist/"
        "resnet_tiny_cas.gin"
    ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(command, env=env, check=False)
  if result.returncode:
    raise SystemExit(f"error: the {stage} sweep (seed {seed}) exited "
                     f"{result.returncode}")


def _column(header, prefix):
  matches = [
      h for h in header if h.startswith(prefix) and not h.endswith(" std")
  ]
  return matches[0] if matches else None


def setting_name(row):
  if row["sampler"] in ("ddpm", "ddim"):
    return f"{row['sampler']} {row['timestep_respacing'].replace('ddim', '')}"
  return f"{row['sampler']} {row['steps']}"


def summarize(csv_path, tolerance):
  """Rows of (setting, evaluations, images/s, FID, FID ratio, precision,
  recall, CAS) and the cheapest setting within ``tolerance`` of DDPM 250."""
  with open(csv_path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise SystemExit(f"error: {csv_path} has no finished points")
  header = list(rows[0])
  fid = _column(header, "FID@")
  columns = {
      "precision": _column(header,
                           "precision@"), "recall": _column(header, "recall@"),
      "cas": _column(header, "CAS top-1@")
  }
  reference = [
      r for r in rows if all(r[k] == v for k, v in REFERENCE_POINT.items())
  ]
  reference_fid = float(reference[0][fid]) if reference else None
  table = []
  for row in rows:
    value = float(row[fid])
    scores = {
        k: (float(row[c]) if c and row[c] else None) for k, c in columns.items()
    }
    table.append({
        "setting": setting_name(row),
        "evaluations": int(row["network_evaluations_per_image"]),
        "images_per_second": float(row["generation_images_per_second"]),
        "fid": value,
        "fid_ratio": value / reference_fid if reference_fid else None, **scores
    })
  within = [
      t for t in table
      if t["fid_ratio"] is not None and t["fid_ratio"] <= 1.0 + tolerance
  ]
  cheapest = min(within, key=lambda t: (t["evaluations"], t["fid"]),
                 default=None)
  return fid, table, cheapest


def _print(stage, fid_label, table, cheapest):
  print(f"\n{stage}: {fid_label}")
  print(f"{'setting':18s} {'evals/img':>9s} {'img/s':>6s} {'FID':>7s} "
        f"{'/ddpm250':>8s} {'prec':>5s} {'recall':>6s} {'CAS':>6s}")
  for t in sorted(table, key=lambda t: -t["evaluations"]):

    def show(value, fmt):
      return format(value, fmt) if value is not None else "-"

    print(f"{t['setting']:18s} {t['evaluations']:9d} "
          f"{t['images_per_second']:6.2f} {t['fid']:7.3f} "
          f"{show(t['fid_ratio'], '8.3f')} {show(t['precision'], '5.2f')} "
          f"{show(t['recall'], '6.2f')} {show(t['cas'], '6.2f')}")
  if cheapest:
    print(f"cheapest within {FLAGS.tolerance:.0%} of DDPM 250's FID: "
          f"{cheapest['setting']} ({cheapest['evaluations']} network "
          "evaluations per image for the cascade)")
  else:
    print(f"no setting is within {FLAGS.tolerance:.0%} of DDPM 250's FID")


def over_seeds(tables, tolerance):
  """Per setting in every seed's table: (setting, evaluations, Summary of
  the FID ratio to DDPM 250 over the seeds), cheapest first; and the
  cheapest setting whose whole interval is within ``tolerance``."""
  by_setting = {}
  for table in tables:
    for t in table:
      if t["fid_ratio"] is not None:
        by_setting.setdefault((t["setting"], t["evaluations"]),
                              []).append(t["fid_ratio"])
  rows = sorted(((setting, evaluations, repeated_runs.summarize(ratios))
                 for (setting, evaluations), ratios in by_setting.items()
                 if len(ratios) == len(tables)), key=lambda r: (r[1], r[0]))
  certified = [
      r for r in rows
      if r[0] != REFERENCE_SETTING and r[2].has_interval and r[2].high <= 1.0 +
      tolerance
  ]
  return rows, (certified[0] if certified else None)


def _print_over_seeds(stage, rows, certified, seeds):
  print(f"\n{stage}: FID / DDPM 250's FID over seeds {', '.join(seeds)} "
        "(mean [95% interval])")
  for setting, evaluations, summary in rows:
    print(f"{setting:18s} {evaluations:9d}  {summary.format()}")
  if certified:
    print(f"cheapest whose whole interval is within {FLAGS.tolerance:.0%} of "
          f"DDPM 250's FID: {certified[0]} ({certified[1]} network "
          "evaluations per image for the cascade)")
  else:
    print(f"no setting's whole interval is within {FLAGS.tolerance:.0%} of "
          "DDPM 250's FID")


def main(argv):
  del argv
  unknown = set(FLAGS.stages) - set(STAGES)
  if unknown:
    raise SystemExit(f"error: unknown --stages {sorted(unknown)}; expected "
                     f"{STAGES}")
  try:
    [int(seed) for seed in FLAGS.seeds]
  except ValueError as e:
    raise SystemExit(
        f"error: --seeds must be integers, got {FLAGS.seeds}") from e

  def directory(seed, stage):
    return os.path.join(FLAGS.output_dir, f"seed_{seed}", stage)

  if not FLAGS.summarize_only:
    for seed in FLAGS.seeds:
      for stage in FLAGS.stages:
        _sweep(stage, seed, directory(seed, stage))
  for stage in FLAGS.stages:
    tables = []
    for seed in FLAGS.seeds:
      fid_label, table, cheapest = summarize(
          os.path.join(directory(seed, stage), records.CSV_FILE),
          FLAGS.tolerance)
      _print(f"{stage}, seed {seed}", fid_label, table, cheapest)
      tables.append(table)
    if len(tables) > 1:
      _print_over_seeds(stage, *over_seeds(tables, FLAGS.tolerance),
                        FLAGS.seeds)


if __name__ == "__main__":
  command_line.run(main)
