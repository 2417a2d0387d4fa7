"""Cascade: CDM Algorithm 2 wiring (truncated and non-truncated), pixels that
do not depend on the batch, settings checks, bfloat16."""

import numpy as np
import pytest

from cdm_tf.data import diffusion_preprocessing
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import respace
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.models import export
from tests import tiny_cascade

LABELS = np.array([0, 3, 9, 3, 1, 7])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  return tiny_cascade.export_tiny_cascade(str(tmp_path_factory.mktemp("tc")))


def _seeds(n=None, base_seed=5):
  if n is None:
    n = len(LABELS)
  return per_example_noise.example_seeds(np.arange(n) + 100, base_seed).numpy()


def _stage_seeds(seeds, index):
  return per_example_noise.derive_seeds(seeds,
                                        per_example_noise.STREAM_CASCADE_STAGE,
                                        index)


def test_non_truncated_cascade_is_base_then_augmented_super_resolution(exports):
  base_dir, sr_dir = exports
  stages = [
      cascade_lib.Stage(base_dir, timestep_respacing="6", guidance_weight=1.5),
      cascade_lib.Stage(sr_dir, timestep_respacing="4", logvar_coeff=0.1,
                        aug_level=0.3)
  ]
  images = cascade_lib.Cascade(stages).sample(_seeds(), LABELS)
  assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8

  # The same by hand with the models' own sampling API.
  base, sr = export.load_model(base_dir), export.load_model(sr_dir)
  seeds = _seeds()
  z0 = base.sample(
      _stage_seeds(seeds, 0), labels=LABELS,
      diffusion=create_diffusion("cosine", 1000, "6",
                                 "learned_range"), guidance_weight=1.5)
  z0 = diffusion_preprocessing.to_float(diffusion_preprocessing.to_uint8(z0))
  x0 = sr.sample(_stage_seeds(seeds, 1), labels=LABELS, low_res=z0,
                 diffusion=create_diffusion("cosine", 1000, "4"),
                 logvar_coeff=0.1, aug_level=0.3)
  expected = diffusion_preprocessing.to_uint8(x0).numpy()
  np.testing.assert_allclose(images.astype(int), expected.astype(int), atol=1)
  assert (images == expected).mean() > 0.99


def test_truncated_cascade_hands_over_z_s(exports):
  base_dir, sr_dir = exports
  kept = sorted(respace.space_timesteps(1000, "10"))
  level = (kept[3] + 1) / 1000  # alpha-bar_s is a step of the base sampler
  stages = [
      cascade_lib.Stage(base_dir, timestep_respacing="10"),
      cascade_lib.Stage(sr_dir, timestep_respacing="4", aug_level=level,
                        truncated=True)
  ]
  cascade = cascade_lib.Cascade(stages)
  description = cascade.description()["stages"]
  assert description[0]["stops_at_index"] == 4
  # The base stops after index 4: 6 of its 10 steps run.
  assert cascade.network_evaluations_per_example() == 6 + 4
  images = cascade.sample(_seeds(), LABELS)

  base, sr = export.load_model(base_dir), export.load_model(sr_dir)
  seeds = _seeds()
  z_s = base.sample(
      _stage_seeds(seeds, 0), labels=LABELS,
      diffusion=create_diffusion("cosine", 1000, "10",
                                 "learned_range"), stop_at=4)
  x0 = sr.sample(_stage_seeds(seeds, 1), labels=LABELS, low_res=z_s,
                 diffusion=create_diffusion("cosine", 1000, "4"),
                 aug_level=level, truncated=True)
  expected = diffusion_preprocessing.to_uint8(x0).numpy()
  np.testing.assert_allclose(images.astype(int), expected.astype(int), atol=1)
  # Truncated and non-truncated hand over different inputs.
  non_truncated = cascade_lib.Cascade([
      stages[0],
      cascade_lib.Stage(sr_dir, timestep_respacing="4", aug_level=level)
  ]).sample(_seeds(), LABELS)
  assert np.abs(non_truncated.astype(int) - images.astype(int)).max() > 8


def test_pixels_do_not_depend_on_batch_size_or_position(exports):
  base_dir, sr_dir = exports
  cascade = cascade_lib.Cascade([
      cascade_lib.Stage(base_dir, timestep_respacing="5", guidance_weight=2.0),
      cascade_lib.Stage(sr_dir, sampler="ddim", timestep_respacing="3",
                        aug_level=0.2)
  ])
  seeds = _seeds()
  whole = cascade.sample(seeds, LABELS)
  halves = np.concatenate([
      cascade.sample(seeds[:3], LABELS[:3]),
      cascade.sample(seeds[3:], LABELS[3:])
  ])
  np.testing.assert_array_equal(whole, halves)
  order = np.array([5, 2, 4, 0, 1, 3])
  np.testing.assert_array_equal(cascade.sample(seeds[order], LABELS[order]),
                                whole[order])
  # Another base seed gives other images.
  other = cascade.sample(_seeds(base_seed=6), LABELS)
  assert np.abs(other.astype(int) - whole.astype(int)).mean() > 5


def test_starting_at_a_later_stage_gives_the_full_cascades_pixels(exports):
  base_dir, sr_dir = exports
  base_stage = cascade_lib.Stage(base_dir, timestep_respacing="5",
                                 guidance_weight=2.0)
  cascade = cascade_lib.Cascade([
      base_stage,
      cascade_lib.Stage(sr_dir, timestep_respacing="3", aug_level=0.2)
  ])
  seeds = _seeds()
  whole = cascade.sample(seeds, LABELS)
  low_res = cascade_lib.Cascade([base_stage]).sample(seeds, LABELS)
  np.testing.assert_array_equal(
      cascade.sample(seeds, LABELS, first_stage=1, low_res=low_res), whole)
  with pytest.raises(ValueError, match="give both or neither"):
    cascade.sample(seeds, LABELS, first_stage=1)
  with pytest.raises(ValueError, match=r"low_res must be \[6, 8, 8, 3\]"):
    cascade.sample(seeds, LABELS, first_stage=1, low_res=whole)
  with pytest.raises(ValueError, match="not a stage index"):
    cascade.sample(seeds, LABELS, first_stage=2, low_res=low_res)


def test_bfloat16_cascade_samples_close_to_float32(exports):
  stages = [
      cascade_lib.Stage(exports[0], timestep_respacing="4"),
      cascade_lib.Stage(exports[1], timestep_respacing="3")
  ]
  full = cascade_lib.Cascade(stages).sample(_seeds(), LABELS)
  half = cascade_lib.Cascade(stages, dtype_policy="mixed_bfloat16")
  assert half._samplers[0].model.unet.compute_dtype == "bfloat16"  # pylint: disable=protected-access
  low = half.sample(_seeds(), LABELS)
  diff = np.abs(low.astype(float) - full.astype(float))
  assert 0 < diff.mean() < 8, diff.mean()


def test_stage_settings_are_checked(exports):
  base_dir, sr_dir = exports
  with pytest.raises(ValueError, match="DDPM setting"):
    cascade_lib.Stage(base_dir, sampler="ddim", logvar_coeff=0.1)
  with pytest.raises(ValueError, match="aug_level > 0"):
    cascade_lib.Stage(sr_dir, truncated=True)
  with pytest.raises(ValueError, match="aug_level must be in"):
    cascade_lib.Stage(sr_dir, aug_level=1.5)
  with pytest.raises(ValueError, match="unknown sampler"):
    cascade_lib.Stage(base_dir, sampler="euler")
  with pytest.raises(ValueError, match="starts with a base model"):
    cascade_lib.Cascade([cascade_lib.Stage(sr_dir)])
  with pytest.raises(ValueError, match="is not a super-resolution model"):
    cascade_lib.Cascade(
        [cascade_lib.Stage(base_dir),
         cascade_lib.Stage(base_dir)])
  with pytest.raises(ValueError, match="learned its variances"):
    cascade_lib.Cascade([cascade_lib.Stage(base_dir, logvar_coeff=0.0)])
  with pytest.raises(ValueError, match="continuous-noise model"):
    cascade_lib.Cascade(
        [cascade_lib.Stage(base_dir, schedule="linear", num_timesteps=100)])
  with pytest.raises(ValueError, match="not a step of the low-resolution"):
    cascade_lib.Cascade([
        cascade_lib.Stage(base_dir, timestep_respacing="10"),
        cascade_lib.Stage(sr_dir, aug_level=0.1, truncated=True)
    ])
  cascade = cascade_lib.Cascade(
      [cascade_lib.Stage(base_dir, timestep_respacing="2")])
  with pytest.raises(ValueError, match="labels must be in"):
    cascade.sample(_seeds(2), [0, 10])
  with pytest.raises(FileNotFoundError, match="not an exported model"):
    cascade_lib.Cascade([cascade_lib.Stage(base_dir + "-missing")])


def test_solver_stages_are_the_models_own_solver_sampling(exports):
  # A guided DPM-Solver++(2M) base handing z_s to a truncated SR stage
  # sampled with the stochastic solver: the solver stops at the SR model's
  # level s, which need not be a training step.
  base_dir, sr_dir = exports
  level = 0.2537
  stages = [
      cascade_lib.Stage(base_dir, sampler="dpmpp_2m", steps=5,
                        guidance_weight=2.0),
      cascade_lib.Stage(sr_dir, sampler="dpmpp_2m_sde", steps=3,
                        timestep_spacing="karras", aug_level=level,
                        truncated=True)
  ]
  cascade = cascade_lib.Cascade(stages, steps_per_call=2)
  assert cascade.sampler_names() == ["dpmpp_2m-5", "dpmpp_2m_sde-3"]
  assert cascade.network_evaluations_per_example() == 5 * 2 + 3
  assert cascade_lib.estimated_evaluations_per_image(stages) == 13
  description = cascade.description()["stages"]
  sr = export.load_model(sr_dir)
  s_alpha_bar = sr.gaussian_augmentation.truncation_alpha_bar(level)
  assert description[0]["stops_at_alpha_bar"] == s_alpha_bar
  assert description[1]["steps"] == 3
  images = cascade.sample(_seeds(), LABELS)

  base = export.load_model(base_dir)
  seeds = _seeds()
  z_s = base.sample(_stage_seeds(seeds, 0), labels=LABELS, sampler="dpmpp_2m",
                    steps=5, guidance_weight=2.0, stop_alpha_bar=s_alpha_bar)
  x0 = sr.sample(_stage_seeds(seeds, 1), labels=LABELS, low_res=z_s,
                 sampler="dpmpp_2m_sde", steps=3, timestep_spacing="karras",
                 aug_level=level, truncated=True)
  expected = diffusion_preprocessing.to_uint8(x0).numpy()
  np.testing.assert_allclose(images.astype(int), expected.astype(int), atol=1)
  assert (images == expected).mean() > 0.99
  # Steps per compiled call change nothing.
  for other in (cascade_lib.Cascade(stages, steps_per_call=None),
                cascade_lib.Cascade(stages, steps_per_call=1)):
    np.testing.assert_array_equal(other.sample(_seeds(), LABELS), images)


def test_xla_compiled_chains_sample_close_to_the_graph_ones(exports):
  stages = [
      cascade_lib.Stage(exports[0], sampler="dpmpp_2m", steps=4),
      cascade_lib.Stage(exports[1], timestep_respacing="3")
  ]
  graph = cascade_lib.Cascade(stages).sample(_seeds(), LABELS)
  xla = cascade_lib.Cascade(stages, jit_compile=True,
                            steps_per_call=None).sample(_seeds(), LABELS)
  diff = np.abs(xla.astype(float) - graph.astype(float))
  assert diff.mean() < 2, diff.mean()


def test_progress_is_reported_per_compiled_call(exports):
  base_dir, _ = exports
  cascade = cascade_lib.Cascade(
      [cascade_lib.Stage(base_dir, sampler="dpmpp_3m", steps=7)],
      steps_per_call=3)
  seen = []
  cascade.sample(_seeds(2), LABELS[:2],
                 progress=lambda *args: seen.append(args))
  assert seen == [(0, 3, 7), (0, 6, 7), (0, 7, 7)]


def test_solver_stage_settings_are_checked(exports):
  base_dir, _ = exports
  with pytest.raises(ValueError, match="needs steps >= 1"):
    cascade_lib.Stage(base_dir, sampler="dpmpp_2m")
  with pytest.raises(ValueError, match="timestep_respacing is a ddpm"):
    cascade_lib.Stage(base_dir, sampler="dpmpp_2m", steps=10,
                      timestep_respacing="10")
  with pytest.raises(ValueError, match="logvar_coeff is a ddpm"):
    cascade_lib.Stage(base_dir, sampler="dpmpp_3m", steps=10, logvar_coeff=0.1)
  with pytest.raises(ValueError, match="unknown timestep_spacing"):
    cascade_lib.Stage(base_dir, sampler="dpmpp_2m", steps=10,
                      timestep_spacing="cubic")
  with pytest.raises(ValueError, match="are solver settings"):
    cascade_lib.Stage(base_dir, steps=10)
  # ddpm / ddim settings records are what they were before solvers.
  assert "steps" not in cascade_lib.Stage(base_dir).settings()
  assert cascade_lib.Stage(base_dir, sampler="dpmpp_2m",
                           steps=10).settings()["steps"] == 10
