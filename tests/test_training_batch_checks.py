"""tools/train.py and tools/train_classifier.py refuse step counts and
batches that cannot train: exit 2, one error line, nothing written."""

import os
import subprocess
import sys

import pytest

from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
TRAIN_CLASSIFIER = os.path.join(ROOT, "tools", "train_classifier.py")
GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin")
CLASSIFIER_GIN = os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                              "resnet_tiny.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(4, 1))


def _check_refused(command, model_dir, message):
  result = subprocess.run(command, capture_output=True, text=True, env=ENV,
                          timeout=300, check=False)
  assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
  # TensorFlow's native start-up lines go to stderr too: one error line,
  # no traceback.
  errors = [
      line for line in result.stderr.splitlines() if line.startswith("error:")
  ]
  assert len(errors) == 1 and "Traceback" not in result.stderr, (
      result.stderr[-3000:])
  assert message in errors[0], errors[0]
  assert not os.path.exists(model_dir)


@pytest.mark.parametrize(
    "bindings,flags,message", [
        (["trainer.train.num_steps = -5"], [], "num_steps must be positive"),
        (["trainer.train.num_steps = 0"], [], "got 0"),
        (["trainer.train.global_batch_size = 0"], [], "global_batch_size 0"),
        (["trainer.train.global_batch_size = -8"], [], "global_batch_size -8"),
        (["trainer.train.global_batch_size = 3"], [
            "--strategy=mirrored", "--cpu_replicas=2"
        ], "multiple of the 2 replica"),
    ], ids=[
        "negative_steps", "zero_steps", "zero_batch", "negative_batch",
        "batch_not_divisible"
    ])
def test_train_refuses(tmp_path, data_dir, bindings, flags, message):
  model_dir = str(tmp_path / "run")
  bindings = [
      f"input_pipeline.diffusion_dataset.data_dir = '{data_dir}'",
      "trainer.train.num_steps = 2", "unet.UNet.channel_mult = (1,)", *bindings
  ]
  _check_refused([
      sys.executable, TRAIN, f"--gin_file={GIN}", f"--model_dir={model_dir}",
      *flags, *[f"--gin_bindings={b}" for b in bindings]
  ], model_dir, message)


@pytest.mark.parametrize(
    "bindings,flags,message",
    [
        ([], ["--global_batch_size=0"], "--global_batch_size must be positive"),
        (["recipes.ClassifierRecipe.batch_size = -4"], [], "must be positive"),
        ([], [
            "--global_batch_size=3", "--strategy=mirrored", "--cpu_replicas=2"
        ], "multiple of the 2 replicas"),
        # The recipe's batch, used when --global_batch_size is not given.
        (["recipes.ClassifierRecipe.batch_size = 5"], [
            "--strategy=mirrored", "--cpu_replicas=2"
        ], "multiple of the 2 replicas"),
    ],
    ids=[
        "zero_flag_batch", "negative_recipe_batch", "flag_batch_not_divisible",
        "recipe_batch_not_divisible"
    ])
def test_train_classifier_refuses(tmp_path, data_dir, bindings, flags, message):
  model_dir = str(tmp_path / "run")
  _check_refused([
      sys.executable, TRAIN_CLASSIFIER, f"--gin_file={CLASSIFIER_GIN}",
      f"--model_dir={model_dir}", f"--real_data_dir={data_dir}", *flags,
      *[f"--gin_bindings={b}" for b in bindings]
  ], model_dir, message)
