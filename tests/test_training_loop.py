"""The shared training loop: k steps per compiled call train like k calls
of one step (diffusion and classifier trainers), and intervals that are
not multiples of k are refused before anything is written."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import models
from cdm_tf.classifiers import recipes
from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.diffusion_training import trainer
from cdm_tf.training import loop
from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin")
CLASSIFIER_GIN = os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                              "resnet_tiny.gin")
# One step per call and k steps per call run the same operations, but
# TensorFlow optimises a step inside a while loop's body differently from
# one at the top of a graph: the results agree to float32 rounding.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(8, 2))


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _weights(checkpoint_dir, prefix):
  reader = tf.train.load_checkpoint(checkpoint_dir)
  return {
      key: reader.get_tensor(key)
      for key in reader.get_variable_to_shape_map()
      if key.startswith(prefix)
  }


def _assert_same_weights(a, b):
  assert a.keys() == b.keys() and len(a) > 10
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=ATOL,
                               err_msg=key)


def _train_diffusion(model_dir, data_dir, **overrides):
  bindings = {
      "input_pipeline.diffusion_dataset.data_dir": f"'{data_dir}'",
      "input_pipeline.diffusion_dataset.shuffle_buffer": 100,
      "trainer.train.global_batch_size": 8, "trainer.train.num_steps": 4,
      "trainer.train.checkpoint_every": 2, "trainer.train.log_every": 2,
      "trainer.train.sample_every": 0, "trainer.train.export_at_end": False,
      "unet.UNet.channel_mult": (1, 2), "unet.UNet.dropout": 0.0,
      "optimizers.create_optimizer.warmup_steps": 0, **overrides
  }
  configuration.parse_gin([GIN], [f"{k} = {v}" for k, v in bindings.items()])
  lines = []
  result = trainer.train(str(model_dir), tf.distribute.get_strategy(),
                         print_fn=lines.append)
  return result, lines


def test_diffusion_k_steps_per_call_match_one(tmp_path, data_dir):
  one, one_lines = _train_diffusion(tmp_path / "k1", data_dir)
  gin.clear_config()
  two, two_lines = _train_diffusion(tmp_path / "k2", data_dir,
                                    **{"trainer.train.steps_per_execution": 2})
  assert one["step"] == two["step"] == 4
  for name in ("loss", "grad_norm"):
    assert two[name] == pytest.approx(one[name], rel=RTOL)
  progress = [
      line.split(" lr ")[0] for line in one_lines if line.startswith("step")
  ]
  assert progress and progress == [
      line.split(" lr ")[0] for line in two_lines if line.startswith("step")
  ]
  for step in (2, 4):  # every checkpoint was written
    assert (tmp_path / "k2" / "checkpoints" / f"ckpt-{step}.index").exists()
  _assert_same_weights(
      _weights(str(tmp_path / "k1" / "checkpoints"), "unet_weights"),
      _weights(str(tmp_path / "k2" / "checkpoints"), "unet_weights"))
  _assert_same_weights(
      _weights(str(tmp_path / "k1" / "checkpoints"), "ema_weights"),
      _weights(str(tmp_path / "k2" / "checkpoints"), "ema_weights"))


def _train_classifier(model_dir, data_dir, **kwargs):
  configuration.parse_gin(
      [CLASSIFIER_GIN], ["input_pipeline.training_dataset.shuffle_buffer = 50"])
  training_set = input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data="real", real_data_dir=data_dir))
  lines = []
  outcome = classifier_trainer.train_classifier(
      str(model_dir), tf.distribute.get_strategy(), training_set,
      gin.get_configurable(recipes.ClassifierRecipe)(),
      gin.get_configurable(models.create_classifier),
      gin.get_configurable(recipes.create_optimizer), global_batch_size=8,
      num_steps=4, log_every=2, checkpoint_every=2, print_fn=lines.append,
      **kwargs)
  return outcome, lines


def test_classifier_k_steps_per_call_match_one(tmp_path, data_dir):
  one, one_lines = _train_classifier(tmp_path / "k1", data_dir)
  gin.clear_config()
  two, two_lines = _train_classifier(tmp_path / "k2", data_dir,
                                     steps_per_execution=2)
  assert one["step"] == two["step"] == 4 and not two["stopped"]
  for name in ("loss", "top1", "top5"):
    assert two[name] == pytest.approx(one[name], rel=RTOL)
  progress = [
      line.split(" lr ")[0] for line in one_lines if line.startswith("step")
  ]
  assert len(progress) == 2 and progress == [
      line.split(" lr ")[0] for line in two_lines if line.startswith("step")
  ]
  assert two["eval"].num_examples == one["eval"].num_examples == 20
  _assert_same_weights(
      _weights(str(tmp_path / "k1" / "checkpoints"), "model_weights"),
      _weights(str(tmp_path / "k2" / "checkpoints"), "model_weights"))


def test_resumed_run_calls_up_to_the_next_multiple_of_k(tmp_path, data_dir):
  # 3 steps one at a time, then k = 2: one step to reach step 4, then two.
  _train_diffusion(
      tmp_path / "run", data_dir,
      **{"trainer.train.num_steps": 3, "trainer.train.log_every": 1})
  gin.clear_config()
  result, lines = _train_diffusion(
      tmp_path / "run", data_dir,
      **{"trainer.train.num_steps": 6, "trainer.train.steps_per_execution": 2})
  assert result["step"] == 6
  assert [line.split()[1] for line in lines if line.startswith("step")
         ] == ["4/6", "6/6"]
  for step in (3, 4, 6):
    assert (tmp_path / "run" / "checkpoints" / f"ckpt-{step}.index").exists()


@pytest.mark.parametrize("overrides,named", [
    ({"trainer.train.log_every": 3}, "trainer.train.log_every = 3"),
    ({"trainer.train.checkpoint_every": 5
     }, "trainer.train.checkpoint_every = 5"),
    ({"trainer.train.sample_every": 7}, "trainer.train.sample_every = 7"),
], ids=["log", "checkpoint", "sample"])
def test_diffusion_refuses_intervals_not_multiples_of_k(tmp_path, data_dir,
                                                        overrides, named):
  with pytest.raises(configuration.ConfigError,
                     match="steps_per_execution = 2") as raised:
    _train_diffusion(tmp_path / "run", data_dir,
                     **{"trainer.train.steps_per_execution": 2, **overrides})
  assert named in str(raised.value)
  assert isinstance(raised.value, ValueError)
  assert not (tmp_path / "run").exists()  # refused before writing


def test_classifier_refuses_intervals_not_multiples_of_k(tmp_path, data_dir):
  # resnet_tiny.gin evaluates every epoch: 10 steps of 8 of the 80 images.
  with pytest.raises(
      ValueError,
      match=(r"trainer.train_classifier.log_every = 2, "
             r"trainer.train_classifier.checkpoint_every = 2, "
             r"trainer.train_classifier.eval_every_epochs \(in steps\) = 10: .*"
             r"steps_per_execution = 4")):
    _train_classifier(tmp_path / "run", data_dir, steps_per_execution=4)
  assert not (tmp_path / "run").exists()


def test_check_intervals():
  loop.check_intervals(4, {"a": 8, "b": 0, "c": 4})  # 0: never
  with pytest.raises(ValueError, match="must be positive, got 0"):
    loop.check_intervals(0, {})
  with pytest.raises(ValueError, match=r"^b = 6, c = 2: "):
    loop.check_intervals(4, {"a": 8, "b": 6, "c": 2})
