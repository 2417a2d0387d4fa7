"""cdm_tf: Cascaded Diffusion Models and synthetic ImageNet in TensorFlow."""

__version__ = "0.1.0"
