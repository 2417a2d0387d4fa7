"""Diffusion U-Nets of Cascaded Diffusion Models (Ho et al., 2021)."""

from cdm_tf.models.embeddings import ScalarEmbedding
from cdm_tf.models.embeddings import sinusoidal_embedding
from cdm_tf.models.unet import UNet
from cdm_tf.models.unet_blocks import AttentionBlock
from cdm_tf.models.unet_blocks import Downsample
from cdm_tf.models.unet_blocks import ResidualBlock
from cdm_tf.models.unet_blocks import Upsample

__all__ = [
    "AttentionBlock",
    "Downsample",
    "ResidualBlock",
    "ScalarEmbedding",
    "UNet",
    "Upsample",
    "sinusoidal_embedding",
]
