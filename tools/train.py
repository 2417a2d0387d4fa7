"""Trains one diffusion stage of a cascade, configured by gin.

  python tools/train.py --gin_file=gin/models/fashion_mnist_16_base.gin \
      --model_dir=runs/base16

Resumes from the latest checkpoint in --model_dir. A fine-tuning config
(trainer.train.init_from, e.g. gin/models/fashion_mnist_16_text_finetune.gin)
starts a new --model_dir from another run's export or checkpoint. On TPU:
--strategy=tpu --tpu=<name> --mixed_precision=bfloat16; on GPUs:
--strategy=mirrored --mixed_precision=float16. --cpu_replicas=N splits the
CPU into N logical devices (to run the distributed path without
accelerators). trainer.train.steps_per_execution = k runs k steps per
compiled call (TPU hosts then do not wait for every step); the log,
checkpoint and sample intervals must be multiples of k.

Exit status (cdm_tf/command_line.py) 2: bad flags, gin or data, or a step
count or global batch that cannot train (num_steps <= 0 without init_from, a
batch that is not a positive multiple of the replicas), refused before
anything is written; 3: a --model_dir run with another model or optimizer,
or a non-finite loss.
"""

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf.diffusion_training import trainer
from cdm_tf.training import strategies

flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string(
    "model_dir", None, "Checkpoints, summaries, samples and "
    "the export go here.", required=True)
strategies.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  strategies.set_mixed_precision(FLAGS.mixed_precision)
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  print(
      f"strategy {type(strategy).__name__} with "
      f"{strategy.num_replicas_in_sync} replica(s)", flush=True)
  trainer.train(FLAGS.model_dir, strategy,
                print_fn=lambda line: print(line, flush=True))


if __name__ == "__main__":
  command_line.run(main)
