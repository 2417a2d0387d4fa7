"""The claims job: the papers' effects on one dataset, over repeated runs.

``ClaimsConfig`` (gin: gin/pipelines/fashion_mnist_claims.gin) turns three
claims into ``runner.Step``s of the tools/ binaries, run and resumed by
tools/pipeline.py like the main job; ``claims_report`` summarises each
measurement over its runs (mean and 95% t-interval,
``metrics/repeated_runs``) and calls a difference an effect only when the
intervals separate.

1. Conditioning augmentation (Ho et al., CDM, Tables 2b and 3a): the
   super-resolution stage trained once per ``AugmentationVariant`` (Gaussian
   augmentation with amortized s, blur, none), each cascade scored at its
   sampling levels s by FID and CAS, one sweep (tools/sweep.py --cas) per
   variant and generation seed.
2. Guidance vs classification (Azizi et al., Fig. 3 and A.1): the base
   stage's guidance weight swept through the whole cascade, FID, IS and CAS
   per point, one sweep per generation seed.
3. Real + synthetic (Azizi et al., Table 4 and Fig. 6): per ``DataMix`` (all
   real images, or a fraction), a classifier trained on the real images
   alone and with k x as many generated ones per class, once per classifier
   seed; the generated set is made once, large enough for every mix (a
   smaller k takes a prefix of each class).

The first classifier trained on all real images alone (claim 3, first seed)
is also the feature network of the sweeps' FID and IS.

  <output_dir>/base/, sr_<variant>/            diffusion stages (train.py)
  <output_dir>/real_<mix>/                     real subsets (subset_data.py)
  <output_dir>/classifiers/<mix>_k<k>_seed<s>/ claim 3 (train_classifier.py)
  <output_dir>/guidance/seed_<s>/              claim 2 (sweep.py)
  <output_dir>/augmentation/<variant>/seed_<s>/ claim 1 (sweep.py)
  <output_dir>/synthetic/                      claim 3's set (generate.py)
  <output_dir>/report/                         report.md and its PNGs
"""

import dataclasses
import os
from typing import Optional

import gin

from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.diffusion_training import trainer
from cdm_tf.pipeline import claim_sweeps
from cdm_tf.pipeline import job
from cdm_tf.pipeline import runner

BASE = "base"
CLASSIFIERS_DIR = "classifiers"
SEED_BINDING = "trainer.train_classifier.seed"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AugmentationVariant:
  """One way of training the super-resolution stage (claim 1).

  Attributes:
    name: a plain name; the stage trains in ``sr_<name>/``.
    description: how the report names it.
    gin_bindings: added to the super-resolution stage's bindings, e.g.
      ``diffusion_model.DiffusionModel.conditioning_augmentation = None``.
    sweep_grid: the sampler grid its cascade is scored at, e.g.
      ``{"aug_level": [0.0, 0.1, 0.2]}``; a model trained without Gaussian
      augmentation takes only ``{"aug_level": [0.0]}``.
  """
  name: str
  description: str
  gin_bindings: tuple = ()
  sweep_grid: Optional[dict] = None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataMix:
  """Real training images and the synthetic amounts added to them (claim 3).

  Attributes:
    name: a plain name, e.g. "full" or "10pct".
    real_fraction: floor(fraction x count) real images of each class.
    multipliers: k values; k x the real images of each class are added
      from the synthetic set; 0 trains on the real images alone.
    gin_bindings: added to the classifier's bindings for this mix, e.g.
      more epochs for a small real set.
  """
  name: str
  real_fraction: float = 1.0
  multipliers: tuple = (0.0, 1.0)
  gin_bindings: tuple = ()


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ClaimsConfig:
  """Everything the claims job runs.

  Attributes:
    title: the report's title.
    real_data_dir: real data in ImageNet format (train and validation).
    prepare_embedded_data: write the embedded Fashion-MNIST there first.
    base_stage: the base diffusion stage (``job.DiffusionStage``).
    sr_stage: the super-resolution stage; each variant adds its bindings.
    augmentation_variants: ``AugmentationVariant``s; the first one's
      cascade generates the sets of claims 2 and 3.
    augmentation_baseline: the variant the others are compared with (the
      one trained without augmentation).
    generation_gin_files, generation_gin_bindings: the cascade and its
      sampler; "{output_dir}" and "{real_data_dir}" are replaced, and
      ``sr_model_macro`` is bound to each variant's export.
    sr_model_macro: the generation gin's macro of the super-resolution
      export.
    classifier_gin_files, classifier_gin_bindings: claim 3's classifier
      and recipe (also the sweeps' feature network).
    cas_gin_files, cas_gin_bindings: the CAS classifier of the sweeps.
    guidance_sweep_gin_files: claim 2's sweep (gin/sweeps).
    augmentation_sweep_gin_files: claim 1's sweep; the variant's
      ``sweep_grid`` replaces its grid.
    sweep_gin_bindings: added to both sweeps (e.g. images per point).
    data_mixes: claim 3's ``DataMix``es; one must train on all real images
      alone (real_fraction 1, k 0): its first seed's classifier scores the
      sweeps.
    classifier_seeds: claim 3's seeds, one classifier run each.
    generation_seeds: the sweeps' generation seeds, one sweep each.
    feature_network_name: how metric labels name the classifier features.
  """
  title: str = "cdm_tf claims"
  real_data_dir: str = "data/fashion_mnist"
  prepare_embedded_data: bool = False
  base_stage: Optional[job.DiffusionStage] = None
  sr_stage: Optional[job.DiffusionStage] = None
  augmentation_variants: tuple = ()
  augmentation_baseline: str = "none"
  generation_gin_files: tuple = ()
  generation_gin_bindings: tuple = ()
  sr_model_macro: str = "SR_MODEL_DIR"
  classifier_gin_files: tuple = ()
  classifier_gin_bindings: tuple = ()
  cas_gin_files: tuple = ()
  cas_gin_bindings: tuple = ()
  guidance_sweep_gin_files: tuple = ()
  augmentation_sweep_gin_files: tuple = ()
  sweep_gin_bindings: tuple = ()
  data_mixes: tuple = ()
  classifier_seeds: tuple = (0, 1, 2)
  generation_seeds: tuple = (0, 1, 2)
  feature_network_name: Optional[str] = None

  def validate(self):
    """Raises ValueError naming the first unusable setting."""
    if self.base_stage is None or self.sr_stage is None:
      raise ValueError("ClaimsConfig needs base_stage and sr_stage")
    for field in ("generation_gin_files", "classifier_gin_files",
                  "cas_gin_files", "guidance_sweep_gin_files",
                  "augmentation_sweep_gin_files", "augmentation_variants",
                  "data_mixes", "classifier_seeds", "generation_seeds"):
      if not getattr(self, field):
        raise ValueError(f"ClaimsConfig.{field} is empty")
    _check_names("augmentation variant",
                 [v.name for v in self.augmentation_variants])
    if self.augmentation_baseline not in [
        v.name for v in self.augmentation_variants
    ]:
      raise ValueError(f"augmentation_baseline {self.augmentation_baseline!r}"
                       " is none of the augmentation variants")
    _check_names("data mix", [m.name for m in self.data_mixes])
    for seeds in ("classifier_seeds", "generation_seeds"):
      values = list(getattr(self, seeds))
      if len(set(values)) != len(values) or any(
          int(s) != s or s < 0 for s in values):
        raise ValueError(f"ClaimsConfig.{seeds} must be distinct "
                         f"non-negative integers, not {values}")
    for mix in self.data_mixes:
      if not 0.0 < mix.real_fraction <= 1.0:
        raise ValueError(f"data mix {mix.name!r}: real_fraction must be in "
                         f"(0, 1], not {mix.real_fraction}")
      ks = list(mix.multipliers)
      if not ks or len(set(ks)) != len(ks) or any(k < 0 for k in ks):
        raise ValueError(f"data mix {mix.name!r}: multipliers must be "
                         f"distinct and >= 0, not {ks}")
    if feature_run(self) is None:
      raise ValueError("one data mix must train on all real images alone "
                       "(real_fraction 1 and multiplier 0): its classifier "
                       "is the sweeps' feature network")


def _check_names(what, names):
  for name in names:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
      raise ValueError(f"{what} name {name!r} must be letters, digits, - "
                       "or _")
  if len(set(names)) != len(names):
    raise ValueError(f"{what} names repeat: {names}")


# ------------------------------------------------------------ run layout


def variant_stage_name(variant):
  return f"sr_{variant.name}"


def classifier_run_name(mix, k, seed):
  return f"{mix.name}_k{k:g}_seed{seed}"


def classifier_dir(output_dir, mix, k, seed):
  return os.path.join(output_dir, CLASSIFIERS_DIR,
                      classifier_run_name(mix, k, seed))


def mix_data_dir(config, output_dir, mix):
  """The mix's real data: the job's real data, or its subset."""
  if mix.real_fraction >= 1.0:
    return config.real_data_dir
  return os.path.join(output_dir, f"real_{mix.name}")


def guidance_dir(output_dir, seed):
  return claim_sweeps.guidance_dir(output_dir, seed)


def augmentation_dir(output_dir, variant, seed):
  return claim_sweeps.augmentation_dir(output_dir, variant.name, seed)


def feature_run(config):
  """(mix, k, seed) of the classifier whose features score the sweeps."""
  for mix in config.data_mixes:
    if mix.real_fraction >= 1.0 and 0 in mix.multipliers:
      return mix, 0.0, config.classifier_seeds[0]
  return None


def feature_model(config, output_dir):
  mix, k, seed = feature_run(config)
  return os.path.join(classifier_dir(output_dir, mix, k, seed),
                      classifier_trainer.MODEL_FILE)


def synthetic_multiplier(config):
  """Generated images per class, x the real count, that every mix needs."""
  return max(mix.real_fraction * k
             for mix in config.data_mixes
             for k in mix.multipliers)


# ----------------------------------------------------------------- steps


def _gin_flags(config, output_dir, files, bindings):
  return job.gin_flags(config.real_data_dir, output_dir, files, bindings)


def _generation_bindings(config, output_dir, variant):
  export = os.path.join(output_dir, variant_stage_name(variant),
                        trainer.EXPORT_DIR)
  return [
      *config.generation_gin_bindings, f'{config.sr_model_macro} = "{export}"'
  ]


def _diffusion_steps(config, output_dir, strategy_flags):
  # The base always trains in base/: the generation bindings name its export.
  stages = [
      job.DiffusionStage(BASE, config.base_stage.gin_files,
                         config.base_stage.gin_bindings)
  ] + [
      job.DiffusionStage(variant_stage_name(v), config.sr_stage.gin_files,
                         (*config.sr_stage.gin_bindings, *v.gin_bindings))
      for v in config.augmentation_variants
  ]
  return [
      job.diffusion_stage_step(config.real_data_dir, output_dir, stage,
                               strategy_flags) for stage in stages
  ]


def _classifier_step(config, output_dir, mix, k, seed, strategy_flags):
  model_dir = classifier_dir(output_dir, mix, k, seed)
  data = [f"--real_data_dir={mix_data_dir(config, output_dir, mix)}"]
  if k:
    data += [
        f"--synthetic_dir={os.path.join(output_dir, job.SYNTHETIC_DIR)}",
        "--data=real+synthetic", f"--synthetic_multiplier={k:g}"
    ]
  else:
    data.append("--data=real")
  bindings = (*config.classifier_gin_bindings, *mix.gin_bindings,
              f"{SEED_BINDING} = {seed}")
  return runner.Step(
      f"classifier_{classifier_run_name(mix, k, seed)}", "train_classifier.py",
      (*_gin_flags(config, output_dir, config.classifier_gin_files, bindings),
       *data, f"--model_dir={model_dir}", *strategy_flags),
      product=os.path.join(model_dir, classifier_trainer.MODEL_FILE),
      description=(f"claim 3: {mix.name} real data + {k:g} x synthetic, "
                   f"classifier seed {seed}"))


def _sweep_step(config, output_dir, name, sweep_dir, gin_files, bindings,
                description, strategy_flags):
  return claim_sweeps.sweep_step(
      name, sweep_dir,
      _gin_flags(
          config, output_dir, (*config.cas_gin_files, *gin_files),
          (*config.sweep_gin_bindings, *bindings, *config.cas_gin_bindings)),
      config.real_data_dir,
      claim_sweeps.classifier_network_flags(feature_model(config, output_dir),
                                            config.feature_network_name),
      description, strategy_flags)


def steps(config, output_dir, strategy_flags=()):
  """The claims job's ``runner.Step``s, cheapest evidence first.

  Args:
    config: a validated ``ClaimsConfig``.
    output_dir: the job's output directory.
    strategy_flags: flags given to every step that runs a network.
  """
  strategy_flags = list(strategy_flags)
  result = []
  if config.prepare_embedded_data:
    result.append(job.prepare_data_step(config.real_data_dir))
  for mix in config.data_mixes:
    if mix.real_fraction < 1.0:
      data = mix_data_dir(config, output_dir, mix)
      result.append(
          runner.Step(
              f"real_{mix.name}", "subset_data.py",
              (f"--source_dir={config.real_data_dir}", f"--output_dir={data}",
               f"--fraction={mix.real_fraction:g}"),
              product=job.train_manifest(data),
              description=(f"take floor({mix.real_fraction:g} x count) real "
                           "images of each class")))
  # Real-only classifiers need no generated data; the feature network first.
  first = feature_run(config)
  real_only = [first] + [(mix, 0.0, seed)
                         for mix in config.data_mixes if 0 in mix.multipliers
                         for seed in config.classifier_seeds
                         if (mix, 0.0, seed) != first]
  result += [
      _classifier_step(config, output_dir, mix, k, seed, strategy_flags)
      for mix, k, seed in real_only
  ]
  result += _diffusion_steps(config, output_dir, strategy_flags)

  result += _claim_sweep_steps(config, output_dir, strategy_flags)

  main_variant = config.augmentation_variants[0]
  synthetic = os.path.join(output_dir, job.SYNTHETIC_DIR)
  multiplier = synthetic_multiplier(config)
  if multiplier > 0:
    result.append(
        runner.Step(
            "generate", "generate.py",
            (*_gin_flags(config, output_dir, config.generation_gin_files,
                         _generation_bindings(config, output_dir,
                                              main_variant)),
             f"--real_data_dir={config.real_data_dir}",
             f"--multiplier={multiplier:g}", f"--output_dir={synthetic}",
             *strategy_flags), product=job.train_manifest(synthetic),
            description=(f"claim 3: generate {multiplier:g} x the real class "
                         "counts")))
  for mix in config.data_mixes:
    for k in mix.multipliers:
      if k:
        result += [
            _classifier_step(config, output_dir, mix, k, seed, strategy_flags)
            for seed in config.classifier_seeds
        ]
  return result


def _claim_sweep_steps(config, output_dir, strategy_flags):
  """The sweeps of claims 1 and 2 (guidance; conditioning augmentation),
  one per generation seed and variant."""
  result = []
  main_variant = config.augmentation_variants[0]
  for seed in config.generation_seeds:
    result.append(
        _sweep_step(config, output_dir, f"guidance_seed{seed}",
                    guidance_dir(output_dir,
                                 seed), config.guidance_sweep_gin_files,
                    (*_generation_bindings(config, output_dir, main_variant),
                     f"{claim_sweeps.GENERATION_SEED_BINDING} = {seed}"),
                    f"claim 2: base guidance sweep, generation seed {seed}",
                    strategy_flags))
  for variant in config.augmentation_variants:
    grid = ([f"sweep.SweepSettings.grid = {variant.sweep_grid!r}"]
            if variant.sweep_grid else [])
    for seed in config.generation_seeds:
      result.append(
          _sweep_step(
              config, output_dir, f"augmentation_{variant.name}_seed{seed}",
              augmentation_dir(output_dir, variant,
                               seed), config.augmentation_sweep_gin_files,
              (*_generation_bindings(config, output_dir, variant), *grid,
               f"{claim_sweeps.GENERATION_SEED_BINDING} = {seed}"),
              f"claim 1: {variant.description}, generation seed {seed}",
              strategy_flags))
  return result


def settings_table(config, output_dir, strategy_flags=()):
  """{setting: text} of what the claims job ran, for the report."""

  def listed(values):
    return ", ".join(
        job.substituted(str(v), config.real_data_dir, output_dir)
        for v in values) or "-"

  table = {
      "real data": config.real_data_dir, "output directory": output_dir,
      "strategy flags": " ".join(strategy_flags) or "(defaults)",
      "base stage": listed(
          (*config.base_stage.gin_files, *config.base_stage.gin_bindings)),
      "super-resolution stage": listed(
          (*config.sr_stage.gin_files, *config.sr_stage.gin_bindings))
  }
  for variant in config.augmentation_variants:
    table[f"variant {variant.name}"] = (f"{variant.description}: " +
                                        listed(variant.gin_bindings) +
                                        f"; sweep grid {variant.sweep_grid}")
  table["generation"] = listed(
      (*config.generation_gin_files, *config.generation_gin_bindings))
  table["classifier"] = listed(
      (*config.classifier_gin_files, *config.classifier_gin_bindings))
  table["CAS classifier"] = listed(
      (*config.cas_gin_files, *config.cas_gin_bindings))
  table["sweeps"] = listed(
      (*config.guidance_sweep_gin_files, *config.augmentation_sweep_gin_files,
       *config.sweep_gin_bindings))
  for mix in config.data_mixes:
    table[f"data mix {mix.name}"] = (
        f"{mix.real_fraction:g} of the real images, k in "
        f"{[float(k) for k in mix.multipliers]}" +
        (f"; {listed(mix.gin_bindings)}" if mix.gin_bindings else ""))
  table["classifier seeds"] = str(list(config.classifier_seeds))
  table["generation seeds"] = str(list(config.generation_seeds))
  table["generated images per class"] = (
      f"{synthetic_multiplier(config):g} x the real training count")
  return table
