"""tools/train_classifier.py end to end on tiny Fashion-MNIST subsets: the
loss falls and the evaluation files appear, SIGKILL + resume continues from
the checkpointed step, a NaN loss stops with status 3, CAS on a synthetic
set, MirroredStrategy over two logical CPUs matching one device, and bad
flags exiting with status 2; the trained model.keras reproduces the
checkpoint and serves as a metrics feature network."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import models
from cdm_tf.classifiers import trainer
from cdm_tf.metrics import features as features_lib
from tests import fashion_mnist_subset
from tests import synthetic_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "train_classifier.py")
TINY_GIN = os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                        "resnet_tiny.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
TIMEOUT = 600


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(20, 2))


def _bindings(**overrides):
  values = {
      "trainer.train_classifier.log_every": 10,
      "trainer.train_classifier.eval_every_epochs": 0,
      "input_pipeline.training_dataset.shuffle_buffer": 200
  }
  values.update(overrides)
  return [f"--gin_bindings={k} = {v}" for k, v in values.items()]


def _command(model_dir, real_dir, *flags, **overrides):
  return [
      sys.executable, TOOL, f"--gin_file={TINY_GIN}",
      f"--model_dir={model_dir}", f"--real_data_dir={real_dir}", *flags,
      *_bindings(**overrides)
  ]


def _run(command):
  return subprocess.run(command, capture_output=True, text=True, env=ENV,
                        timeout=TIMEOUT, check=False)


def _losses(stdout):
  return [
      float(m)
      for m in re.findall(r"step \d+/\d+ epoch \S+ loss ([\d.]+)", stdout)
  ]


def test_trains_with_falling_loss_and_writes_the_evaluation(tmp_path, real_dir):
  model_dir = tmp_path / "run"
  # 200 images, batch 32: 8 epochs are 50 steps; lr 0.2 * 32 / 128.
  result = _run(
      _command(model_dir, real_dir, "--global_batch_size=32",
               **{"recipes.ClassifierRecipe.epochs": 8}))
  assert result.returncode == 0, result.stderr[-3000:]
  losses = _losses(result.stdout)
  assert len(losses) == 5, result.stdout
  assert losses[-1] < 0.8 * losses[0], losses
  run = json.loads((model_dir / "run.json").read_text())
  assert run["num_steps"] == 50 and run["global_batch_size"] == 32
  assert run["peak_learning_rate"] == pytest.approx(0.05)
  evaluated = json.loads((model_dir / "eval" / "eval.json").read_text())
  assert evaluated["examples"] == 20 and evaluated["step"] == 50
  assert 0.0 <= evaluated["top1"] <= evaluated["top5"] <= 1.0
  assert f"top1 {evaluated['top1']:.4f}" in result.stdout
  assert (model_dir / "eval" /
          "per_class_accuracy.csv").read_text().count("\n") == 11
  assert (model_dir / "eval" / "per_class_accuracy.png").stat().st_size > 0
  assert list((model_dir / "tensorboard").glob("events*"))
  assert (model_dir / "checkpoints" / "ckpt-50.index").exists()
  assert (model_dir / trainer.MODEL_FILE).stat().st_size > 0


def test_sigkill_then_resume_continues_from_the_checkpointed_step(
    tmp_path, real_dir):
  model_dir = tmp_path / "run"
  flags = ["--global_batch_size=16"]
  process = subprocess.Popen(
      _command(
          model_dir, real_dir, *flags, **{
              "trainer.train_classifier.num_steps": 100_000,
              "trainer.train_classifier.checkpoint_every": 5
          }), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
  checkpoint = model_dir / "checkpoints" / "ckpt-10.index"
  deadline = time.time() + 300
  while not checkpoint.exists() and time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert checkpoint.exists()
  saved = max(
      int(p.name[5:-6])
      for p in (model_dir / "checkpoints").glob("ckpt-*.index"))
  resumed = _run(
      _command(
          model_dir, real_dir, *flags, **{
              "trainer.train_classifier.num_steps": saved + 3,
              "trainer.train_classifier.checkpoint_every": 5
          }))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"at step {saved}" in resumed.stdout
  assert f"trained steps {saved}..{saved + 3}" in resumed.stdout
  assert (model_dir / "checkpoints" / f"ckpt-{saved + 3}.index").exists()


def test_non_finite_loss_stops_with_status_3_without_saving_it(
    tmp_path, real_dir):
  model_dir = tmp_path / "run"
  result = _run(
      _command(
          model_dir, real_dir, "--global_batch_size=16", **{
              "recipes.ClassifierRecipe.learning_rate": 1e12,
              "recipes.ClassifierRecipe.warmup_epochs": 0,
              "trainer.train_classifier.checkpoint_every": 1
          }))
  assert result.returncode == 3, result.stderr[-3000:]
  # The loss, or first the weights, at the next checkpoint.
  match = re.search(
      r"non-finite (loss \S+|weights) at step (\d+); stopped "
      r"without saving. The last good checkpoint is (\S+)\.", result.stderr)
  assert match, result.stderr[-3000:]
  saved = [
      int(p.name[5:-6])
      for p in (model_dir / "checkpoints").glob("ckpt-*.index")
  ]
  assert saved and max(saved) < int(match.group(2))
  last_good = tf.train.load_checkpoint(match.group(3))
  for key in last_good.get_variable_to_shape_map():
    if key.startswith("model_weights/"):
      assert np.all(np.isfinite(last_good.get_tensor(key))), key


def test_cas_trains_on_synthetic_only_and_reports(tmp_path, real_dir):
  synthetic_dir = tmp_path / "synthetic"
  synthetic_records.write(real_dir, str(synthetic_dir), per_class=8)
  reference = tmp_path / "real_model.csv"
  reference.write_text("class_id,top1_accuracy\n" +
                       "".join(f"{c},{c / 10}\n" for c in range(10)))
  model_dir = tmp_path / "cas"
  # The CAS recipe (resnet50_cas.gin) at tiny size: 80 images, batch 16,
  # 4 epochs of 5 steps, in bfloat16 as on TPUs.
  command = [
      sys.executable, TOOL, "--cas", "--mixed_precision=bfloat16",
      f"--model_dir={model_dir}", f"--real_data_dir={real_dir}",
      f"--synthetic_dir={synthetic_dir}", "--global_batch_size=16",
      f"--compare_with={reference}",
      "--gin_bindings=models.create_classifier.tiny = True",
      "--gin_bindings=models.create_classifier.num_classes = 10",
      "--gin_bindings=models.create_classifier.image_size = 32",
      "--gin_bindings=recipes.ClassifierRecipe.epochs = 4",
      "--gin_bindings=recipes.ClassifierRecipe.warmup_epochs = 1"
  ]
  result = _run(command)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((model_dir / "cas_report.json").read_text())
  assert report["step"] == 20
  assert report["validation_examples"] == 20
  assert report["synthetic_examples_per_epoch"] == 80
  assert 0.0 <= report["cas_top1"] <= report["cas_top5"] <= 1.0
  assert "CAS top-1" in result.stdout
  run = json.loads((model_dir / "run.json").read_text())
  assert run["single_crop"] and run["recipe"]["decay"] == "stepwise"
  assert run["training_data"]["real_examples_per_epoch"] == 0
  assert run["peak_learning_rate"] == pytest.approx(0.4 * 16 / 1024)
  assert run["mixed_precision"] == "mixed_bfloat16"
  evaluated = json.loads((model_dir / "eval" / "eval.json").read_text())
  assert evaluated["reference_mean_per_class_top1"] == pytest.approx(0.45)
  assert (model_dir / "eval" / "per_class_accuracy.png").stat().st_size > 0
  _check_saved_model(model_dir)
  # A run resumed after its end writes the Keras file only if it is missing.
  (model_dir / trainer.MODEL_FILE).unlink()
  resumed = _run(command)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "at step 20" in resumed.stdout and "trained steps" not in (
      resumed.stdout)
  _check_saved_model(model_dir)


def _check_saved_model(model_dir):
  """model.keras loads under the default (float32) policy although trained
  in bfloat16, and gives the logits of the last checkpoint's weights in
  float32; the metrics can take its features."""
  assert sorted(p.name for p in model_dir.glob("model*")) == [
      trainer.MODEL_FILE
  ]  # no temporary left
  assert keras.mixed_precision.global_policy().name == "float32"
  loaded = keras.models.load_model(model_dir / trainer.MODEL_FILE)
  assert isinstance(loaded, models.ImageClassifier)
  assert loaded.compute_dtype == "float32"
  trained = models.create_classifier("resnet50", 10, 32, tiny=True)
  tf.train.Checkpoint(model_weights=list(trained.weights)).restore(
      tf.train.latest_checkpoint(str(model_dir /
                                     "checkpoints"))).expect_partial()
  images = np.random.default_rng(0).integers(0, 256,
                                             (4, 32, 32, 3)).astype(np.uint8)
  pixels = images.astype(np.float32) / 255
  np.testing.assert_array_equal(loaded(pixels, training=False),
                                trained(pixels, training=False))
  extractor = features_lib.ClassifierFeatures(loaded, "CAS classifier")
  feats, logits = extractor(images)
  assert feats.shape == (4, 64) and logits.shape == (4, 10)
  np.testing.assert_allclose(logits, loaded(pixels, training=False), rtol=1e-5,
                             atol=1e-6)


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import gin
    import numpy as np
    import tensorflow as tf
    from cdm_tf import configuration
    from cdm_tf.classifiers import input_pipeline, models, recipes, trainer
    from cdm_tf.training import strategies

    strategies.split_cpu(2)
    gin_file, real_dir, out = sys.argv[1:4]
    configuration.parse_gin([gin_file], sys.argv[4:])
    recipe = gin.get_configurable(recipes.ClassifierRecipe)()
    create = gin.get_configurable(models.create_classifier)
    training_set = input_pipeline.resolve_training_set(
        input_pipeline.TrainingData(data="real", real_data_dir=real_dir))
    # One strategy of each kind for the whole process (a second
    # MirroredStrategy would reuse the first one's collective keys).
    strategy_of = {name: strategies.create_strategy(name)
                   for name in ("default", "mirrored")}
    for model_name, steps in (("resnet50", 1), ("vit_s16", 3)):
      weights, evals = {}, {}
      for name, strategy in strategy_of.items():
        print(model_name, name, strategy.num_replicas_in_sync)
        outcome = trainer.train_classifier(
            f"{out}/{model_name}_{name}", strategy, training_set, recipe,
            lambda: create(name=model_name),
            gin.get_configurable(recipes.create_optimizer),
            global_batch_size=8, num_steps=steps, print_fn=print)
        evals[name] = (outcome["eval"].top1, outcome["eval"].top5,
                       outcome["eval"].num_examples)
        reader = tf.train.load_checkpoint(f"{out}/{model_name}_{name}/"
                                          "checkpoints")
        count = sum(key.startswith("model_weights/")
                    for key in reader.get_variable_to_shape_map())
        weights[name] = [reader.get_tensor(
            f"model_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE")
                         for i in range(count)]
      # The initial weights: the trainer seeds them with its seed (0).
      tf.keras.utils.set_random_seed(0)
      initial = [v.numpy() for v in create(name=model_name).weights]
      diff = max(float(np.max(np.abs(a - b)))
                 for a, b in zip(weights["default"], weights["mirrored"]))
      moved = max(float(np.max(np.abs(a - b)))
                  for a, b in zip(weights["default"], initial))
      print(model_name, "variables", len(initial), len(weights["mirrored"]),
            "max_diff", diff, "moved", moved, "evals",
            evals["default"] == evals["mirrored"], evals["mirrored"][2])
""")


def test_mirrored_two_cpu_replicas_match_one_device(tmp_path, real_dir):
  # Same examples, crops and flips per step; only the order of float
  # additions differs. ResNet with synchronized batch norm (statistics of
  # the global batch, as on one device) for one step: at 1x1 resolution its
  # batch-norm statistics of 8 values per channel amplify rounding within a
  # few steps. The tiny ViT (per-example layer norm) for three steps.
  bindings = [
      b.split("=", 1)[1] for b in _bindings(
          **{
              "trainer.train_classifier.synchronized_batch_norm": True,
              "trainer.train_classifier.log_every": 1,
              "recipes.ClassifierRecipe.warmup_epochs": 0,
              "recipes.ClassifierRecipe.learning_rate": 1.6
          })
  ]
  result = subprocess.run([
      sys.executable, "-c", MIRRORED_SCRIPT, TINY_GIN, real_dir,
      str(tmp_path), *bindings
  ], capture_output=True, text=True, env=ENV, timeout=TIMEOUT, check=False,
                          cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  for model_name in ("resnet50", "vit_s16"):
    assert f"{model_name} mirrored 2" in result.stdout
    match = re.search(
        model_name + r" variables (\d+) (\d+) max_diff (\S+) moved (\S+) "
        r"evals (\S+) (\d+)", result.stdout)
    assert match, result.stdout
    # Every weight, batch-norm statistics included, was checkpointed.
    assert int(match.group(1)) == int(match.group(2)) > 20
    assert float(match.group(3)) < 1e-5
    assert float(match.group(4)) > 1e-3  # training really moved the weights
    # The distributed evaluation sees each of the 20 images once.
    assert match.group(5) == "True" and match.group(6) == "20"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--data=everything"], "--data"),
        (["--cas", "--data=real+synthetic"], "--cas trains on synthetic data"),
        (["--gin_bindings=recipes.ClassifierRecipe.epoch = 3"], "bad gin"),
        (["--real_data_dir=/no/such/dir"
         ], "/no/such/dir: no such data directory"),
        # The 32 x 32 records cannot be made 64 x 64 (Table A.3's column).
        (["--gin_bindings=trainer.train_classifier.data_resolution = 64"
         ], "data_resolution 64 is larger than the stored real images"),
    ],
    ids=[
        "unknown_data", "cas_on_mixed", "bad_binding", "missing_data",
        "data_resolution_too_large"
    ])
def test_bad_flags_and_config_exit_2(tmp_path, real_dir, flags, message):
  command = [
      sys.executable, TOOL, f"--gin_file={TINY_GIN}",
      f"--model_dir={tmp_path / 'run'}"
  ]
  if not any(f.startswith("--real_data_dir") for f in flags):
    command.append(f"--real_data_dir={real_dir}")
  result = _run(command + flags)
  assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
  assert "error:" in result.stderr and message in result.stderr, (
      result.stderr[-3000:])
  assert not (tmp_path / "run" / "checkpoints").exists()
