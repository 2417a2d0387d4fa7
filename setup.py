"""Installs cdm_tf and its dependency stack (see README.md)."""

import setuptools

setuptools.setup(
    name="cdm_tf",
    version="0.1.0",
    description=("Cascaded Diffusion Models and synthetic ImageNet "
                 "classification in TensorFlow / Keras"),
    packages=setuptools.find_packages(include=["cdm_tf", "cdm_tf.*"]),
    python_requires=">=3.11",
    install_requires=[
        # tensorflow-text needs the `tensorflow` package (not tensorflow-cpu).
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "keras-hub==0.32.*",
        "tensorflow-text==2.21.*",
        "tensorflow-datasets==4.9.*",
        "gin-config==0.5.0",
        "tensorboard>=2.20",
        "absl-py>=2.1",
        "numpy>=1.26",
        "scipy>=1.11",
        # Report plots (per-class accuracy, sweeps).
        "matplotlib>=3.8",
        # Reads the MiniLM text encoder's weights without torch.
        "safetensors>=0.4",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            # Writes the CMYK and PNG-as-JPEG test images.
            "pillow>=10",
            # Trains the tiny SentencePiece model of the T5 encoder tests.
            "sentencepiece>=0.2",
            # `make lint` / `make format` (.style.yapf, ruff.toml).
            "yapf==0.43.0",
            "ruff==0.16.9",
        ],
    },
)
