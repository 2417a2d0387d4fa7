"""The generation gin files hold the papers' sampler settings."""

import glob
import os

import gin
import pytest

from cdm_tf import configuration
from cdm_tf.generation import cascade
from cdm_tf.generation import synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(ROOT, "gin", "generation")


def _stages(name):
  gin.clear_config()
  try:
    configuration.parse_gin([os.path.join(GIN_DIR, name)], [])
    stages = cascade.configured_stages()
    settings = synthetic_dataset.GenerationSettings()
  finally:
    gin.clear_config()
  return stages, settings


def _summary(stages):
  return [(s.sampler, s.timestep_respacing, s.guidance_weight, s.logvar_coeff,
           s.aug_level, s.truncated) for s in stages]


def test_every_generation_file_parses():
  names = sorted(
      os.path.basename(p) for p in glob.glob(os.path.join(GIN_DIR, "*.gin")))
  assert names == [
      "azizi_imagenet_1024.gin", "azizi_imagenet_1024_fast.gin",
      "azizi_imagenet_1024_high_guidance.gin", "cdm_imagenet_256.gin",
      "cdm_imagenet_256_fast.gin", "fashion_mnist_16_to_32.gin"
  ]
  for name in names:
    stages, settings = _stages(name)
    assert len(stages) >= 2 and settings.batch_size > 0


def test_azizi_chosen_sampler():
  # Sec. 4.2: base guidance 1.25, DDPM, logvar 0.0, 1000 steps; 64->256
  # guidance 1.0, logvar 0.1, 1000 steps; 1024: DDIM 32 steps; no noise
  # conditioning augmentation at sampling.
  stages, settings = _stages("azizi_imagenet_1024.gin")
  assert _summary(stages) == [("ddpm", "1000", 1.25, 0.0, 0.0, False),
                              ("ddpm", "1000", 1.0, 0.1, 0.0, False),
                              ("ddim", "ddim32", 1.0, None, 0.0, False)]
  assert all(s.clip_denoised and s.dynamic_threshold_percentile is None
             for s in stages)
  assert settings.image_format == "jpeg"


def test_azizi_high_guidance_sampler():
  # Appendix A.2: vanilla Imagen guidance 10, 20, 8.
  stages, _ = _stages("azizi_imagenet_1024_high_guidance.gin")
  assert [s.guidance_weight for s in stages] == [10.0, 20.0, 8.0]
  assert [s.dynamic_threshold_percentile for s in stages] == [99.5] * 3
  assert [s.sampler for s in stages] == ["ddpm", "ddpm", "ddim"]


def test_cdm_sampler():
  # 4000-step base and 32->64 (training process, no respacing), 32->64 with
  # non-truncated augmentation s = 1251 of 4000; 64->256 continuous-noise
  # model sampled with a 100-step linear schedule.
  stages, _ = _stages("cdm_imagenet_256.gin")
  assert [s.timestep_respacing for s in stages] == [None] * 3
  assert stages[1].aug_level == pytest.approx(1251 / 4000)
  assert not stages[1].truncated
  assert (stages[2].schedule, stages[2].num_timesteps) == ("linear", 100)
  assert [s.guidance_weight for s in stages] == [1.0] * 3


def test_fashion_mnist_sampler():
  # The cheapest setting benchmarks/sampler_quality.py found within 5% of
  # 250-step DDPM's FID at each stage: 2M 10 guided base steps, stochastic
  # 2M 15 on the 16->32 stage; 35 evaluations per image. The 16->32 level
  # s = 0.05 is inside its training range, [0, 0.15].
  stages, _ = _stages("fashion_mnist_16_to_32.gin")
  assert [(s.sampler, s.steps, s.guidance_weight, s.aug_level, s.truncated)
          for s in stages] == [("dpmpp_2m", 10, 1.25, 0.0, False),
                               ("dpmpp_2m_sde", 15, 1.0, 0.05, False)]
  assert cascade.estimated_evaluations_per_image(stages) == 35


@pytest.mark.parametrize(
    "paper,fast,steps",
    [("azizi_imagenet_1024.gin", "azizi_imagenet_1024_fast.gin", [25, 20, 15]),
     ("cdm_imagenet_256.gin", "cdm_imagenet_256_fast.gin", [25, 20, 15])])
def test_fast_variants_swap_only_the_sampler(paper, fast, steps):
  paper_stages, paper_settings = _stages(paper)
  fast_stages, fast_settings = _stages(fast)
  assert [(s.sampler, s.steps) for s in fast_stages
         ] == [("dpmpp_2m", n) for n in steps]
  for before, after in zip(paper_stages, fast_stages):
    assert (after.model_dir, after.guidance_weight, after.aug_level,
            after.truncated, after.clip_denoised,
            after.dynamic_threshold_percentile) == (
                before.model_dir, before.guidance_weight, before.aug_level,
                before.truncated, before.clip_denoised,
                before.dynamic_threshold_percentile)
    assert after.timestep_respacing is None and after.logvar_coeff is None
  assert fast_settings == paper_settings
