"""One call that builds the process a model trains or samples with.

``create_diffusion`` is a gin target.
"""

from cdm_tf.diffusion import respace
from cdm_tf.diffusion import schedules
from cdm_tf.diffusion.gaussian_diffusion import GaussianDiffusion


def create_diffusion(schedule="cosine", num_timesteps=1000,
                     timestep_respacing=None, model_var_type="fixed_small",
                     loss_type="simple", noise_conditioning="timestep"):
  """A ``GaussianDiffusion``, respaced if ``timestep_respacing`` is given.

  Timestep models sample their training process or a respacing of it
  (``timestep_respacing="ddim32"``, ``"250"``, ...). Continuous-noise models
  may instead be given any inference schedule directly (CDM's 2000-step
  training and 100-step inference linear schedules).
  """
  betas = schedules.get_named_beta_schedule(schedule, num_timesteps)
  kwargs = dict(model_var_type=model_var_type, loss_type=loss_type,
                noise_conditioning=noise_conditioning)
  if timestep_respacing in (None, "", num_timesteps, str(num_timesteps)):
    return GaussianDiffusion(betas, **kwargs)
  kept = respace.space_timesteps(num_timesteps, timestep_respacing)
  return respace.SpacedDiffusion(kept, betas=betas, **kwargs)
