"""The claims job's steps (cdm_tf/pipeline/claims.py) and its report
(claims_report.py) on hand-made run outputs with hand-computed intervals."""

import json
import os

import pytest

from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.pipeline import claim_sweeps
from cdm_tf.pipeline import claims
from cdm_tf.pipeline import claims_report
from cdm_tf.pipeline import job
from cdm_tf.sweeps import records

NET = "net"
FID = f"FID@20 vs train ({NET})"
IS = f"IS@20 ({NET})"
CAS = "CAS top-1@20 vs validation (cas net)"


def _config(**overrides):
  settings = dict(
      real_data_dir="data/fm", base_stage=job.DiffusionStage(
          "base",
          ("base.gin",)), sr_stage=job.DiffusionStage("sr", ("sr.gin",),
                                                      ("sr_binding = 1",)),
      augmentation_variants=(claims.AugmentationVariant(
          "gaussian", "Gaussian augmentation"),
                             claims.AugmentationVariant("none",
                                                        "no augmentation",
                                                        ("aug = None",),
                                                        {"aug_level": [0.0]})),
      generation_gin_files=("generation.gin",),
      generation_gin_bindings=('BASE = "{output_dir}/base/export"',),
      classifier_gin_files=("classifier.gin",), cas_gin_files=("cas.gin",),
      guidance_sweep_gin_files=("guidance.gin",),
      augmentation_sweep_gin_files=("augmentation.gin",),
      data_mixes=(claims.DataMix("full", 1.0, (0, 0.2)),
                  claims.DataMix("10pct", 0.1, (0, 1, 2),
                                 ("recipes.ClassifierRecipe.epochs = 30",))),
      classifier_seeds=(0, 1, 2), generation_seeds=(0, 1, 2))
  settings.update(overrides)
  config = claims.ClaimsConfig(**settings)
  config.validate()
  return config


def test_steps_layout_and_order(tmp_path):
  config = _config()
  out = str(tmp_path)
  steps = claims.steps(config, out, ["--strategy=cpu"])
  names = [s.name for s in steps]
  assert len(names) == len(set(names))
  # Real-only classifiers first (the feature network before all), then the
  # stages, the sweeps, the generated set and the mixed classifiers.
  assert names[:2] == ["real_10pct", "classifier_full_k0_seed0"]
  assert names.index("train_sr_none") < names.index("guidance_seed0")
  assert names.index("augmentation_none_seed2") < names.index("generate")
  assert names[-1] == "classifier_10pct_k2_seed2"
  assert len([n for n in names if n.startswith("classifier_")]) == 3 * 5
  by_name = {s.name: s for s in steps}

  # 10% x 2 and 100% x 0.2: 0.2 x the real counts, generated once.
  assert "--multiplier=0.2" in by_name["generate"].args
  mixed = by_name["classifier_10pct_k2_seed1"].args
  assert f"--real_data_dir={out}/real_10pct" in mixed
  assert "--synthetic_multiplier=2" in mixed
  assert "--gin_bindings=recipes.ClassifierRecipe.epochs = 30" in mixed
  assert "--gin_bindings=trainer.train_classifier.seed = 1" in mixed
  assert "--strategy=cpu" in mixed
  real = by_name["classifier_full_k0_seed2"].args
  assert "--data=real" in real and "--real_data_dir=data/fm" in real
  assert not any(a.startswith("--synthetic") for a in real)

  none = by_name["train_sr_none"].args
  assert "--gin_bindings=sr_binding = 1" in none
  assert "--gin_bindings=aug = None" in none
  assert f"--model_dir={out}/sr_none" in none
  sweep_args = by_name["augmentation_none_seed1"].args
  assert ("--gin_bindings=sweep.SweepSettings.grid = {'aug_level': [0.0]}"
          in sweep_args)
  assert f'--gin_bindings=SR_MODEL_DIR = "{out}/sr_none/export"' in sweep_args
  assert f'--gin_bindings=BASE = "{out}/base/export"' in sweep_args
  assert ("--gin_bindings=synthetic_dataset.GenerationSettings.base_seed = 1"
          in sweep_args)
  assert "--cas" in sweep_args and "--gin_file=cas.gin" in sweep_args
  assert (f"--classifier_model={out}/classifiers/full_k0_seed0/model.keras"
          in sweep_args)
  assert by_name["augmentation_none_seed1"].product == os.path.join(
      out, "augmentation", "none", "seed_1", records.CSV_FILE)
  guidance = by_name["guidance_seed2"].args
  assert f'--gin_bindings=SR_MODEL_DIR = "{out}/sr_gaussian/export"' in (
      guidance)
  assert "--gin_file=guidance.gin" in guidance


@pytest.mark.parametrize("overrides, message", [
    ({"data_mixes": (claims.DataMix("low", 0.1,
                                    (0, 1)),)}, "all real images alone"),
    ({"augmentation_baseline": "blur"}, "augmentation_baseline"),
    ({
        "data_mixes":
            (claims.DataMix("full", 1.0,
                            (0, 1)), claims.DataMix("full", 0.5, (0,)))
    }, "repeat"),
    ({"data_mixes": (claims.DataMix("full", 1.5, (0,)),)}, "real_fraction"),
    ({"data_mixes": (claims.DataMix("full", 1.0, (0, -1)),)}, "multipliers"),
    ({"classifier_seeds": (0, 0)}, "classifier_seeds"),
    ({"generation_seeds": ()}, "generation_seeds"),
    ({"augmentation_variants":
        (claims.AugmentationVariant("none/x", "bad"),)}, "letters"),
])
def test_bad_configurations_are_refused(overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(**overrides)


# --------------------------------------------------------------- the report


def _classifier(model_dir, top1):
  eval_dir = os.path.join(model_dir, classifier_trainer.EVAL_DIR)
  os.makedirs(eval_dir)
  with open(os.path.join(model_dir, classifier_trainer.RUN_FILE), "w") as f:
    json.dump({"model": "resnet", "num_steps": 10}, f)
  with open(os.path.join(eval_dir, evaluation.RESULTS_FILE), "w") as f:
    json.dump({"top1": top1, "top5": 1.0, "step": 10, "examples": 100}, f)


def _sweep(directory, field, rows):
  """rows: [(value, fid, is, cas)]."""
  os.makedirs(directory)
  lines = [f"point,{field},{FID},{IS},{IS} std,{CAS}"]
  lines += [
      f"{field}_{v},{v},{fid},{inception},0.1,{cas}"
      for v, fid, inception, cas in rows
  ]
  with open(os.path.join(directory, records.CSV_FILE), "w") as f:
    f.write("\n".join(lines) + "\n")


def test_report_summarises_each_claim_over_runs(tmp_path):
  config = _config(data_mixes=(claims.DataMix("full", 1.0, (0, 1)),
                               claims.DataMix("10pct", 0.1, (0, 1))))
  out = str(tmp_path)
  tops = {("full", 0): [0.90, 0.91, 0.92], ("full", 1): [0.95, 0.96, 0.97],
          ("10pct", 0): [0.80, 0.82, 0.84], ("10pct", 1): [0.83, 0.85, 0.87]}
  for mix in config.data_mixes:
    for k in mix.multipliers:
      for seed, top1 in zip(config.classifier_seeds, tops[(mix.name, k)]):
        _classifier(claims.classifier_dir(out, mix, k, seed), top1)
  gaussian, none = config.augmentation_variants
  for seed in range(3):
    _sweep(claims.guidance_dir(out, seed), "guidance_weight",
           [(1.0, 10 + seed, 2.0 + seed / 10, 0.70 + seed / 100),
            (2.0, 6 + seed, 2.5 + seed / 10, 0.60 + seed / 100)])
    _sweep(claims.augmentation_dir(out, gaussian, seed), "aug_level",
           [(0.0, 9 + seed / 2, 2.0, 0.70 + seed / 100),
            (0.1, 5 + seed / 2, 2.0, 0.75 + seed / 100)])
    _sweep(claims.augmentation_dir(out, none, seed), "aug_level",
           [(0.0, 9 + seed, 2.0, 0.69 + seed / 100)])

  path = claims_report.write_report(config, out, {"generate": 65.0},
                                    notes=["a note"])
  text = open(path).read()
  assert "- a note" in text

  # Claim 3, by hand: t(0.975, 2) = 4.302653; sd 1 point -> half-width
  # 4.302653 / sqrt(3) = 2.484; sd 2 points -> 4.968.
  assert ("| 0 | 91.00 [88.52, 93.48] (3 runs) | - | - |") in text
  assert ("| 1 | 96.00 [93.52, 98.48] (3 runs) | +5.00 | **effect: better** "
          "(intervals separate) |") in text
  assert ("| 0 | 82.00 [77.03, 86.97] (3 runs) | - | - |") in text
  assert ("| 1 | 85.00 [80.03, 89.97] (3 runs) | +3.00 | the intervals "
          "overlap: no difference resolved |") in text

  # Claim 2: FID is best at guidance 2, CAS at guidance 1, and the CAS
  # difference between them is resolved.
  assert "| 1.0 | 11.00 [8.52, 13.48] (3 runs) |" in text
  assert "| 2.0 | 7.00 [4.52, 9.48] (3 runs) |" in text
  assert "best FID: guidance 2.0" in text
  assert "best CAS top-1 %: guidance 1.0" in text
  assert ("CAS at guidance 1.0 vs at the best-FID guidance 2.0: **effect: "
          "better** (intervals separate).") in text

  # Claim 1: Gaussian augmentation at s = 0.1 against none.
  assert ("| Gaussian augmentation | 0.1 | 5.50 [4.26, 6.74] (3 runs) |"
          in text)
  assert ("FID: Gaussian augmentation at s = 0.1 vs no augmentation: "
          "**effect: better** (intervals separate).") in text
  assert ("CAS top-1 %: Gaussian augmentation at s = 0.1 vs no "
          "augmentation: **effect: better** (intervals separate).") in text
  assert ("IS: Gaussian augmentation at s = 0 vs no augmentation: one run"
          not in text)

  for png in (claims_report.MIX_PNG, claim_sweeps.GUIDANCE_PNG,
              claim_sweeps.AUGMENTATION_PNG):
    assert f"]({png})" in text
    assert os.path.getsize(os.path.join(out, job.REPORT_DIR, png)) > 0
  assert "| generate | 1 min 05 s |" in text


def test_report_before_anything_ran(tmp_path):
  path = claims_report.write_report(_config(), str(tmp_path))
  text = open(path).read()
  assert text.count("Not run yet.") == 2
  assert "| 0 | - | - | - |" in text


def test_one_stage_compares_its_best_level_with_s_0(tmp_path):
  """The main job's headline: one stage, each metric's best s against s = 0
  of the same stage; hand-computed intervals (sd 1 -> half-width 2.484)."""
  directories = [
      os.path.join(str(tmp_path), f"seed_{seed}") for seed in range(3)
  ]
  for seed, directory in enumerate(directories):
    _sweep(directory, "aug_level", [(0.0, 10 + seed, 2.0, 0.70 + seed / 100),
                                    (0.1, 5 + seed, 2.0, 0.69 + seed / 100),
                                    (0.3, 8 + seed, 2.0, 0.60 + seed / 100)])
  text = claim_sweeps.augmentation_section(
      str(tmp_path),
      [claim_sweeps.SweptStage("the sr stage", tuple(directories))])
  assert "| the sr stage | 0.1 | 6.00 [3.52, 8.48] (3 runs) |" in text
  assert ("FID: the sr stage at s = 0.1 vs s = 0: **effect: better** "
          "(intervals separate).") in text
  assert "CAS top-1 %: the sr stage: best at s = 0." in text
  assert os.path.getsize(
      os.path.join(str(tmp_path), claim_sweeps.AUGMENTATION_PNG)) > 0
  # Without an s = 0 point there is nothing to compare with.
  no_zero = [
      os.path.join(str(tmp_path), "no_zero", f"seed_{seed}")
      for seed in range(3)
  ]
  for seed, directory in enumerate(no_zero):
    _sweep(directory, "aug_level", [(0.1, 5 + seed, 2.0, 0.69),
                                    (0.3, 8 + seed, 2.0, 0.60)])
  text = claim_sweeps.augmentation_section(
      str(tmp_path), [claim_sweeps.SweptStage("the sr stage", tuple(no_zero))])
  assert "| the sr stage | 0.3 |" in text
  assert "s = 0" not in text
