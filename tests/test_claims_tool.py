"""tools/pipeline.py running the shipped claims job, shrunk by gin to tiny
U-Nets, a few steps, 2 seeds, two augmentation variants, 20-image sweeps and
one data mix, on a small real subset."""

import os
import re

import pytest

from cdm_tf.pipeline import job
from cdm_tf.pipeline import runner
from cdm_tf.sweeps import records
from tests import fashion_mnist_subset
from tests import pipeline_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "gin", "pipelines", "fashion_mnist_claims.gin")
GUIDANCE = os.path.join(ROOT, "gin", "sweeps",
                        "fashion_mnist_claims_guidance.gin")
AUGMENTATION = os.path.join(ROOT, "gin", "sweeps",
                            "fashion_mnist_claims_augmentation.gin")

_BASE_BINDINGS = pipeline_runs.tiny_diffusion_bindings(3, 16)
_SR_BINDINGS = pipeline_runs.tiny_diffusion_bindings(3, 32)
TINY_CLAIMS = f"""
include "{SHIPPED}"

DATA_DIR = "@DATA@"
claims.ClaimsConfig.prepare_embedded_data = False
claims.ClaimsConfig.augmentation_variants = [
    @gaussian/claims.AugmentationVariant(),
    @none/claims.AugmentationVariant(),
]
claims.ClaimsConfig.guidance_sweep_gin_files = ["@ROOT@/guidance.gin"]
claims.ClaimsConfig.augmentation_sweep_gin_files = ["@ROOT@/augmentation.gin"]
claims.ClaimsConfig.classifier_seeds = [0, 1]
claims.ClaimsConfig.generation_seeds = [0, 1]
base/job.DiffusionStage.gin_bindings = {_BASE_BINDINGS!r}
sr/job.DiffusionStage.gin_bindings = {_SR_BINDINGS!r}
claims.ClaimsConfig.generation_gin_bindings = [
    'BASE_MODEL_DIR = "{{output_dir}}/base/export"',
    'base/cascade.Stage.steps = 3',
    'sr/cascade.Stage.steps = 2',
    'synthetic_dataset.GenerationSettings.batch_size = 10',
    'synthetic_dataset.GenerationSettings.examples_per_shard = 10',
]
claims.ClaimsConfig.sweep_gin_bindings = [
    'sweep.SweepSettings.num_images = 20',
    'sweep.SweepSettings.fid_sample_counts = [20]',
    'sample_scores.ReferenceSpec.num_examples = 80',
    'sample_scores.ReferenceSpec.keep_features = 80',
    'synthetic_dataset.GenerationSettings.batch_size = 10',
    'synthetic_dataset.GenerationSettings.examples_per_shard = 10',
    'synthetic_dataset.GenerationSettings.sheet_per_class = 0',
]
claims.ClaimsConfig.classifier_gin_bindings = [
    'recipes.ClassifierRecipe.epochs = 1',
    'recipes.ClassifierRecipe.batch_size = 16',
    'recipes.ClassifierRecipe.warmup_epochs = 0',
    'input_pipeline.training_dataset.shuffle_buffer = 100',
]
claims.ClaimsConfig.cas_gin_bindings = [
    'recipes.ClassifierRecipe.epochs = 2',
    'recipes.ClassifierRecipe.batch_size = 10',
    'recipes.ClassifierRecipe.warmup_epochs = 0',
    'recipes.ClassifierRecipe.decay_epochs = (1,)',
    'input_pipeline.training_dataset.shuffle_buffer = 100',
]
# 8 real images per class, alone and + 4 generated (the low-data mix's
# subset step is in test_pipeline_tool, its flags in test_claims).
claims.ClaimsConfig.data_mixes = [@full/claims.DataMix()]
full/claims.DataMix.multipliers = [0, 0.5]
"""


def _run(*args):
  return pipeline_runs.run_pipeline(*args, timeout=1500)


@pytest.fixture(scope="module")
def finished_claims(tmp_path_factory):
  root = tmp_path_factory.mktemp("claims")
  data = fashion_mnist_subset.prepared(str(root / "data"), per_class=(8, 3))
  (root / "guidance.gin").write_text(
      f'include "{GUIDANCE}"\n'
      'sweep.SweepSettings.grid = {"guidance_weight": [1.0, 3.0]}\n')
  (root / "augmentation.gin").write_text(
      f'include "{AUGMENTATION}"\n'
      'sweep.SweepSettings.grid = {"aug_level": [0.0, 0.2]}\n')
  gin_file = root / "tiny_claims.gin"
  gin_file.write_text(
      TINY_CLAIMS.replace("@DATA@", data).replace("@ROOT@", str(root)))
  out = str(root / "run")
  result = _run(f"--gin_file={gin_file}", f"--output_dir={out}")
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
  return str(gin_file), out, result


def test_claims_job_runs_every_step_and_reports_each_claim(finished_claims):
  gin_file, out, result = finished_claims
  del gin_file
  names = ["train_base", "train_sr_gaussian", "train_sr_none", "generate"]
  names += [f"guidance_seed{s}" for s in (0, 1)]
  names += [
      f"augmentation_{v}_seed{s}" for v in ("gaussian", "none") for s in (0, 1)
  ]
  names += [
      f"classifier_{run}_seed{s}" for run in ("full_k0", "full_k0.5")
      for s in (0, 1)
  ]
  for name in names:
    assert os.path.exists(runner.marker_path(out, name)), name
  assert len(os.listdir(os.path.join(out, runner.STEPS_DIR))) == len(names)

  # Each sweep scored FID, IS and CAS on the real classifier's features;
  # the variant without augmentation only at s = 0.
  rows = records.read_csv(
      os.path.join(out, "augmentation", "none", "seed_1", records.CSV_FILE))
  assert [float(r["aug_level"]) for r in rows] == [0.0]
  header = list(rows[0])
  assert any(h.startswith("CAS top-1") for h in header), header
  assert any(
      h.startswith("FID@20 vs train (Fashion-MNIST ResNet features")
      for h in header), header
  rows = records.read_csv(
      os.path.join(out, "guidance", "seed_0", records.CSV_FILE))
  assert [float(r["guidance_weight"]) for r in rows] == [1.0, 3.0]

  report = open(os.path.join(out, job.REPORT_DIR, "report.md")).read()
  assert "Not run yet" not in report
  # Every summarised value is over the 2 seeds that ran.
  cells = re.findall(r"\((\d+) runs?\)", report)
  assert cells and set(cells) == {"2"}, cells
  assert report.count("| Gaussian augmentation |") == 2
  assert report.count("| no augmentation |") == 1
  for png in re.findall(r"\]\(([^)]+\.png)\)", report):
    assert os.path.getsize(os.path.join(out, job.REPORT_DIR, png)) > 0
  assert re.search(r"^\[guidance_seed1\] ", result.stdout, re.M)


def test_rerun_skips_every_finished_step(finished_claims):
  gin_file, out, _ = finished_claims
  again = _run(f"--gin_file={gin_file}", f"--output_dir={out}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before") == 14
  assert "report:" in again.stdout


def test_shipped_claims_job_dry_run(tmp_path):
  dry = _run(f"--gin_file={SHIPPED}", f"--output_dir={tmp_path}", "--dry_run")
  assert dry.returncode == 0, dry.stderr[-2000:]
  steps = re.findall(r"^\d+\. (\S+):", dry.stdout, re.M)
  # Data, 10% subset, 6 real-only classifiers, base + 3 SR stages, 3 + 9
  # sweeps, the generated set, 9 real + synthetic classifiers.
  assert len(steps) == 1 + 1 + 6 + 4 + 12 + 1 + 9, steps
  assert steps[2] == "classifier_full_k0_seed0"
  assert "--multiplier=0.2" in dry.stdout
  assert not os.listdir(tmp_path)
