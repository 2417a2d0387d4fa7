"""Checks the samplers against a data distribution with a known denoiser.

Each configured setting (schedule, steps, respacing, sampler, log-variance
mix, noise conditioning) samples Gaussian data with the optimal epsilon
predictor; the printed mean and standard deviation must match the data's.
Writes report.json to --output_dir; exits 1 if any setting is off.

  python tools/verify_sampler.py --gin_file=gin/verify_sampler.gin \
      --output_dir=/tmp/verify
"""

import os
import sys

from absl import app
from absl import flags
import gin

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.diffusion import analytic

flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("output_dir", None, "Where to write report.json.")
FLAGS = flags.FLAGS


def _print_row(row):
  setting = ", ".join(f"{k}={row[k]}" for k in (
      "schedule", "num_timesteps", "timestep_respacing", "sampler",
      "logvar_coeff", "eta", "model_var_type", "noise_conditioning")
                      if k in row)
  print(f"{'ok  ' if row['ok'] else 'FAIL'} steps={row['steps']:5d} "
        f"mean={row['mean']:+.4f} ({row['mean_error']:+.4f}) "
        f"std={row['std']:.4f} ({row['std_error']:+.4f})  [{setting}]",
        flush=True)


def main(argv):
  del argv
  configuration.parse_gin_or_exit(FLAGS.gin_file, FLAGS.gin_bindings)
  rows = gin.get_configurable(analytic.moment_report)(progress=_print_row)
  if FLAGS.output_dir:
    path = os.path.join(FLAGS.output_dir, "report.json")
    files.atomic_write_json(path, rows)
    print(f"wrote {path}")
  failed = [r for r in rows if not r["ok"]]
  print(f"{len(rows) - len(failed)} of {len(rows)} sampler settings reproduce "
        "the data distribution")
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
