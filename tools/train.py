"""Trains one diffusion stage of a cascade, configured by gin.

  python tools/train.py --gin_file=gin/models/fashion_mnist_16_base.gin \
      --model_dir=runs/base16

Resumes from the latest checkpoint in --model_dir. On TPU:
--strategy=tpu --tpu=<name> --mixed_precision=bfloat16; on GPUs:
--strategy=mirrored --mixed_precision=float16. --cpu_replicas=N splits the
CPU into N logical devices (to run the distributed path without
accelerators).
"""

import sys

from absl import app
from absl import flags
from absl import logging

from cdm_tf import configuration
from cdm_tf.training import strategies
from cdm_tf.training import trainer

flags.DEFINE_multi_string("gin_file", [], "Gin config files.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (override files).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, samples and "
                    "the export go here.", required=True)
flags.DEFINE_enum("strategy", "default", strategies.STRATEGIES,
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address (with --strategy=tpu).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "bfloat16 on TPU and bf16-capable CPUs; float16 (with loss "
                  "scaling) on GPUs.")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into this many logical "
                     "devices before starting (0: leave it whole).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.cpu_replicas:
    strategies.split_cpu(FLAGS.cpu_replicas)
  configuration.parse_gin_or_exit(FLAGS.gin_file, FLAGS.gin_bindings)
  strategies.set_mixed_precision(FLAGS.mixed_precision)
  strategy = strategies.create_strategy(FLAGS.strategy, FLAGS.tpu)
  print(f"strategy {type(strategy).__name__} with "
        f"{strategy.num_replicas_in_sync} replica(s)", flush=True)
  try:
    trainer.train(FLAGS.model_dir, strategy,
                  print_fn=lambda line: print(line, flush=True))
  except trainer.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
