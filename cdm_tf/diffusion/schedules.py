"""Forward-process noise schedules.

Every schedule is returned as float64 betas ``beta_1 .. beta_T`` (index 0 holds
``beta_1``), the convention of Ho et al. (2020) and Nichol & Dhariwal (2021).
"""

import math

import numpy as np

# Improved DDPM, Section 3.2: the offset s keeps beta_1 from being vanishingly
# small; betas are clipped at 0.999 to avoid a singularity at t = T.
COSINE_OFFSET = 0.008
MAX_BETA = 0.999

# DDPM's linear schedule for T = 1000, rescaled by 1000 / T for other T so that
# the process ends at roughly the same signal-to-noise ratio.
LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02

SCHEDULE_NAMES = ("linear", "cosine")


def cosine_alpha_bar(u):
  """Continuous cosine alpha-bar, u in [0, 1] the fraction of the process.

  Un-normalized: ``f(u) = cos^2((u + s) / (1 + s) * pi / 2)``; alpha-bar is
  ``f(u) / f(0)``.
  """
  return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2)**2


def betas_for_alpha_bar(num_timesteps, alpha_bar, max_beta=MAX_BETA):
  """Betas whose cumulative product follows ``alpha_bar(u)`` at u = t / T."""
  betas = []
  for i in range(num_timesteps):
    u1 = i / num_timesteps
    u2 = (i + 1) / num_timesteps
    betas.append(min(1.0 - alpha_bar(u2) / alpha_bar(u1), max_beta))
  return np.array(betas, dtype=np.float64)


def linear_beta_schedule(num_timesteps):
  scale = 1000.0 / num_timesteps
  betas = np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END,
                      num_timesteps, dtype=np.float64)
  if betas[-1] >= 1.0:
    raise ValueError(
        f"linear schedule with {num_timesteps} steps gives beta_T = "
        f"{betas[-1]:.3g} >= 1 (needs T > 20); respace a longer schedule "
        "(cdm_tf.diffusion.respace) to sample with fewer steps")
  return betas


def get_named_beta_schedule(schedule_name, num_timesteps):
  """Betas (float64, shape [num_timesteps]) of a named schedule."""
  if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
    raise ValueError(f"num_timesteps must be a positive int, got "
                     f"{num_timesteps!r}")
  if schedule_name == "linear":
    return linear_beta_schedule(int(num_timesteps))
  if schedule_name == "cosine":
    return betas_for_alpha_bar(int(num_timesteps), cosine_alpha_bar)
  raise ValueError(f"unknown beta schedule {schedule_name!r}; expected one of "
                   f"{SCHEDULE_NAMES}")
