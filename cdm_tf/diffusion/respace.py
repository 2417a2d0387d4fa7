"""Sampling with fewer steps than a model was trained with.

A respaced process keeps a subset S of the original steps and defines new
betas from the retained alpha-bars: beta'_k = 1 - alpha_bar_{S_k} /
alpha_bar_{S_{k-1}} (Improved DDPM, Sec. 4), so that q(x_t | x_0) is unchanged
at every kept step. The network still sees the original step (timestep
models, through ``timestep_map``) or the same alpha-bar (continuous models).
"""

import numpy as np

from cdm_tf.diffusion.gaussian_diffusion import GaussianDiffusion


def _even_section(size, count):
  """``count`` indices spread over range(size), first and last included."""
  if count > size:
    raise ValueError(f"cannot keep {count} steps of a section of {size}")
  if count == 1:
    return [0]
  stride = (size - 1) / (count - 1)
  return [int(round(k * stride)) for k in range(count)]


def space_timesteps(num_timesteps, section_counts):
  """The set of original step indices to keep.

  Args:
    num_timesteps: steps of the original process.
    section_counts: an int or "N" (N evenly spread steps); "a,b,c" or a list
      (split the process into equal sections and keep a, b, c steps of each,
      for schedules finer at one end); or "ddimN" (DDIM's striding: every
      k-th step from 0, with k chosen so exactly N steps remain).
  """
  if isinstance(section_counts, str):
    text = section_counts.strip()
    if text.startswith("ddim"):
      desired = int(text[len("ddim"):])
      for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == desired:
          return set(range(0, num_timesteps, stride))
      raise ValueError(f"no integer stride gives exactly {desired} of "
                       f"{num_timesteps} steps")
    try:
      section_counts = [int(c) for c in text.split(",")]
    except ValueError:
      raise ValueError(f"bad timestep respacing {section_counts!r}; expected "
                       "'N', 'a,b,c' or 'ddimN'") from None
  elif isinstance(section_counts, (int, np.integer)):
    section_counts = [int(section_counts)]
  if not section_counts or min(section_counts) < 1:
    raise ValueError(f"bad timestep respacing {section_counts!r}")

  base, extra = divmod(num_timesteps, len(section_counts))
  kept, start = set(), 0
  for i, count in enumerate(section_counts):
    size = base + (1 if i < extra else 0)
    kept.update(start + k for k in _even_section(size, count))
    start += size
  return kept


class SpacedDiffusion(GaussianDiffusion):
  """A ``GaussianDiffusion`` over a subset of another process's steps."""

  def __init__(self, use_timesteps, betas, **kwargs):
    betas = np.asarray(betas, dtype=np.float64)
    kept = sorted(int(i) for i in set(use_timesteps))
    if not kept or kept[0] < 0 or kept[-1] >= len(betas):
      raise ValueError(f"use_timesteps must be a non-empty subset of "
                       f"range({len(betas)})")
    log_alphas_cumprod = np.cumsum(np.log1p(-betas))
    retained = log_alphas_cumprod[kept]
    # 1 - alpha_bar_k / alpha_bar_{k-1}, computed in log space.
    new_betas = -np.expm1(np.diff(np.append(0.0, retained)))
    super().__init__(new_betas, timestep_map=kept,
                     original_num_timesteps=len(betas), **kwargs)
