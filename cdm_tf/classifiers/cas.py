"""Classification Accuracy Score: train on generated images, test on real.

CAS (Ravuri & Vinyals 2019; Azizi et al. 2023, Sec. 5.2 and A.4) measures a
generative model by the real-validation accuracy of a ResNet-50 trained on
its samples only: the "ResNet-50 (CAS)" column of Table A.1
(gin/classifiers/resnet50_cas.gin: SGD with momentum, 90 epochs, batch 1024,
warmup to 0.4 over 5 epochs then /10 at epochs 30, 60 and 80), trained on a
single crop of each generated image. Generated images are resized to
256 x 256 and real ones to 256 on the short side, then centre cropped to
224 (scaled with the model's input side; ``classifier_preprocessing``), for
training and evaluation alike; there is no other augmentation.

``classification_accuracy_score`` runs that end to end through
``trainer.train_classifier`` and writes ``cas_report.json`` next to the
checkpoints: top-1 and top-5 on the real validation split, and what was
trained on. With ``data="real"`` it trains the same protocol on real images
instead: given as many per class as the synthetic set has (a subset,
tools/subset_data.py), that is the CAS's reference; Azizi et al. compare
69.24% CAS with 73.09% from as many real images (ratio 0.947).
``configured_cas_scorer`` binds it to the model and recipe of the parsed
gin configuration, for the binaries that score generated sets
(tools/sweep.py, tools/evaluate.py), and ``cas_values`` labels its result
like the other sample-quality metrics (``metrics.report``).
"""

import os

from absl import logging
import gin

from cdm_tf import files
from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import models
from cdm_tf.classifiers import recipes
from cdm_tf.classifiers import trainer
from cdm_tf.training import strategies

REPORT_FILE = "cas_report.json"
# Where the binaries that score a generated set train its CAS classifier
# (under their output directory, or a sweep point's).
CLASSIFIER_DIR = "cas_classifier"
# Why a binary stops when the CAS classifier's run was stopped (exit 1).
STOPPED_MESSAGE = "stopped during CAS training; run again to resume"
CAS_DECAY = "stepwise"


def classification_accuracy_score(
    model_dir, strategy, real_data_dir, synthetic_dir, recipe, model_factory,
    synthetic_multiplier=None, synthetic_split=input_pipeline.TRAIN_SPLIT,
    global_batch_size=None, compare_with=None,
    optimizer_factory=recipes.create_optimizer, print_fn=print,
    data=input_pipeline.DATA_SYNTHETIC):
  """Trains the CAS classifier on a synthetic set and reports its accuracy.

  Args:
    model_dir: the run's directory (resumable like any
      ``trainer.train_classifier`` run); the report goes to
      ``<model_dir>/cas_report.json``.
    strategy: a ``tf.distribute.Strategy``.
    real_data_dir: real data with a ``validation`` split (and ``train``
      when ``synthetic_multiplier`` is given).
    synthetic_dir: the generated set (shards and manifest).
    recipe: a ``recipes.ClassifierRecipe``, normally resnet50_cas.gin's.
    model_factory: callable returning the classifier (gin-configured
      ``models.create_classifier``).
    synthetic_multiplier: train on ``multiplier x`` the real class counts
      of the synthetic set (class-balanced); None uses all of it.
    synthetic_split: split name of the synthetic shards.
    global_batch_size: None is the recipe's 1024; smaller batches scale
      the learning rate linearly.
    compare_with: per-class CSV of a real-data model for the per-class
      plot (Fig. 5).
    optimizer_factory: see ``trainer.train_classifier``.
    print_fn: where progress lines go.
    data: "synthetic", or "real" for the reference: the same protocol
      trained on ``real_data_dir``'s train split (``synthetic_dir`` None).

  Returns:
    The report dict, or None if the run was stopped before the end.
  """
  if data not in (input_pipeline.DATA_SYNTHETIC, input_pipeline.DATA_REAL):
    raise ValueError(f"the CAS protocol trains on synthetic or real data "
                     f"only, not {data!r}")
  if recipe.decay != CAS_DECAY:
    logging.warning(
        "the CAS protocol uses the step-wise recipe of "
        "gin/classifiers/resnet50_cas.gin; this recipe decays "
        "%r", recipe.decay)
  training_set = input_pipeline.resolve_training_set(
      input_pipeline.TrainingData(data=data, real_data_dir=real_data_dir,
                                  synthetic_dir=synthetic_dir,
                                  synthetic_multiplier=synthetic_multiplier,
                                  synthetic_split=synthetic_split))
  outcome = trainer.train_classifier(
      model_dir, strategy, training_set, recipe, model_factory,
      optimizer_factory=optimizer_factory, global_batch_size=global_batch_size,
      single_crop=True, compare_with=compare_with, print_fn=print_fn)
  if outcome["stopped"]:
    return None
  result = outcome["eval"]
  report = _report(outcome, model_dir, training_set, recipe, data,
                   real_data_dir, synthetic_dir, synthetic_split,
                   synthetic_multiplier, global_batch_size)
  path = os.path.join(model_dir, REPORT_FILE)
  if strategies.is_chief(strategy):
    files.atomic_write_json(path, report)
  name = ("CAS" if data == input_pipeline.DATA_SYNTHETIC else
          "CAS protocol on real images:")
  print_fn(f"{name} top-1 {100 * result.top1:.2f}% top-5 "
           f"{100 * result.top5:.2f}% on {result.num_examples} real "
           f"validation images; wrote {path}")
  return report


def _report(outcome, model_dir, training_set, recipe, data, real_data_dir,
            synthetic_dir, synthetic_split, synthetic_multiplier,
            global_batch_size):
  """The ``cas_report.json`` contents of a finished CAS run."""
  result = outcome["eval"]
  eval_dir = os.path.join(model_dir, trainer.EVAL_DIR)
  return {
      "cas_top1": result.top1,
      "cas_top5": result.top5,
      "validation_examples": result.num_examples,
      "step": outcome["step"],
      "real_data_dir": real_data_dir,
      "training_data": data,
      "real_examples_per_epoch": training_set.real_size,
      "synthetic_dir": synthetic_dir,
      "synthetic_split": synthetic_split,
      "synthetic_multiplier": synthetic_multiplier,
      "synthetic_examples_per_epoch": training_set.synthetic_size,
      "synthetic_settings": training_set.synthetic_settings,
      "recipe_epochs": recipe.epochs,
      "global_batch_size": int(global_batch_size or recipe.batch_size),
      "per_class_csv": os.path.join(eval_dir, evaluation.PER_CLASS_CSV),
      "protocol": (f"trained on {data} images only, one crop each "
                   "(generated: resize to R x R; real: short side to R; "
                   "centre crop S; R = S * 256 / 224), evaluated on the "
                   "real validation split"),
  }


def configured_classifier():
  """The recipe, model factory and optimizer factory the parsed gin files
  bind (a gin/classifiers config).

  Raises:
    ValueError, TypeError: gin binds no recipe or model.
  """
  recipe = gin.get_configurable(recipes.ClassifierRecipe)()
  model_factory = gin.get_configurable(models.create_classifier)
  try:
    optimizer_factory = gin.get_configurable(recipes.create_optimizer)
  except ValueError:  # not mentioned by the config: the plain function
    optimizer_factory = recipes.create_optimizer
  return recipe, model_factory, optimizer_factory


def configured_cas_scorer(strategy, real_data_dir, print_fn=print,
                          trained_on="the generated images",
                          synthetic_split=input_pipeline.TRAIN_SPLIT):
  """The CAS of a generated set with the model and recipe gin binds.

  Args:
    strategy: a ``tf.distribute.Strategy``.
    real_data_dir: real data with a ``validation`` split.
    print_fn: where progress lines go.
    trained_on: what the description says the classifier was trained on.
    synthetic_split: split name of the generated shards.

  Returns:
    ``(score, description)``: ``score(synthetic_dir, model_dir)`` trains
    (or resumes) the classifier in ``model_dir`` and returns {"top1",
    "top5"}, or None when the run was stopped before the end;
    ``description`` names the classifier for the metric labels.

  Raises:
    ValueError: the parsed gin configuration is no gin/classifiers one
      (models.create_classifier, recipes.ClassifierRecipe).
  """
  try:
    recipe, model_factory, optimizer_factory = configured_classifier()
    network = gin.query_parameter("models.create_classifier.name")
  except (ValueError, TypeError) as e:
    raise ValueError("--cas needs a gin/classifiers config among --gin_file "
                     f"(models.create_classifier, recipes.ClassifierRecipe): "
                     f"{e}") from e

  def score(synthetic_dir, model_dir):
    result = classification_accuracy_score(model_dir, strategy, real_data_dir,
                                           synthetic_dir, recipe, model_factory,
                                           synthetic_split=synthetic_split,
                                           optimizer_factory=optimizer_factory,
                                           print_fn=print_fn)
    if result is None:
      return None
    return {"top1": result["cas_top1"], "top5": result["cas_top5"]}

  return score, f"{network} trained on {trained_on}, epochs={recipe.epochs:g}"
