"""Running tools/pipeline.py in tests: the tool, and tiny diffusion stages."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "pipeline.py")


def tiny_diffusion_bindings(num_steps, resolution):
  """A job's diffusion-stage bindings shrunk to a 16-channel one-level
  U-Net trained ``num_steps`` steps, attention at ``resolution``."""
  return [
      'input_pipeline.diffusion_dataset.data_dir = "{real_data_dir}"',
      "input_pipeline.diffusion_dataset.shuffle_buffer = 100",
      "unet.UNet.base_channels = 16",
      "unet.UNet.channel_mult = (1,)",
      "unet.UNet.group_norm_groups = 8",
      "unet.UNet.dropout = 0.0",
      f"unet.UNet.attention_resolutions = ({resolution},)",
      "trainer.train.global_batch_size = 8",
      f"trainer.train.num_steps = {num_steps}",
      f"trainer.train.checkpoint_every = {num_steps}",
      "trainer.train.log_every = 2",
      "trainer.train.sample_every = 0",
  ]


def run_pipeline(*args, timeout=900):
  """tools/pipeline.py with ``args``; the CompletedProcess (text output)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
