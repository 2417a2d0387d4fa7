"""ImageNet classifiers and their training recipes (Azizi et al. 2023).

Architectures of Table 3 (``models``, ``resnet_rs``,
``vision_transformers``, with ``stochastic_depth``) and the recipes of
Tables A.1 and A.2 (``recipes``), configured per table column by the gin
files in gin/classifiers/. Training on real, synthetic or real + synthetic
data (``input_pipeline``, ``trainer``), evaluation on real validation images
with per-class reports (``evaluation``) and the Classification Accuracy
Score (``cas``) are imported from their modules: they pull in the training
and data stacks.
"""

from cdm_tf.classifiers.models import CLASSIFIER_NAMES
from cdm_tf.classifiers.models import ImageClassifier
from cdm_tf.classifiers.models import create_classifier
from cdm_tf.classifiers.random_erasing import RandomErasing
from cdm_tf.classifiers.recipes import ClassifierLearningRate
from cdm_tf.classifiers.recipes import ClassifierRecipe
from cdm_tf.classifiers.recipes import L2RegularizedSGD
from cdm_tf.classifiers.recipes import TrainingAugmentation
from cdm_tf.classifiers.recipes import create_loss
from cdm_tf.classifiers.recipes import create_optimizer
from cdm_tf.classifiers.recipes import create_training_augmentation
from cdm_tf.classifiers.recipes import learning_rate_schedule
from cdm_tf.classifiers.recipes import scaled_learning_rate
from cdm_tf.classifiers.resnet_rs import BottleneckBlock
from cdm_tf.classifiers.resnet_rs import ResNetRS
from cdm_tf.classifiers.resnet_rs import SqueezeExcitation
from cdm_tf.classifiers.stochastic_depth import StochasticDepth
from cdm_tf.classifiers.vision_transformers import DeiTDropPathBackbone
from cdm_tf.classifiers.vision_transformers import ViTDropPathBackbone

__all__ = [
    "BottleneckBlock",
    "CLASSIFIER_NAMES",
    "ClassifierLearningRate",
    "ClassifierRecipe",
    "DeiTDropPathBackbone",
    "ImageClassifier",
    "L2RegularizedSGD",
    "RandomErasing",
    "ResNetRS",
    "SqueezeExcitation",
    "StochasticDepth",
    "TrainingAugmentation",
    "ViTDropPathBackbone",
    "create_classifier",
    "create_loss",
    "create_optimizer",
    "create_training_augmentation",
    "learning_rate_schedule",
    "scaled_learning_rate",
]
