"""Checks the samplers against a data distribution with a known denoiser.

Each configured setting (schedule, steps, respacing, sampler, log-variance
mix, noise conditioning) samples Gaussian data with the optimal epsilon
predictor; the printed mean and standard deviation must match the data's.
Then each ODE solver's error against the exact probability-flow ODE is
measured at increasing step counts; it must shrink at the solver's order.
Writes report.json to --output_dir; exits 1 if any check fails.

  python tools/verify_sampler.py --gin_file=gin/verify_sampler.gin \
      --output_dir=/tmp/verify
"""

import os
import sys

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import gin

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.diffusion import analytic

flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
# What --output_dir receives.
REPORT_FILE = "report.json"

flags.DEFINE_string("output_dir", None, "Where to write report.json.")
FLAGS = flags.FLAGS


def _print_row(row):
  setting = ", ".join(
      f"{k}={row[k]}" for k in ("schedule", "num_timesteps",
                                "timestep_respacing", "sampler", "logvar_coeff",
                                "eta", "model_var_type", "noise_conditioning")
      if k in row)
  print(
      f"{'ok  ' if row['ok'] else 'FAIL'} steps={row['steps']:5d} "
      f"mean={row['mean']:+.4f} ({row['mean_error']:+.4f}) "
      f"std={row['std']:.4f} ({row['std_error']:+.4f})  [{setting}]",
      flush=True)


def _print_convergence(row):
  errors = " ".join(f"{e:.2e}" for e in row["errors"])
  orders = " ".join(f"{p:.2f}" for p in row["orders"])
  name = row["sampler"] + (f" (order {row['solver_order']})"
                           if "solver_order" in row else "")
  print(
      f"{'ok  ' if row['ok'] else 'FAIL'} {name}: steps "
      f"{','.join(map(str, row['steps']))} max error {errors}; observed "
      f"order {orders} (needs {row['order']})", flush=True)


def main(argv):
  del argv
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  rows = gin.get_configurable(analytic.moment_report)(progress=_print_row)
  convergence = gin.get_configurable(
      analytic.convergence_report)(progress=_print_convergence)
  if FLAGS.output_dir:
    path = os.path.join(FLAGS.output_dir, REPORT_FILE)
    files.atomic_write_json(path, {"moments": rows, "convergence": convergence})
    print(f"wrote {path}")
  failed = [r for r in rows if not r["ok"]]
  print(f"{len(rows) - len(failed)} of {len(rows)} sampler settings reproduce "
        "the data distribution")
  slow = [r for r in convergence if not r["ok"]]
  print(f"{len(convergence) - len(slow)} of {len(convergence)} solvers "
        "converge at their order")
  if failed or slow:
    sys.exit(1)


if __name__ == "__main__":
  command_line.run(main)
