"""The end-to-end job: real data -> cascade -> synthetic set -> metrics ->
classifiers on real, synthetic and real + synthetic data -> a report.

  # the embedded Fashion-MNIST on a laptop (gin/pipelines/fashion_mnist.gin)
  python tools/pipeline.py

  # the papers' claims on it, over repeated runs (a few hours)
  python tools/pipeline.py --gin_file=gin/pipelines/fashion_mnist_claims.gin \
      --output_dir=runs/claims

  # ImageNet with the papers' configs, TPU
  python tools/pipeline.py --gin_file=gin/pipelines/azizi_imagenet.gin \
      --gin_bindings='REAL_DATA_DIR = "gs://bucket/imagenet"' \
      --gin_bindings='SR1024_MODEL_DIR = "gs://bucket/exports/sr1024"' \
      --output_dir=gs://bucket/runs/azizi --strategy=tpu --tpu=my-tpu \
      --mixed_precision=bfloat16

Every step is a tools/ binary run in its own process (see
cdm_tf/pipeline/job.py for the steps and the output layout); their output
is echoed with the step's name and kept in <output_dir>/logs/. Killed or
stopped, the job resumes where it stopped when run again with the same
flags: finished steps are skipped, the running one resumes from its own
checkpoints or shards. The report (<output_dir>/report/report.md) is
rewritten at the end of every run, also after a failed step, with what
exists. --dry_run prints the steps' command lines.

Exit status: 2 bad flags or configuration; 3 the output directory was made
with other settings; otherwise a failed step's own status.
"""

import os

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags

from cdm_tf import configuration
from cdm_tf.pipeline import claims
from cdm_tf.pipeline import claims_report
from cdm_tf.pipeline import job
from cdm_tf.pipeline import report
from cdm_tf.pipeline import runner
from cdm_tf.training import strategies

DEFAULT_GIN_FILE = "gin/pipelines/fashion_mnist.gin"

flags.DEFINE_multi_string(
    "gin_file", None, "Gin config files of the job "
    f"(gin/pipelines); default {DEFAULT_GIN_FILE}.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("output_dir", "runs/pipeline", "Where every step's "
                    "output and the report go.")
flags.DEFINE_bool("dry_run", False, "Print the steps and exit.")
strategies.define_flags()
FLAGS = flags.FLAGS


def _strategy_flags():
  """The strategy flags given on the command line, for every step."""
  names = ("strategy", "tpu", "mixed_precision", "cpu_replicas")
  return [
      f"--{name}={FLAGS[name].value}" for name in names if FLAGS[name].present
  ]


def _write_report(config, output_dir, step_seconds, notes=()):
  if isinstance(config, claims.ClaimsConfig):
    path = claims_report.write_report(
        config, output_dir, step_seconds, notes,
        settings=claims.settings_table(config, output_dir, _strategy_flags()))
    print(f"report: {path}", flush=True)
    return
  report_dir = os.path.join(output_dir, job.REPORT_DIR)
  path = report.write_report(
      report_dir, title=config.title, real_data_dir=config.real_data_dir,
      synthetic_dir=job.run_dir(output_dir, job.SYNTHETIC_DIR),
      diffusion_runs=job.diffusion_run_dirs(config, output_dir),
      classifier_runs=job.classifier_run_dirs(config, output_dir),
      metrics_file=job.metrics_path(output_dir),
      baseline_metrics_file=job.baseline_metrics_path(output_dir),
      metrics_heading=config.metrics_heading, settings=job.settings_table(
          config, output_dir,
          _strategy_flags()), step_seconds=step_seconds, notes=notes,
      extra_sections=(job.earlier_resolution_sections(config, output_dir) +
                      job.headline_sections(config, output_dir, report_dir)))
  print(f"report: {path}", flush=True)


def main(argv):
  del argv
  configuration.parse_gin(FLAGS.gin_file or [DEFAULT_GIN_FILE],
                          FLAGS.gin_bindings)
  try:
    config = job.selected()
    config.validate()
  except (ValueError, TypeError) as e:
    raise configuration.ConfigError(f"bad job configuration: {e}") from e
  steps_of = claims.steps if isinstance(config,
                                        claims.ClaimsConfig) else (job.steps)
  steps = steps_of(config, FLAGS.output_dir, _strategy_flags())
  if FLAGS.dry_run:
    for number, step in enumerate(steps, 1):
      print(f"{number}. {step.name}: {step.description}\n   python " +
            " ".join(step.command()))
    return
  try:
    seconds = runner.run(FLAGS.output_dir, steps,
                         print_fn=lambda line: print(line, flush=True))
  except runner.StepFailedError as e:
    # The report says how far the job got; the step's status is the job's.
    _write_report(config, FLAGS.output_dir,
                  runner.recorded_seconds(FLAGS.output_dir, steps),
                  notes=[f"Incomplete: {e}"])
    raise
  _write_report(config, FLAGS.output_dir, seconds)


if __name__ == "__main__":
  command_line.run(main)
