"""tools/sweep.py end to end on the tiny cascade, and the sweep configs of
gin/sweeps/ (the papers' grids) checked without any model."""

import math
import os
import subprocess
import sys

import gin
import keras
import pytest

from cdm_tf import configuration
from cdm_tf.classifiers import recipes
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.sweeps import grid
from cdm_tf.sweeps import records
from cdm_tf.sweeps import sweep
from tests import fashion_mnist_subset
from tests import tiny_cascade

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "sweep.py")
SWEEPS = os.path.join(ROOT, "gin", "sweeps")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
NETWORK = "tiny test classifier"


@pytest.mark.parametrize("name, stage, points, fields", [
    ("fashion_mnist_base_guidance.gin", "base", 12,
     ["guidance_weight", "steps"]),
    ("azizi_base64_guidance_logvar.gin", "base", 6 * 5 * 3,
     ["guidance_weight", "logvar_coeff", "timestep_respacing"]),
    ("azizi_sr256_noise_aug.gin", "sr256", 5 * 5 * 2 * 3,
     ["guidance_weight", "aug_level", "logvar_coeff", "timestep_respacing"]),
    ("fashion_mnist_sampler_quality_base.gin", "base", 13,
     ["sampler", "timestep_respacing", "steps"]),
    ("fashion_mnist_sampler_quality_sr.gin", "sr", 13,
     ["sampler", "timestep_respacing", "steps", "logvar_coeff"]),
    ("fashion_mnist_claims_guidance.gin", "base", 5, ["guidance_weight"]),
    ("fashion_mnist_claims_augmentation.gin", "sr", 4, ["aug_level"]),
    ("fashion_mnist_headline_guidance.gin", "base", 3, ["guidance_weight"]),
    ("fashion_mnist_headline_augmentation.gin", "sr", 3, ["aug_level"]),
])
def test_sweep_configs_expand_to_the_papers_grids(name, stage, points, fields):
  gin.clear_config()
  try:
    configuration.parse_gin([os.path.join(SWEEPS, name)], [])
    stages = cascade_lib.configured_stages()
    names = grid.configured_stage_names()
    assert gin.query_parameter("sweep.SweepSettings.stage") == stage
    index = grid.resolve_stage(stage, len(stages), names)
    expanded = grid.expand_grid(gin.query_parameter("sweep.SweepSettings.grid"))
    assert len(expanded) == points and list(expanded[0].parameters) == fields
    for point in expanded:  # every point is a valid stage
      grid.point_stages(stages, index, point.parameters)
    # Only the super-resolution sweep has earlier stages to reuse.
    assert grid.reuses_earlier_stages(stages, index, expanded) == (index > 0)
    # The sampler benchmark and the claims job score the whole cascade,
    # the papers' grids the swept stage's output.
    if name.startswith("azizi") or name == "fashion_mnist_base_guidance.gin":
      assert len(stages) == index + 1
    else:
      assert len(stages) == 2
  finally:
    gin.clear_config()


@pytest.mark.parametrize(
    "sweep_file, images",
    [
        (None, 1000),  # the main job's CAS of its 1,000 generated images
        ("fashion_mnist_claims_guidance.gin", 300),
        ("fashion_mnist_claims_augmentation.gin", 300),
        ("fashion_mnist_headline_guidance.gin", 100),
        ("fashion_mnist_headline_augmentation.gin", 100),
    ])
def test_sweep_cas_trains_as_many_steps_as_the_main_cas(sweep_file, images):
  """Each sweep point's CAS classifier (the CAS gin, then the sweep's)
  takes the 141 steps of the 1,000-image CAS, its schedule scaled along."""
  files = [
      os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                   "resnet_tiny_cas.gin")
  ]
  if sweep_file:
    files.append(os.path.join(SWEEPS, sweep_file))
  gin.clear_config()
  try:
    configuration.parse_gin(files, [])
    recipe = gin.get_configurable(recipes.ClassifierRecipe)()
    if sweep_file:
      assert gin.query_parameter("sweep.SweepSettings.num_images") == images
      # One evaluation, at the end.
      assert gin.query_parameter(
          "trainer.train_classifier.eval_every_epochs") == 0.0
  finally:
    gin.clear_config()
  steps_per_epoch = images / recipe.batch_size
  assert math.ceil(recipe.epochs * steps_per_epoch - 1e-9) == 141
  assert recipe.decay == "stepwise" and recipe.learning_rate == 0.2
  # Warmup and decays at the same steps as the 1,000-image schedule (1, 6,
  # 12 and 16 of 18 epochs), to within a step.
  for epochs, reference in zip((recipe.warmup_epochs, *recipe.decay_epochs),
                               (1, 6, 12, 16)):
    assert abs(epochs * steps_per_epoch - reference * 1000 / 128) < 1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep_tool")
  base_dir, _ = tiny_cascade.export_tiny_cascade(str(root / "exports"))
  data_dir = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(3, 2))
  keras.utils.set_random_seed(0)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
  x = keras.layers.GlobalAveragePooling2D(name="features")(x)
  model = keras.Model(inputs, keras.layers.Dense(10)(x))
  classifier = str(root / "classifier.keras")
  model.save(classifier)
  return dict(root=root, base_dir=base_dir, data_dir=data_dir,
              classifier=classifier)


def test_tool_sweeps_the_base_guidance_with_a_classifier(setup):
  out = str(setup["root"] / "sweep")
  bindings = [
      f"BASE_MODEL_DIR = '{setup['base_dir']}'",
      "base/cascade.Stage.steps = 2",
      "sweep.SweepSettings.grid = {'guidance_weight': [1.0, 2.0]}",
      "sweep.SweepSettings.num_images = 20",
      "sweep.SweepSettings.fid_sample_counts = [20]",
      "sweep.SweepSettings.kid_subsets = 5",
      "sweep.SweepSettings.kid_subset_size = 10",
      "sweep.SweepSettings.plot_views = None",
      "sample_scores.ReferenceSpec.num_examples = None",
      "sample_scores.ReferenceSpec.keep_features = 30",
      "synthetic_dataset.GenerationSettings.batch_size = 10",
      "synthetic_dataset.GenerationSettings.examples_per_shard = 10",
      "synthetic_dataset.GenerationSettings.sheet_per_class = 1",
  ]
  command = [
      sys.executable, TOOL,
      f"--gin_file={os.path.join(SWEEPS, 'fashion_mnist_base_guidance.gin')}",
      *[f"--gin_bindings={b}" for b in bindings],
      f"--real_data_dir={setup['data_dir']}", f"--output_dir={out}",
      "--feature_network=classifier",
      f"--classifier_model={setup['classifier']}", "--feature_layer=features",
      f"--feature_network_name={NETWORK}"
  ]
  result = subprocess.run(command, capture_output=True, text=True, env=ENV,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2 of 2 points finished (2 now, 0 before)" in result.stdout
  rows = records.read_csv(os.path.join(out, records.CSV_FILE))
  assert [r["guidance_weight"] for r in rows] == ["1", "2"]
  for label in (f"FID@20 vs train ({NETWORK})",
                f"FID@20 vs validation ({NETWORK})", f"IS@20 ({NETWORK})",
                f"recall@20 vs train ({NETWORK})"):
    assert all(math.isfinite(float(r[label])) for r in rows), label
  plots = os.listdir(os.path.join(out, sweep.PLOTS_DIR))
  assert "fid_20_vs_train_vs_guidance_weight.png" in plots
  assert "pareto_fid_20_vs_train_vs_is_20_along_guidance_weight.png" in plots


def test_dry_run_resolves_macros_and_loads_nothing(tmp_path):
  command = [
      sys.executable, TOOL,
      f"--gin_file={os.path.join(SWEEPS, 'fashion_mnist_base_guidance.gin')}",
      "--gin_bindings=NUM = 40",
      "--gin_bindings=sweep.SweepSettings.num_images = %NUM",
      f"--gin_bindings=BASE_MODEL_DIR = '{tmp_path / 'no_model'}'",
      f"--real_data_dir={tmp_path / 'no_data'}",
      f"--output_dir={tmp_path / 'out'}", "--dry_run"
  ]
  result = subprocess.run(command, capture_output=True, text=True, env=ENV,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "over 12 points of 40 images each" in result.stdout
  # 6 guidance weights x (10, 25) steps, doubled where guided (5 of 6).
  assert "guidance_weight=1.25, steps=10  (20 evaluations per image)" in (
      result.stdout)
  assert "network evaluations in all: 15,400" in result.stdout
  assert not (tmp_path / "out").exists()
