"""Diffusion mathematics: schedules, the Gaussian process, samplers,
guidance, thresholding and conditioning augmentation."""

from cdm_tf.diffusion import conditioning_augmentation
from cdm_tf.diffusion import guidance
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import respace
from cdm_tf.diffusion import samplers
from cdm_tf.diffusion import schedules
from cdm_tf.diffusion import thresholding
from cdm_tf.diffusion.factory import create_diffusion
from cdm_tf.diffusion.gaussian_diffusion import GaussianDiffusion
