"""tools/pipeline.py end to end on a small real subset, with the shipped
job config shrunk by gin (tiny U-Nets, a few steps, one classifier epoch)."""

import json
import os
import re

import pytest

from cdm_tf.metrics import sample_scores
from cdm_tf.pipeline import job
from cdm_tf.pipeline import runner
from cdm_tf.sweeps import records
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import pipeline_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "gin", "pipelines", "fashion_mnist.gin")
AZIZI = os.path.join(ROOT, "gin", "pipelines", "azizi_imagenet.gin")
TRAIN_PER_CLASS = 8

_BASE_BINDINGS = pipeline_runs.tiny_diffusion_bindings(4, 16)
_SR_BINDINGS = pipeline_runs.tiny_diffusion_bindings(4, 32)
TINY_JOB = f"""
include "{SHIPPED}"

DATA_DIR = "@DATA@"
job.JobConfig.prepare_embedded_data = False
base/job.DiffusionStage.gin_bindings = {_BASE_BINDINGS!r}
sr/job.DiffusionStage.gin_bindings = {_SR_BINDINGS!r}
job.JobConfig.generation_gin_bindings = [
    'BASE_MODEL_DIR = "{{output_dir}}/base/export"',
    'SR_MODEL_DIR = "{{output_dir}}/sr/export"',
    'base/cascade.Stage.steps = 4',
    'sr/cascade.Stage.steps = 2',
    'synthetic_dataset.GenerationSettings.batch_size = 10',
    'synthetic_dataset.GenerationSettings.examples_per_shard = 10',
]
# 2 of each class's 8 real training images.
job.JobConfig.synthetic_multiplier = 0.25
job.JobConfig.classifier_gin_bindings = [
    'recipes.ClassifierRecipe.epochs = 1',
    'recipes.ClassifierRecipe.batch_size = 16',
    'recipes.ClassifierRecipe.warmup_epochs = 0',
    'input_pipeline.training_dataset.shuffle_buffer = 100',
]
job.JobConfig.cas_gin_bindings = [
    'recipes.ClassifierRecipe.epochs = 2',
    'recipes.ClassifierRecipe.batch_size = 10',
    'recipes.ClassifierRecipe.warmup_epochs = 0',
    'recipes.ClassifierRecipe.decay_epochs = (1,)',
    'input_pipeline.training_dataset.shuffle_buffer = 100',
]
job.JobConfig.sample_counts = (20,)
# The base stage's 16x16 samples scored on their own too.
job.JobConfig.metrics_heading = "Sample quality at 32x32"
job.JobConfig.earlier_resolutions = [@job.EarlierResolution()]
job.EarlierResolution.name = "16x16"
job.EarlierResolution.num_stages = 1
job.EarlierResolution.total = 20
# The headline sweeps: 2 seeds, 20 images per point.
job.JobConfig.sweep_seeds = [0, 1]
job.JobConfig.sweep_gin_bindings = [
    'sweep.SweepSettings.num_images = 20',
    'sweep.SweepSettings.fid_sample_counts = [20]',
    'sample_scores.ReferenceSpec.num_examples = 80',
    'sample_scores.ReferenceSpec.keep_features = 80',
    'synthetic_dataset.GenerationSettings.sheet_per_class = 0',
]
"""
SWEEP_STEPS = [
    "sweep_guidance_seed0", "sweep_guidance_seed1", "sweep_augmentation_seed0",
    "sweep_augmentation_seed1"
]

_run = pipeline_runs.run_pipeline


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  data = fashion_mnist_subset.prepared(str(root / "data"),
                                       per_class=(TRAIN_PER_CLASS, 3))
  gin_file = root / "tiny_job.gin"
  gin_file.write_text(TINY_JOB.replace("@DATA@", data))
  out = str(root / "run")
  result = _run(f"--gin_file={gin_file}", f"--output_dir={out}")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return str(gin_file), out, data, result


def test_job_runs_every_step_and_writes_the_report(finished_job):
  gin_file, out, data, result = finished_job
  del gin_file, data
  names = [
      "train_base", "train_sr", "generate", job.CLASSIFIER_REAL, "metrics",
      "generate_16x16", "metrics_16x16", job.CLASSIFIER_SYNTHETIC,
      job.REAL_SUBSET_DIR, job.CLASSIFIER_CAS_REFERENCE,
      job.CLASSIFIER_REAL_SYNTHETIC, *SWEEP_STEPS
  ]
  for name in names:
    assert os.path.exists(runner.marker_path(out, name)), name
  # The steps' own output is echoed under their names.
  assert re.search(r"^\[train_base\] step 4/4 loss", result.stdout, re.M)
  manifest = split_manifest.read(os.path.join(out, job.SYNTHETIC_DIR), "train")
  assert manifest.num_examples == 20
  assert list(manifest.class_counts) == [2] * 10

  metrics = json.load(open(job.metrics_path(out)))["metrics"]
  labels = [m["label"] for m in metrics]
  assert ("FID@20 vs validation (Fashion-MNIST tiny ResNet features, "
          "trained on the real train split)") in labels, labels
  fid = next(m for m in metrics if m["label"].startswith("FID@20 vs valid"))
  assert fid["value"] > 0

  # The base stage's own samples, scored at their resolution.
  earlier = split_manifest.read(os.path.join(out, f"{job.SYNTHETIC_DIR}_16x16"),
                                "train")
  assert earlier.num_examples == 20
  earlier_metrics = json.load(
      open(
          os.path.join(out, f"{job.METRICS_DIR}_16x16",
                       sample_scores.METRICS_FILE)))["metrics"]
  assert any(m["label"].startswith("FID@20 vs train") for m in earlier_metrics)

  # Real validation images of the same count score better than 4-step
  # samples.
  baseline = json.load(open(job.baseline_metrics_path(out)))["metrics"]
  real_fid = next(m for m in baseline if m["label"].startswith("FID@20 vs "
                                                               "train"))
  generated_fid = next(
      m for m in metrics if m["label"].startswith("FID@20 vs train"))
  assert 0 <= real_fid["value"] < generated_fid["value"]

  cas = json.load(
      open(os.path.join(out, job.CLASSIFIER_SYNTHETIC, "cas_report.json")))
  assert cas["validation_examples"] == 30

  # The CAS reference: the same protocol on as many real images per class.
  reference = json.load(
      open(os.path.join(out, job.CLASSIFIER_CAS_REFERENCE, "cas_report.json")))
  assert reference["training_data"] == "real"
  assert reference["real_examples_per_epoch"] == 20
  assert cas["synthetic_examples_per_epoch"] == 20
  assert reference["step"] == cas["step"]

  report = open(os.path.join(out, job.REPORT_DIR, "report.md")).read()
  labels = job.classifier_run_dirs(job.JobConfig(cas_real_reference=True), out)
  assert len(labels) == 4
  for label in labels:
    assert label in report
  assert f"{100 * cas['cas_top1']:.2f}" in report
  assert "CAS / the same protocol on real images" in report
  if reference["cas_top1"] > 0:
    ratio = cas["cas_top1"] / reference["cas_top1"]
    assert f"= **{ratio:.3f}**" in report
  assert "Fashion-MNIST tiny ResNet features" in report
  assert "For scale" in report
  assert "## Sample quality at 32x32" in report
  assert "## Sample quality at 16x16 (the cascade's first 1 stage(s))" in (
      report)
  assert "ankle boot" in report.lower()

  # The claims' headlines: each sweep point over the 2 seeds, with its
  # interval, and the verdicts.
  config = job.JobConfig(
      diffusion_stages=(job.DiffusionStage("base", ("b.gin",)),
                        job.DiffusionStage("sr", ("s.gin",))),
      guidance_sweep_gin_files=("g.gin",),
      augmentation_sweep_gin_files=("a.gin",), sweep_seeds=(0, 1))
  for directory in (job.guidance_sweep_dirs(config, out) +
                    job.augmentation_sweep_dirs(config, out)):
    assert os.path.exists(os.path.join(directory, records.CSV_FILE)), directory
  assert "## Conditioning augmentation at reduced size" in report
  assert "## Guidance against classification at reduced size" in report
  interval = r"[0-9.]+ \[-?[0-9.]+, [0-9.]+\] \(2 runs\)"
  assert re.search(r"\| the sr stage \| 0\.15 \| " + interval, report)
  assert re.search(r"\| 5 \| " + interval, report)
  assert "best FID: guidance" in report
  for png in re.findall(r"\]\(([^)]+\.png)\)", report):
    assert os.path.getsize(os.path.join(out, job.REPORT_DIR, png)) > 0


def test_rerun_skips_finished_steps_and_other_settings_are_refused(
    finished_job):
  gin_file, out, _, _ = finished_job
  again = _run(f"--gin_file={gin_file}", f"--output_dir={out}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before") == 11 + len(SWEEP_STEPS)
  assert "[train_base]" not in again.stdout

  changed = _run(f"--gin_file={gin_file}", f"--output_dir={out}",
                 "--gin_bindings=job.JobConfig.synthetic_multiplier = 0.5")
  assert changed.returncode == 3
  assert "step 'generate'" in changed.stderr
  assert "--multiplier=0.5" in changed.stderr


def test_dry_run_lists_the_steps_and_bad_configuration_exits_2(tmp_path):
  dry = _run("--dry_run", f"--output_dir={tmp_path}")
  assert dry.returncode == 0, dry.stderr[-2000:]
  for tool in ("prepare_data.py", "train.py", "generate.py",
               "train_classifier.py", "evaluate.py", "subset_data.py",
               "sweep.py"):
    assert tool in dry.stdout
  assert "--cas" in dry.stdout
  assert not os.listdir(tmp_path)

  bad = _run("--dry_run", "--gin_bindings=job.JobConfig.feature_network = "
             "'pixels'")
  assert bad.returncode == 2
  assert "feature_network" in bad.stderr
  unknown = _run("--dry_run", "--gin_bindings=job.JobConfig.nope = 1")
  assert unknown.returncode == 2 and "nope" in unknown.stderr
  seeds = _run("--dry_run", "--gin_bindings=job.JobConfig.sweep_seeds = [1, 1]")
  assert seeds.returncode == 2 and "sweep_seeds" in seeds.stderr
  stages = _run(
      "--dry_run", "--gin_bindings=job.JobConfig."
      "earlier_resolutions = [@job.EarlierResolution()]",
      "--gin_bindings=job.EarlierResolution.name = '16'",
      "--gin_bindings=job.EarlierResolution.num_stages = 0")
  assert stages.returncode == 2 and "num_stages" in stages.stderr


def test_azizi_job_scores_the_resolutions_of_table_1(tmp_path):
  dry = _run(f"--gin_file={AZIZI}", f"--output_dir={tmp_path}", "--dry_run")
  assert dry.returncode == 0, dry.stderr[-2000:]
  for name, num_stages in (("64x64", 1), ("256x256", 2)):
    generate = re.search(rf"generate_{name}: .*\n(.*)", dry.stdout).group(1)
    assert f"--num_stages={num_stages}" in generate
    assert "--total=50000" in generate
    assert "azizi_imagenet_1024.gin" in generate
    metrics = re.search(rf"metrics_{name}: .*\n(.*)", dry.stdout).group(1)
    assert f"--generated_dir={tmp_path}/synthetic_{name}" in metrics
    assert "--sample_counts=50000" in metrics
    assert "--feature_network=inception" in metrics
  # The 1x set at 1024 is still scored.
  assert re.search(r"^\d+\. metrics: ", dry.stdout, re.M)
