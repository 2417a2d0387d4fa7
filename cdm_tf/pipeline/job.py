"""The end-to-end job: what it runs, in which order, from one gin file.

Real data -> diffusion stages trained (or fine-tuned) one by one -> a
class-balanced synthetic set from their cascade -> a classifier trained on
the real data (its features also score the samples when the data is not
ImageNet) -> sample-quality metrics -> the Classification Accuracy Score
(a classifier trained on the synthetic set only) [-> its reference: the
same protocol on as many real images per class] -> a classifier trained on
real + synthetic data [-> the headlines of the claims measured by sampler
sweeps, at reduced size: base guidance against FID and CAS, the last
stage's conditioning-augmentation level s] -> the report.

``JobConfig`` (gin: ``gin/pipelines/*.gin``) names the gin files of each
step; ``steps`` turns it into ``runner.Step``s, i.e. the command lines of
the tools/ binaries, with every run directory under one output directory:

  <output_dir>/<stage name>/        each diffusion stage (tools/train.py)
  <output_dir>/synthetic/           the generated set (tools/generate.py)
  <output_dir>/classifier_real/     tools/train_classifier.py --data=real
  <output_dir>/metrics/             tools/evaluate.py
  <output_dir>/synthetic_<name>/, <output_dir>/metrics_<name>/
                                    each earlier resolution scored
                                    (``EarlierResolution``)
  <output_dir>/classifier_synthetic/       --cas
  <output_dir>/real_subset/                tools/subset_data.py: as many
                                           real images per class as the
                                           synthetic set (multiplier < 1)
  <output_dir>/classifier_cas_reference/   --cas --data=real on them
  <output_dir>/classifier_real_synthetic/  --data=real+synthetic
  <output_dir>/sweeps/guidance/seed_<s>/   tools/sweep.py --cas
  <output_dir>/sweeps/augmentation/<last stage>/seed_<s>/
  <output_dir>/report/              report.md and its PNGs

In the gin bindings given to the steps, "{output_dir}" stands for the job's
output directory (``BASE_MODEL_DIR = "{output_dir}/base/export"``) and
"{real_data_dir}" for its real data
(``input_pipeline.diffusion_dataset.data_dir = "{real_data_dir}"``).
"""

import dataclasses
import os
from typing import Optional

import gin

from cdm_tf.classifiers import cas
from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.data import class_names
from cdm_tf.data_preparation import real_subset
from cdm_tf.diffusion_training import trainer
from cdm_tf.metrics import sample_scores
from cdm_tf.models import export
from cdm_tf.pipeline import claim_sweeps
from cdm_tf.pipeline import report
from cdm_tf.pipeline import runner
from cdm_tf.synthetic_set import split_manifest

SYNTHETIC_DIR = "synthetic"
CLASSIFIER_REAL = "classifier_real"
CLASSIFIER_SYNTHETIC = "classifier_synthetic"
CLASSIFIER_REAL_SYNTHETIC = "classifier_real_synthetic"
CLASSIFIER_CAS_REFERENCE = "classifier_cas_reference"
REAL_SUBSET_DIR = "real_subset"
SWEEPS_DIR = "sweeps"
METRICS_DIR = "metrics"
REPORT_DIR = "report"
OUTPUT_DIR_PLACEHOLDER = "{output_dir}"
REAL_DATA_DIR_PLACEHOLDER = "{real_data_dir}"
FEATURE_NETWORKS = ("classifier", "inception")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DiffusionStage:
  """One diffusion model the job trains (tools/train.py).

  Attributes:
    name: its run directory under the output directory, e.g. "base".
    gin_files: its gin/models config(s).
    gin_bindings: overrides (e.g. the number of steps, the data).
  """
  name: str
  gin_files: tuple
  gin_bindings: tuple = ()


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EarlierResolution:
  """Sample quality at the output of one of the cascade's earlier stages.

  The synthetic set is made at the last stage's resolution; papers also
  score the earlier stages' samples (Azizi et al. Table 1: FID and IS at
  64x64 and 256x256 of their 64 -> 256 -> 1024 cascade). The job
  generates ``total`` images with the cascade's first ``num_stages``
  stages (tools/generate.py --num_stages, the same seeds: the images the
  next stage would have upsampled) and scores them like the main set.

  Attributes:
    name: names the run directories (synthetic_<name>, metrics_<name>) and
      the report's section, e.g. "64x64".
    num_stages: the cascade's first this many stages.
    total: images generated, spread evenly over the classes; FID@total.
  """
  name: str
  num_stages: int
  total: int = 50_000


@gin.configurable
@dataclasses.dataclass(frozen=True)
class JobConfig:
  """Everything the job runs.

  Attributes:
    title: the report's title.
    real_data_dir: real data in ImageNet format (train and validation).
    prepare_embedded_data: write the embedded Fashion-MNIST into
      ``real_data_dir`` first (tools/prepare_data.py) if it is not there.
    diffusion_stages: ``DiffusionStage``s in cascade order.
    generation_gin_files, generation_gin_bindings: the cascade and its
      sampler (gin/generation); the bindings point it at the stages'
      exports.
    generation_macros: {gin macro: string value} added to the generation
      bindings as ``NAME = "value"``, for values that come from this gin
      file's own macros (e.g. a frozen stage's export).
    synthetic_multiplier: generated images per class = this x the real
      training count of the class.
    classifier_gin_files, classifier_gin_bindings: the classifier trained
      on real and on real + synthetic data (gin/classifiers).
    cas_gin_files, cas_gin_bindings: the CAS classifier and recipe.
    cas_real_reference: also train the CAS classifier and recipe on real
      images, floor(synthetic_multiplier x count) per class (all of them
      from 1x on), for the ratio CAS / real that Azizi et al. give (0.947).
    real_synthetic_multiplier: synthetic images per class added to the
      real ones, x the real count; None adds the whole synthetic set.
    feature_network: "classifier": FID/KID/IS/precision-recall on the
      features of the real-data classifier (for data other than ImageNet;
      labelled so in every value); "inception": the FID Inception-v3.
    feature_network_name: how metric labels name the classifier features.
    is_inception_weights: with "inception": pytorch-fid's
      pt_inception-2015-12-05-6726825d.pth, for the Inception Score on the
      2015 Inception's 1008 logits (the standard ImageNet IS; without it or
      is_classifier_model the metrics say no IS is reported).
    is_classifier_model: with "inception": a Keras ImageNet classifier
      file for the Inception Score instead (none is installable here).
    sample_counts: N of FID@N; None lets tools/evaluate.py choose from the
      set's size.
    metrics_heading: the report's heading of the main set's metrics (e.g.
      to say that its resolution is not one a paper reports).
    earlier_resolutions: ``EarlierResolution``s also scored.
    real_baseline_split: also score this many real images of this split
      against the other splits, so the metrics have a scale (an FID on a
      classifier's features means little alone); None: no baseline.
    guidance_sweep_gin_files: the headline of Azizi et al.'s guidance
      claim at reduced size: a base-guidance sweep of the cascade
      (gin/sweeps; FID, IS and CAS per point) once per sweep seed; empty
      for none.
    augmentation_sweep_gin_files: the headline of CDM's conditioning
      augmentation claim at reduced size: the last stage sampled at several
      levels s (Table 3a), once per sweep seed; empty for none.
    sweep_gin_bindings: added to both sweeps (e.g. images per point).
    sweep_seeds: the sweeps' generation seeds (3 give an interval).
  """
  title: str = "cdm_tf end-to-end run"
  real_data_dir: str = "data/fashion_mnist"
  prepare_embedded_data: bool = False
  diffusion_stages: tuple = ()
  generation_gin_files: tuple = ()
  generation_gin_bindings: tuple = ()
  generation_macros: Optional[dict] = None
  synthetic_multiplier: float = 1.0
  classifier_gin_files: tuple = ()
  classifier_gin_bindings: tuple = ()
  cas_gin_files: tuple = ()
  cas_gin_bindings: tuple = ()
  cas_real_reference: bool = False
  real_synthetic_multiplier: Optional[float] = None
  feature_network: str = "classifier"
  feature_network_name: Optional[str] = None
  is_inception_weights: Optional[str] = None
  is_classifier_model: Optional[str] = None
  sample_counts: Optional[tuple] = None
  metrics_heading: str = "Sample quality"
  earlier_resolutions: tuple = ()
  real_baseline_split: Optional[str] = None
  guidance_sweep_gin_files: tuple = ()
  augmentation_sweep_gin_files: tuple = ()
  sweep_gin_bindings: tuple = ()
  sweep_seeds: tuple = (0, 1, 2)

  def validate(self):
    """Raises ValueError naming the first unusable setting."""
    if not self.diffusion_stages:
      raise ValueError("JobConfig.diffusion_stages is empty")
    names = [s.name for s in self.diffusion_stages]
    reserved = {
        SYNTHETIC_DIR, CLASSIFIER_REAL, CLASSIFIER_SYNTHETIC,
        CLASSIFIER_REAL_SYNTHETIC, CLASSIFIER_CAS_REFERENCE, REAL_SUBSET_DIR,
        SWEEPS_DIR, METRICS_DIR, REPORT_DIR, runner.STEPS_DIR, runner.LOGS_DIR
    }
    for name in names:
      if not name or os.sep in name or name in reserved:
        raise ValueError(f"diffusion stage name {name!r} is not a plain "
                         f"directory name outside {sorted(reserved)}")
    if len(set(names)) != len(names):
      raise ValueError(f"diffusion stage names repeat: {names}")
    earlier = [r.name for r in self.earlier_resolutions]
    for resolution in self.earlier_resolutions:
      if not resolution.name or os.sep in resolution.name:
        raise ValueError(f"earlier resolution name {resolution.name!r} is "
                         "not a plain directory name")
      if int(resolution.num_stages) != resolution.num_stages or (
          resolution.num_stages < 1):
        raise ValueError(f"earlier resolution {resolution.name!r}: "
                         "num_stages must be a positive integer, not "
                         f"{resolution.num_stages}")
      if int(resolution.total) != resolution.total or resolution.total < 2:
        raise ValueError(f"earlier resolution {resolution.name!r}: total "
                         f"must be an integer >= 2, not {resolution.total}")
    if len(set(earlier)) != len(earlier):
      raise ValueError(f"earlier resolution names repeat: {earlier}")
    clashes = set(names) & {
        f"{prefix}_{name}" for name in earlier
        for prefix in (SYNTHETIC_DIR, METRICS_DIR)
    }
    if clashes:
      raise ValueError(f"diffusion stage names {sorted(clashes)} are the "
                       "run directories of earlier resolutions")
    for stage in self.diffusion_stages:
      if not stage.gin_files:
        raise ValueError(f"diffusion stage {stage.name!r} has no gin_files")
    for field in ("generation_gin_files", "classifier_gin_files",
                  "cas_gin_files"):
      if not getattr(self, field):
        raise ValueError(f"JobConfig.{field} is empty")
    if not self.synthetic_multiplier or self.synthetic_multiplier <= 0:
      raise ValueError("JobConfig.synthetic_multiplier must be positive, "
                       f"not {self.synthetic_multiplier}")
    if (self.real_synthetic_multiplier is not None and
        self.real_synthetic_multiplier <= 0):
      raise ValueError("JobConfig.real_synthetic_multiplier must be positive "
                       f"or None, not {self.real_synthetic_multiplier}")
    if self.feature_network not in FEATURE_NETWORKS:
      raise ValueError(f"JobConfig.feature_network must be one of "
                       f"{FEATURE_NETWORKS}, not {self.feature_network!r}")
    for field in ("is_inception_weights", "is_classifier_model"):
      if getattr(self, field) and self.feature_network != "inception":
        raise ValueError(f"JobConfig.{field} is for "
                         "feature_network='inception' (the classifier "
                         "features have logits of their own)")
    if self.is_inception_weights and self.is_classifier_model:
      raise ValueError("JobConfig: give is_inception_weights or "
                       "is_classifier_model, not both")
    seeds = list(self.sweep_seeds)
    if (self.guidance_sweep_gin_files or self.augmentation_sweep_gin_files
       ) and (not seeds or len(set(seeds)) != len(seeds) or
              any(int(s) != s or s < 0 for s in seeds)):
      raise ValueError("JobConfig.sweep_seeds must be distinct non-negative "
                       f"integers, not {seeds}")


@gin.configurable
def selected(config=None):
  """The job a gin/pipelines file selects: ``config`` when bound (e.g.
  ``job.selected.config = @claims.ClaimsConfig()``), else ``JobConfig()``."""
  return JobConfig() if config is None else config


def substituted(text, real_data_dir, output_dir):
  return text.replace(OUTPUT_DIR_PLACEHOLDER,
                      output_dir).replace(REAL_DATA_DIR_PLACEHOLDER,
                                          real_data_dir)


def gin_flags(real_data_dir, output_dir, gin_files, gin_bindings):
  """--gin_file / --gin_bindings flags, placeholders replaced."""
  args = [f"--gin_file={path}" for path in gin_files]
  args += [
      f"--gin_bindings={substituted(b, real_data_dir, output_dir)}"
      for b in gin_bindings
  ]
  return args


def _gin_flags(config, gin_files, gin_bindings, output_dir):
  return gin_flags(config.real_data_dir, output_dir, gin_files, gin_bindings)


def prepare_data_step(data_dir):
  """Writes the embedded Fashion-MNIST to ``data_dir`` if it is not there."""
  return runner.Step(
      "prepare_data", "prepare_data.py", (f"--output_dir={data_dir}",),
      product=os.path.join(data_dir, class_names.CLASSES_FILE),
      description=f"write the embedded Fashion-MNIST to {data_dir}")


def _generation_bindings(config):
  macros = [
      f'{name} = "{value}"'
      for name, value in sorted((config.generation_macros or {}).items())
  ]
  return [*config.generation_gin_bindings, *macros]


def run_dir(output_dir, name):
  return os.path.join(output_dir, name)


def diffusion_stage_step(real_data_dir, output_dir, stage, strategy_flags):
  """tools/train.py for one ``DiffusionStage``; done once it has exported."""
  model_dir = run_dir(output_dir, stage.name)
  return runner.Step(
      f"train_{stage.name}", "train.py",
      (*gin_flags(real_data_dir, output_dir, stage.gin_files,
                  stage.gin_bindings), f"--model_dir={model_dir}",
       *strategy_flags), product=os.path.join(model_dir, trainer.EXPORT_DIR,
                                              export.CONFIG_FILE),
      description=f"train the {stage.name} diffusion stage")


def train_manifest(directory):
  """The manifest written last into a generated set or real subset (both
  in the synthetic-set format): its train split's."""
  return split_manifest.file_path(directory, real_subset.TRAIN_SPLIT)


def steps(config, output_dir, strategy_flags=()):
  """The job's ``runner.Step``s.

  Args:
    config: a validated ``JobConfig``.
    output_dir: the job's output directory.
    strategy_flags: --strategy/--tpu/--mixed_precision/--cpu_replicas
      flags given to every step that runs a network.
  """
  strategy_flags = list(strategy_flags)
  result = []
  if config.prepare_embedded_data:
    result.append(prepare_data_step(config.real_data_dir))
  result += [
      diffusion_stage_step(config.real_data_dir, output_dir, stage,
                           strategy_flags) for stage in config.diffusion_stages
  ]
  result.append(_generate_step(config, output_dir, strategy_flags))
  result.append(_real_classifier_step(config, output_dir, strategy_flags))
  feature_flags = _feature_flags(config, output_dir)
  result.append(_metrics_step(config, output_dir, feature_flags,
                              strategy_flags))
  for resolution in config.earlier_resolutions:
    result += _earlier_resolution_steps(config, output_dir, resolution,
                                        feature_flags, strategy_flags)
  result.append(_cas_step(config, output_dir, strategy_flags))
  if config.cas_real_reference:
    result += _cas_reference_steps(config, output_dir, strategy_flags,
                                   _real_per_class(output_dir))
  result.append(_real_synthetic_step(config, output_dir, strategy_flags))
  result += _sweep_steps(config, output_dir, feature_flags, strategy_flags)
  return result


def _real_model(output_dir):
  return os.path.join(run_dir(output_dir, CLASSIFIER_REAL),
                      classifier_trainer.MODEL_FILE)


def _real_per_class(output_dir):
  """The real-data classifier's per-class accuracy, which the other
  classifiers compare with."""
  return os.path.join(run_dir(output_dir, CLASSIFIER_REAL),
                      classifier_trainer.EVAL_DIR, evaluation.PER_CLASS_CSV)


def _generate_step(config, output_dir, strategy_flags):
  synthetic = run_dir(output_dir, SYNTHETIC_DIR)
  return runner.Step(
      "generate", "generate.py",
      (*_gin_flags(config, config.generation_gin_files,
                   _generation_bindings(config), output_dir),
       f"--real_data_dir={config.real_data_dir}",
       f"--multiplier={config.synthetic_multiplier:g}",
       f"--output_dir={synthetic}", *strategy_flags),
      product=train_manifest(synthetic),
      description=(f"generate {config.synthetic_multiplier:g} x the real "
                   "class counts with the cascade"))


def _real_classifier_step(config, output_dir, strategy_flags):
  return runner.Step(
      CLASSIFIER_REAL, "train_classifier.py",
      (*_gin_flags(config, config.classifier_gin_files,
                   config.classifier_gin_bindings, output_dir),
       f"--real_data_dir={config.real_data_dir}", "--data=real",
       f"--model_dir={run_dir(output_dir, CLASSIFIER_REAL)}", *strategy_flags),
      product=_real_model(output_dir),
      description="train the classifier on real data")


def _feature_flags(config, output_dir):
  """tools/evaluate.py's flags choosing the metrics' feature network."""
  if config.feature_network == "classifier":
    return claim_sweeps.classifier_network_flags(_real_model(output_dir),
                                                 config.feature_network_name)
  flags = ["--feature_network=inception"]
  if config.is_inception_weights:
    flags.append(f"--is_inception_weights={config.is_inception_weights}")
  if config.is_classifier_model:
    flags.append(f"--is_classifier_model={config.is_classifier_model}")
  return flags


def _metrics_step(config, output_dir, feature_flags, strategy_flags):
  network_flags = list(feature_flags)
  if config.real_baseline_split:
    network_flags.append(f"--real_baseline_split={config.real_baseline_split}")
  if config.sample_counts:
    network_flags.append("--sample_counts=" +
                         ",".join(str(int(n)) for n in config.sample_counts))
  metrics_dir = run_dir(output_dir, METRICS_DIR)
  return runner.Step(
      "metrics", "evaluate.py",
      (f"--generated_dir={run_dir(output_dir, SYNTHETIC_DIR)}",
       f"--real_data_dir={config.real_data_dir}", *network_flags,
       f"--output_dir={metrics_dir}", *strategy_flags),
      product=os.path.join(metrics_dir, sample_scores.METRICS_FILE),
      description="sample-quality metrics of the synthetic set")


def _cas_step(config, output_dir, strategy_flags):
  cas_dir = run_dir(output_dir, CLASSIFIER_SYNTHETIC)
  return runner.Step(
      CLASSIFIER_SYNTHETIC, "train_classifier.py",
      (*_gin_flags(config, config.cas_gin_files, config.cas_gin_bindings,
                   output_dir), "--cas",
       f"--real_data_dir={config.real_data_dir}",
       f"--synthetic_dir={run_dir(output_dir, SYNTHETIC_DIR)}",
       f"--model_dir={cas_dir}",
       f"--compare_with={_real_per_class(output_dir)}", *strategy_flags),
      product=os.path.join(cas_dir, cas.REPORT_FILE),
      description="Classification Accuracy Score: train on synthetic only")


def _real_synthetic_step(config, output_dir, strategy_flags):
  mixed_dir = run_dir(output_dir, CLASSIFIER_REAL_SYNTHETIC)
  multiplier = []
  if config.real_synthetic_multiplier is not None:
    multiplier.append(
        f"--synthetic_multiplier={config.real_synthetic_multiplier:g}")
  return runner.Step(
      CLASSIFIER_REAL_SYNTHETIC, "train_classifier.py",
      (*_gin_flags(config, config.classifier_gin_files,
                   config.classifier_gin_bindings, output_dir),
       f"--real_data_dir={config.real_data_dir}",
       f"--synthetic_dir={run_dir(output_dir, SYNTHETIC_DIR)}",
       "--data=real+synthetic", *multiplier, f"--model_dir={mixed_dir}",
       f"--compare_with={_real_per_class(output_dir)}", *strategy_flags),
      product=os.path.join(mixed_dir, classifier_trainer.MODEL_FILE),
      description="train the classifier on real + synthetic data")


def _earlier_resolution_steps(config, output_dir, resolution, feature_flags,
                              strategy_flags):
  """Generate with the cascade's first stages, then score those images."""
  synthetic = run_dir(output_dir, f"{SYNTHETIC_DIR}_{resolution.name}")
  metrics_dir = run_dir(output_dir, f"{METRICS_DIR}_{resolution.name}")
  return [
      runner.Step(
          f"generate_{resolution.name}", "generate.py",
          (*_gin_flags(config, config.generation_gin_files,
                       _generation_bindings(config), output_dir),
           f"--num_stages={resolution.num_stages}",
           f"--real_data_dir={config.real_data_dir}",
           f"--total={resolution.total}", f"--output_dir={synthetic}",
           *strategy_flags), product=train_manifest(synthetic),
          description=(f"generate {resolution.total} images at "
                       f"{resolution.name} with the cascade's first "
                       f"{resolution.num_stages} stage(s)")),
      runner.Step(f"metrics_{resolution.name}", "evaluate.py",
                  (f"--generated_dir={synthetic}",
                   f"--real_data_dir={config.real_data_dir}", *feature_flags,
                   f"--sample_counts={resolution.total}",
                   f"--output_dir={metrics_dir}", *strategy_flags),
                  product=os.path.join(metrics_dir, sample_scores.METRICS_FILE),
                  description=f"sample-quality metrics at {resolution.name}"),
  ]


def earlier_resolution_sections(config, output_dir):
  """[(heading, build, args)] of the earlier resolutions' metrics, for
  ``report.write_report``'s ``extra_sections``."""
  return [(f"Sample quality at {r.name} (the cascade's first "
           f"{r.num_stages} stage(s))", report.metrics_section,
           (os.path.join(output_dir, f"{METRICS_DIR}_{r.name}",
                         sample_scores.METRICS_FILE),))
          for r in config.earlier_resolutions]


def guidance_sweep_dirs(config, output_dir):
  """The guidance sweep's directory per seed; empty when not configured."""
  if not config.guidance_sweep_gin_files:
    return []
  root = run_dir(output_dir, SWEEPS_DIR)
  return [claim_sweeps.guidance_dir(root, s) for s in config.sweep_seeds]


def augmentation_sweep_dirs(config, output_dir):
  """The augmentation sweep's directory per seed (of the last stage)."""
  if not config.augmentation_sweep_gin_files:
    return []
  root = run_dir(output_dir, SWEEPS_DIR)
  stage = config.diffusion_stages[-1].name
  return [
      claim_sweeps.augmentation_dir(root, stage, s) for s in config.sweep_seeds
  ]


def _sweep_steps(config, output_dir, network_flags, strategy_flags):
  """The claims' headlines at reduced size: one sweep per kind and seed."""
  kinds = [("guidance", config.guidance_sweep_gin_files,
            guidance_sweep_dirs(config, output_dir),
            "claim headline: base guidance against FID and CAS"),
           ("augmentation", config.augmentation_sweep_gin_files,
            augmentation_sweep_dirs(config, output_dir),
            "claim headline: conditioning augmentation level s")]
  result = []
  for kind, gin_files, directories, description in kinds:
    for seed, directory in zip(config.sweep_seeds, directories):
      bindings = (*_generation_bindings(config), *config.sweep_gin_bindings,
                  *config.cas_gin_bindings,
                  f"{claim_sweeps.GENERATION_SEED_BINDING} = {seed}")
      result.append(
          claim_sweeps.sweep_step(
              f"sweep_{kind}_seed{seed}", directory,
              _gin_flags(config, (*config.cas_gin_files, *gin_files), bindings,
                         output_dir), config.real_data_dir, network_flags,
              f"{description}, generation seed {seed}", strategy_flags))
  return result


def headline_sections(config, output_dir, report_dir):
  """[(heading, build, args)] of the claims' headlines at reduced size,
  for ``report.write_report``'s ``extra_sections``."""
  sections = []
  directories = augmentation_sweep_dirs(config, output_dir)
  if directories:
    stage = claim_sweeps.SweptStage(
        f"the {config.diffusion_stages[-1].name} stage", tuple(directories))
    sections.append(("Conditioning augmentation at reduced size (CDM Table 3a)",
                     claim_sweeps.augmentation_section, (report_dir, [stage])))
  directories = guidance_sweep_dirs(config, output_dir)
  if directories:
    sections.append(
        ("Guidance against classification at reduced size (Azizi et al. "
         "Fig. 3)", claim_sweeps.guidance_section, (report_dir, directories)))
  return sections


def _cas_reference_steps(config, output_dir, strategy_flags, real_per_class):
  """The real subset matching the synthetic set, and the CAS classifier
  and recipe trained on it."""
  result = []
  data = config.real_data_dir
  if config.synthetic_multiplier < 1:
    data = run_dir(output_dir, REAL_SUBSET_DIR)
    result.append(
        runner.Step(
            REAL_SUBSET_DIR, "subset_data.py",
            (f"--source_dir={config.real_data_dir}", f"--output_dir={data}",
             f"--fraction={config.synthetic_multiplier:g}"),
            product=train_manifest(data),
            description=(f"take floor({config.synthetic_multiplier:g} x count) "
                         "real images of each class")))
  reference_dir = run_dir(output_dir, CLASSIFIER_CAS_REFERENCE)
  result.append(
      runner.Step(
          CLASSIFIER_CAS_REFERENCE, "train_classifier.py",
          (*_gin_flags(config, config.cas_gin_files, config.cas_gin_bindings,
                       output_dir), "--cas", "--data=real",
           f"--real_data_dir={data}", f"--model_dir={reference_dir}",
           f"--compare_with={real_per_class}", *strategy_flags),
          product=os.path.join(reference_dir, cas.REPORT_FILE),
          description="the CAS protocol on as many real images per class"))
  return result


def diffusion_run_dirs(config, output_dir):
  """{stage name: run directory}, for the report."""
  return {s.name: run_dir(output_dir, s.name) for s in config.diffusion_stages}


def classifier_run_dirs(config, output_dir):
  """{report label: run directory} of the job's classifiers."""
  runs = {
      "real": run_dir(output_dir, CLASSIFIER_REAL),
      "synthetic only (CAS)": run_dir(output_dir, CLASSIFIER_SYNTHETIC)
  }
  if config.cas_real_reference:
    runs["real, CAS protocol (reference)"] = run_dir(output_dir,
                                                     CLASSIFIER_CAS_REFERENCE)
  runs["real + synthetic"] = run_dir(output_dir, CLASSIFIER_REAL_SYNTHETIC)
  return runs


def metrics_path(output_dir):
  return os.path.join(output_dir, METRICS_DIR, sample_scores.METRICS_FILE)


def baseline_metrics_path(output_dir):
  return os.path.join(output_dir, METRICS_DIR, sample_scores.BASELINE_FILE)


def settings_table(config, output_dir, strategy_flags=()):
  """{setting: text} of what the job ran, for the report."""

  def listed(values):
    return ", ".join(
        substituted(str(v), config.real_data_dir, output_dir)
        for v in values) or "-"

  table = {
      "real data": config.real_data_dir, "output directory": output_dir,
      "strategy flags": " ".join(strategy_flags) or "(defaults)"
  }
  for stage in config.diffusion_stages:
    table[f"diffusion stage {stage.name}"] = listed(
        (*stage.gin_files, *stage.gin_bindings))
  table["generation"] = listed(
      (*config.generation_gin_files, *_generation_bindings(config)))
  table["synthetic images per class"] = (
      f"{config.synthetic_multiplier:g} x the real training count")
  table["classifier (real, real + synthetic)"] = listed(
      (*config.classifier_gin_files, *config.classifier_gin_bindings))
  table["CAS classifier"] = listed(
      (*config.cas_gin_files, *config.cas_gin_bindings))
  if config.cas_real_reference:
    table["CAS reference"] = (
        "the CAS classifier on floor("
        f"{min(config.synthetic_multiplier, 1.0):g} x count) real images "
        "per class")
  table["synthetic images added to the real ones"] = (
      "the whole synthetic set" if config.real_synthetic_multiplier is None else
      f"{config.real_synthetic_multiplier:g} x the real count per class")
  table["metrics' feature network"] = (config.feature_network_name or
                                       config.feature_network)
  for kind in ("guidance", "augmentation"):
    gin_files = getattr(config, f"{kind}_sweep_gin_files")
    if gin_files:
      table[f"{kind} sweep"] = (
          f"{listed((*gin_files, *config.sweep_gin_bindings))}, generation "
          "seeds "
          f"{', '.join(str(s) for s in config.sweep_seeds)}")
  return table
