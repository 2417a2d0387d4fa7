"""Super-resolution stages given real low-resolution images (CDM Table 3b).

Each stage super-resolves the same real validation images (made as its
training pairs are) at each conditioning-augmentation level s its training
allows, with the main job's sampler; the table gives the PSNR to the real
high-resolution images, mean and 95% interval over the images, next to
bicubic upsampling. A stage trained with Gaussian augmentation that falls
below the others here loses by the augmentation itself, before any base
sample is involved. Needs trained stages, e.g. the claims job's:

  python benchmarks/super_resolution_on_real.py \\
      --base_model_dir=runs/claims/base/export \\
      --stages=gaussian=runs/claims/sr_gaussian/export,\\
blur=runs/claims/sr_blur/export,none=runs/claims/sr_none/export
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import numpy as np

from cdm_tf.generation import cascade
from cdm_tf.metrics import repeated_runs
from cdm_tf.metrics import super_resolution_fidelity as fidelity
from cdm_tf.models import export

FLAGS = flags.FLAGS


def define_flags():
  """The flags, defined only when run as a program: the tests import this
  module next to other benchmarks that define flags of the same names."""
  flags.DEFINE_string(
      "base_model_dir", None, "The cascade's base export (the "
      "cascade runs from its second stage).", required=True)
  flags.DEFINE_list("stages", None, "name=export_dir of each super-resolution "
                    "stage.", required=True)
  flags.DEFINE_list(
      "aug_levels", ["0", "0.05", "0.1", "0.15"], "Levels s for "
      "stages trained with Gaussian augmentation (the others: "
      "s = 0); the default spans the 16->32 stage's training "
      "range.")
  flags.DEFINE_string("real_data_dir", "data/fashion_mnist", "Real data.")
  flags.DEFINE_string("split", "validation", "Real split.")
  flags.DEFINE_integer("num_images", 200, "Real images.")
  flags.DEFINE_integer("num_classes", 10, "Label space of the records.")
  flags.DEFINE_string(
      "sampler", "dpmpp_2m_sde", "Super-resolution sampler "
      "(the main job's, gin/generation/"
      "fashion_mnist_16_to_32.gin).")
  flags.DEFINE_integer("steps", 15, "Its steps.")
  flags.DEFINE_integer("batch_size", 50, "Images per sampling call.")


def parse_stages(specs):
  """``["name=dir", ...]`` -> ``[(name, dir), ...]``."""
  stages = []
  for spec in specs:
    name, sep, directory = spec.partition("=")
    if not sep or not name or not directory:
      raise ValueError(f"--stages entry {spec!r} is not name=export_dir")
    stages.append((name, directory))
  return stages


def stage_levels(model_dir, levels):
  """The levels s to score a stage at: ``levels`` for Gaussian-augmented
  stages, else only 0 (the others take no level)."""
  trained_with = export.read_config(model_dir).get("conditioning_augmentation")
  return list(levels) if trained_with == "gaussian" else [0.0]


def super_resolve(base_model_dir, model_dir, aug_level, low_res, labels,
                  sampler, steps, batch_size):
  """uint8 outputs of one stage from ``low_res``, with fixed seeds."""
  stages = [
      cascade.Stage(model_dir=base_model_dir, sampler="ddim",
                    timestep_respacing="2"),
      cascade.Stage(model_dir=model_dir, sampler=sampler, steps=steps,
                    aug_level=aug_level)
  ]
  runner = cascade.Cascade(stages)
  seeds = np.stack(
      [np.arange(len(labels)), np.zeros(len(labels))], axis=1).astype(np.int64)
  return np.concatenate([
      runner.sample(seeds[i:i + batch_size], labels[i:i + batch_size],
                    first_stage=1, low_res=low_res[i:i + batch_size])
      for i in range(0, len(labels), batch_size)
  ])


def rows(base_model_dir, stages, levels, high, low, labels, sampler, steps,
         batch_size):
  """``(stage, s, Summary of PSNR)`` per stage and level, bicubic first."""
  table = [("bicubic", None,
            repeated_runs.summarize(
                fidelity.psnr(fidelity.bicubic(low, high.shape[1]), high)))]
  for name, model_dir in stages:
    for level in stage_levels(model_dir, levels):
      outputs = super_resolve(base_model_dir, model_dir, level, low, labels,
                              sampler, steps, batch_size)
      table.append(
          (name, level, repeated_runs.summarize(fidelity.psnr(outputs, high))))
  return table


def main(argv):
  del argv
  stages = parse_stages(FLAGS.stages)
  levels = [float(level) for level in FLAGS.aug_levels]
  unet = export.load_model(stages[0][1]).unet
  resolution, low_resolution = unet.resolution, unet.low_res_resolution
  high, low, labels = fidelity.real_pairs(FLAGS.real_data_dir, resolution,
                                          low_resolution, FLAGS.num_images,
                                          FLAGS.num_classes, split=FLAGS.split)
  print(f"{len(labels)} real {FLAGS.split} images, {low_resolution} -> "
        f"{resolution}, {FLAGS.sampler} {FLAGS.steps} steps; PSNR (dB) to "
        "the real images, mean [95% interval] (images)")
  print("| stage | s | PSNR |\n|---|---|---|")
  for name, level, summary in rows(FLAGS.base_model_dir, stages, levels, high,
                                   low, labels, FLAGS.sampler, FLAGS.steps,
                                   FLAGS.batch_size):
    shown = "-" if level is None else f"{level:g}"
    print(f"| {name} | {shown} | {summary.mean:.2f} [{summary.low:.2f}, "
          f"{summary.high:.2f}] ({summary.runs}) |")


if __name__ == "__main__":
  define_flags()
  command_line.run(main)
