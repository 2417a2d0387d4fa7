"""tools/train.py end to end: loss falls, SIGKILL + resume, NaN stop, and
MirroredStrategy over two logical CPUs matching a one-device run."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin")
SR_GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_to_32_sr.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(20, 2))


def _bindings(data_dir, **overrides):
  values = {
      "input_pipeline.diffusion_dataset.data_dir": f"'{data_dir}'",
      "input_pipeline.diffusion_dataset.shuffle_buffer": 100,
      "trainer.train.global_batch_size": 8,
      "trainer.train.sample_every": 0,
      "trainer.train.export_at_end": False,
      "trainer.train.log_every": 10,
      "unet.UNet.channel_mult": (1, 2),
      "unet.UNet.dropout": 0.0,
      "optimizers.create_optimizer.warmup_steps": 0,
      "optimizers.create_optimizer.learning_rate": 1e-3,
  }
  values.update(overrides)
  return [f"--gin_bindings={k} = {v}" for k, v in values.items()]


def _train_command(model_dir, data_dir, gin_file=GIN, **overrides):
  return [
      sys.executable, TRAIN, f"--gin_file={gin_file}",
      f"--model_dir={model_dir}", *_bindings(data_dir, **overrides)
  ]


def _losses(stdout):
  return [float(m) for m in re.findall(r"step \d+/\d+ loss ([\d.]+)", stdout)]


@pytest.mark.parametrize(
    "gin_file,overrides",
    [
        (GIN, {
            "diffusion_model.DiffusionModel.model_var_type": "'fixed_small'",
            "diffusion_model.DiffusionModel.loss_type": "'simple'",
            "unet.UNet.learn_sigma": False
        }),
        # 32x32 output: keep the level with side 8, where attention is.
        (SR_GIN, {"unet.UNet.channel_mult": (1, 2, 2)}),
    ],
    ids=["base16", "sr16to32"])
def test_tiny_configs_train_and_the_loss_falls(tmp_path, data_dir, gin_file,
                                               overrides):
  result = subprocess.run(
      _train_command(tmp_path / "run", data_dir, gin_file,
                     **{"trainer.train.num_steps": 100, **overrides}),
      capture_output=True, text=True, env=ENV, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = _losses(result.stdout)
  assert len(losses) == 10
  assert losses[-1] < 0.6 * losses[0], losses
  assert tf.io.gfile.exists(str(tmp_path / "run" / "checkpoints"))
  assert tf.io.gfile.glob(str(tmp_path / "run" / "tensorboard" / "events*"))


def test_sigkill_then_resume_continues_from_the_checkpointed_step(
    tmp_path, data_dir):
  model_dir = tmp_path / "run"
  command = _train_command(
      model_dir, data_dir, **{
          "trainer.train.num_steps": 10_000,
          "trainer.train.checkpoint_every": 10
      })
  process = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=ENV)
  deadline = time.time() + 300
  checkpoint = model_dir / "checkpoints" / "ckpt-20.index"
  while not checkpoint.exists() and time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.5)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert checkpoint.exists()
  saved = sorted(
      int(p.name[5:-6])
      for p in (model_dir / "checkpoints").glob("ckpt-*.index"))
  resumed = subprocess.run(
      _train_command(
          model_dir, data_dir, **{
              "trainer.train.num_steps": saved[-1] + 5,
              "trainer.train.checkpoint_every": 10
          }), capture_output=True, text=True, env=ENV, timeout=600, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"at step {saved[-1]}" in resumed.stdout
  assert f"trained steps {saved[-1]}..{saved[-1] + 5}" in resumed.stdout
  assert (model_dir / "checkpoints" / f"ckpt-{saved[-1] + 5}.index").exists()


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, data_dir):
  model_dir = tmp_path / "run"
  result = subprocess.run(
      _train_command(
          model_dir, data_dir, **{
              "trainer.train.num_steps": 200,
              "trainer.train.checkpoint_every": 2,
              "optimizers.create_optimizer.learning_rate": 1e12,
              "diffusion_model.DiffusionModel.clip_grad_norm": None
          }), capture_output=True, text=True, env=ENV, timeout=600, check=False)
  assert result.returncode == 3, result.stderr[-3000:]
  match = re.search(r"non-finite loss \S+ at step (\d+)", result.stderr)
  assert match, result.stderr[-3000:]
  bad_step = int(match.group(1))
  saved = [
      int(p.name[5:-6])
      for p in (model_dir / "checkpoints").glob("ckpt-*.index")
  ]
  assert saved and max(saved) < bad_step  # the bad state was not saved
  assert "last good checkpoint" in result.stderr


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from cdm_tf import configuration
    from cdm_tf.diffusion_training import trainer
    from cdm_tf.training import strategies

    strategies.split_cpu(2)
    gin_file, data_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    bindings = sys.argv[4:]
    configuration.parse_gin([gin_file], bindings)
    results = {}
    for name in ("default", "mirrored"):
      strategy = strategies.create_strategy(name)
      print(name, strategy.num_replicas_in_sync)
      trainer.train(f"{out}/{name}", strategy, print_fn=print)
      reader = tf.train.load_checkpoint(f"{out}/{name}/checkpoints")
      results[name] = {k: reader.get_tensor(k)
                       for k in reader.get_variable_to_shape_map()
                       if k.startswith("unet_weights")}
    diffs = [float(np.max(np.abs(results["default"][k] -
                                 results["mirrored"][k])))
             for k in results["default"]]
    moved = [float(np.max(np.abs(results["default"][k]))) for k in
             results["default"]]
    print("variables", len(diffs), "max_diff", max(diffs), "max_weight",
          max(moved))
""")


def test_mirrored_two_cpu_replicas_match_one_device(tmp_path, data_dir):
  bindings = [
      b.split("=", 1)[1] for b in _bindings(
          data_dir, **{
              "trainer.train.num_steps": 3, "trainer.train.checkpoint_every": 3,
              "trainer.train.log_every": 1
          })
  ]
  result = subprocess.run([
      sys.executable, "-c", MIRRORED_SCRIPT, GIN, data_dir,
      str(tmp_path), *bindings
  ], capture_output=True, text=True, env=ENV, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mirrored 2" in result.stdout
  match = re.search(r"variables (\d+) max_diff (\S+) max_weight (\S+)",
                    result.stdout)
  assert match, result.stdout
  assert int(match.group(1)) > 10
  # Same examples, same per-example randomness: only the order of float
  # additions differs between one device and two replicas.
  assert float(match.group(2)) < 1e-5
  assert float(match.group(3)) > 1e-3  # training really moved the weights
