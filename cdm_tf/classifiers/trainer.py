"""Training an ImageNet classifier, under any tf.distribute strategy.

The steps run in the training loop the diffusion trainer runs too
(``cdm_tf.training.loop``, which says why it is not ``Model.fit``): it
checkpoints the weights (including batch-norm statistics), the optimizer
and the number of steps done every ``checkpoint_every`` steps and on
SIGTERM, resumes from the latest checkpoint after a kill, writes
TensorBoard scalars (loss, learning rate, train and validation top-1 /
top-5, images/s), prints progress lines, and stops on a NaN / Inf loss, or
weights found non-finite before a save, without saving the bad state.

One step: each replica sums the per-example softmax cross-entropy (the
recipe's label smoothing) of its share of the global batch and divides by
the global batch size, so the Keras optimizer's all-reduce SUM of the
gradients gives the gradient of the global mean. (Keras' own "mean"
reduction is not used: under tf.distribute it also divides by the number of
replicas.) Under ``mixed_float16`` the loss is scaled
(``keras.optimizers.LossScaleOptimizer``); ``mixed_bfloat16`` needs no
scaling. The step count is its own checkpointed variable: a loss-scaled
optimizer does not count the steps it skips.

The length of a run comes from the recipe: ``epochs`` over the training
set's epoch (real, synthetic or both; ``input_pipeline``), at the recipe's
batch or a smaller global batch with the learning rate scaled linearly.
At the end the model is evaluated on the real validation split
(``evaluation``): eval/eval.json, the per-class CSV and PNG. With a
``data_resolution`` r (gin/classifiers/resnet50_64x64.gin) the real images,
training and validation, are first made r x r as the cascade's training
data is, so a model trained with r x r samples is tested like with like.
The trained model is then saved as a Keras file, ``model.keras`` (loadable
with ``keras.models.load_model`` without this code's factories or gin: what
the sample-quality metrics load as their feature network).

The data iterator is not checkpointed: its shuffle buffers of encoded
images would go into every checkpoint (about 1 GB for ImageNet). A resumed
run starts a new shuffled pass instead, seeded by the step it resumes at,
so it does not replay the examples the killed run began with.
"""

import dataclasses
import functools
import os
import shutil
import tempfile
import time

import gin
import keras
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import recipes
from cdm_tf.training import loop
from cdm_tf.training import run_settings
from cdm_tf.training import strategies

EVAL_DIR = "eval"
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
# The evaluation interval, as the loop names it when it refuses it.
_EVAL_FLAG = "trainer.train_classifier.eval_every_epochs (in steps)"
_NON_FINITE_ADVICE = ("Lower the learning rate (or the global batch), "
                      "lengthen the warmup, or check the data.")


def choose_training_data(data, cas_protocol, real_data_dir, synthetic_dir,
                         synthetic_multiplier, synthetic_split):
  """The ``input_pipeline.TrainingData`` a run asks for, checked.

  Args:
    data: one of ``input_pipeline.DATA_CHOICES``; None: synthetic for the
      CAS protocol, else real.
    cas_protocol: the CAS protocol, which trains on synthetic data (or, as
      its reference, real data) only.
    real_data_dir, synthetic_dir, synthetic_multiplier, synthetic_split:
      as ``input_pipeline.TrainingData``.

  Raises:
    ConfigError: a combination that cannot train.
  """
  data = data or (input_pipeline.DATA_SYNTHETIC
                  if cas_protocol else input_pipeline.DATA_REAL)
  if cas_protocol and data == input_pipeline.DATA_REAL_AND_SYNTHETIC:
    raise configuration.ConfigError(
        f"--cas trains on synthetic data (or, as its reference, on real "
        f"data) only, not --data={data}")
  training_data = input_pipeline.TrainingData(
      data=data, real_data_dir=real_data_dir, synthetic_dir=synthetic_dir,
      synthetic_multiplier=synthetic_multiplier,
      synthetic_split=synthetic_split)
  training_data.validate()
  return training_data


def check_compare_with(path):
  """Refuses a per-class CSV to compare with that cannot be read."""
  try:
    evaluation.read_per_class_csv(path)
  except (ValueError, OSError, tf.errors.OpError) as e:
    raise configuration.ConfigError(f"--compare_with {path}: {e}") from e


def synchronize_batch_norm(model):
  """Makes every BatchNormalization layer use global-batch statistics.

  Keras' batch norm normalises each replica's batch by its own statistics;
  with ``synchronized`` the mean and variance are all-reduced over the
  replicas, so a distributed step equals a one-device step on the global
  batch (at the cost of one all-reduce per layer). The flag is read at call
  time, so it can be set on a built model (keras-hub's backbones do not
  expose it).

  Returns:
    The number of layers changed.
  """
  changed = 0
  # Keras has no public recursive layer walk; _flatten_layers is what
  # Model.layers itself uses.
  layers = model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
  for layer in layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True
      changed += 1
  return changed


def make_replica_step(model, optimizer, loss_fn, global_batch_size,
                      num_classes):
  """One optimizer step on this replica's share of the global batch.

  Args:
    model: the classifier (float32 logits).
    optimizer: its optimizer, a ``LossScaleOptimizer`` under float16.
    loss_fn: a Keras loss of (one-hot labels, logits) returning
      per-example losses (reduction "none").
    global_batch_size: examples per step over all replicas.
    num_classes: label depth, for the training top-1 / top-5 counts.

  Returns:
    A function (images, one-hot labels) -> dict of "loss" (this replica's
    share of the global mean: SUM-reduce it), "top1" and "top5" hits and
    "examples", for ``strategy.run``.
  """
  loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

  def replica_step(images, labels):
    local_batch = tf.cast(tf.shape(labels)[0], tf.float32)
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      # This replica's share of the global mean, so the gradients the
      # optimizer sums over replicas are the global mean's.
      loss = tf.reduce_sum(loss_fn(labels, logits)) / global_batch_size
      scaled = optimizer.scale_loss(loss) if loss_scaling else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    counts = evaluation.accuracy_counts(
        logits, tf.argmax(labels, axis=-1, output_type=tf.int32), num_classes)
    return {
        "loss": loss, "top1": tf.reduce_sum(counts["top1"]),
        "top5": tf.reduce_sum(counts["top5"]), "examples": local_batch
    }

  return replica_step


@gin.configurable(denylist=[
    "model_dir", "strategy", "training_set", "recipe", "model_factory",
    "optimizer_factory", "global_batch_size", "single_crop", "compare_with",
    "print_fn"
])
def train_classifier(model_dir, strategy, training_set, recipe, model_factory,
                     optimizer_factory=recipes.create_optimizer,
                     global_batch_size=None, single_crop=False,
                     compare_with=None, data_resolution=None, num_steps=None,
                     checkpoint_every=1000, keep_checkpoints=3, log_every=100,
                     eval_every_epochs=0.0, eval_batch_size=None,
                     synchronized_batch_norm=False, seed=0,
                     steps_per_execution=1, print_fn=print):
  """Trains (or resumes) a classifier, then evaluates it on real data.

  Args:
    model_dir: checkpoints/, tensorboard/, eval/ and run.json go here.
    strategy: a ``tf.distribute.Strategy``.
    training_set: an ``input_pipeline.TrainingSet``.
    recipe: a ``recipes.ClassifierRecipe``.
    model_factory: callable returning a built ``ImageClassifier`` (called in
      the strategy's scope), e.g. the gin-configured
      ``models.create_classifier``.
    optimizer_factory: callable(recipe, steps_per_epoch,
      global_batch_size=) returning the recipe's optimizer.
    global_batch_size: examples per step over all replicas; None is the
      recipe's batch. The learning rate scales linearly with it.
    single_crop: CAS training crop (``input_pipeline.train_image``).
    compare_with: per-class CSV of a reference (real-data) model for the
      per-class plot.
    data_resolution: if set, every real image (training and validation) is
      first made this size exactly as the cascade's training data of that
      resolution (``input_pipeline.real_at_resolution``), then cropped to
      the model's input as usual; synthetic images must already be this
      size (``input_pipeline.check_data_resolution``). None: images as
      stored.
    num_steps: total steps; None is the recipe's epochs. A resumed run
      continues to this.
    checkpoint_every, keep_checkpoints, log_every: in steps.
    eval_every_epochs: also evaluate every this many epochs (0: at the end).
    eval_batch_size: global evaluation batch; None is the training batch.
    synchronized_batch_norm: batch-norm statistics over the global batch
      (``synchronize_batch_norm``) instead of each replica's.
    seed: seed of the initial weights, data order and augmentation.
    steps_per_execution: optimizer steps per compiled call (``loop``); the
      log, checkpoint and evaluation intervals must be multiples of it.
    print_fn: where progress lines go.

  Returns:
    dict: "step", the last logged training metrics, "eval" (the final
    ``EvalResult``, or None when stopped early) and "stopped". A completed
    run has written ``<model_dir>/model.keras`` (``MODEL_FILE``).

  Raises:
    ConfigError: inconsistent model, data, batch or intervals.
    loop.NonFiniteLossError: the loss or the weights became NaN or Inf.
  """
  input_pipeline.check_data_resolution(training_set, data_resolution)
  run = _Run.plan(strategy, training_set, recipe, global_batch_size,
                  eval_batch_size, num_steps, eval_every_epochs)
  run.check_intervals(steps_per_execution, log_every, checkpoint_every)
  loss_scaling = loop.seed_and_loss_scaling(seed)
  _check_reference(compare_with, training_set.num_classes)
  model, optimizer = _build(strategy, model_factory, optimizer_factory, recipe,
                            run, training_set.num_classes, loss_scaling,
                            synchronized_batch_norm)
  checkpoints, step = _restore(model, optimizer, model_dir, strategy,
                               checkpoint_every, keep_checkpoints, print_fn)
  _describe_run(model_dir, strategy, model, training_set, recipe, run,
                single_crop, data_resolution, print_fn)
  iterator = iter(
      _training_data(strategy, model, training_set, recipe, run, seed + step,
                     single_crop, data_resolution))
  evaluator = _evaluator(model, strategy, training_set, run, data_resolution)
  results = []  # the final evaluation, when the run completes
  outcome = _training_loop(
      model, optimizer, recipe, run, training_set.num_classes, checkpoints,
      evaluator, log_every, steps_per_execution, print_fn).run(
          iterator, strategy, loop.summary_writer(model_dir, strategy), step,
          print_fn, digest_variables=model.weights,
          at_end=lambda at: results.append(_evaluate(evaluator, at, print_fn)))
  return _finish(outcome, results, model_dir, strategy, model, training_set,
                 compare_with, step, print_fn)


def _check_reference(compare_with, num_classes):
  if not compare_with:
    return
  try:
    evaluation.read_per_class_csv(compare_with, num_classes)
  except (ValueError, OSError, tf.errors.OpError) as e:
    raise configuration.ConfigError(f"compare_with: {e}") from e


def _restore(model, optimizer, model_dir, strategy, every, keep, print_fn):
  """The run's ``loop.Checkpoints`` (settings checked and recorded), its
  latest checkpoint restored; returns them and the step they are at."""
  step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  checkpoints = loop.Checkpoints(
      tf.train.Checkpoint(model_weights=list(model.weights),
                          optimizer=optimizer,
                          step=step_counter), model_dir, strategy,
      run_settings.describe({"architecture": model.name}, optimizer,
                            model.weights), every=every, keep=keep,
      weights=model.weights, advice=_NON_FINITE_ADVICE,
      before_save=step_counter.assign)
  resumed = checkpoints.restore()
  if resumed:
    print_fn(f"resumed from {resumed} at step {int(step_counter.numpy())}")
  return checkpoints, int(step_counter.numpy())


def _training_loop(model, optimizer, recipe, run, num_classes, checkpoints,
                   evaluator, log_every, steps_per_execution, print_fn):
  """The loop of the run's steps, evaluating every ``run.eval_every_steps``
  (not counted in the throughput)."""
  return loop.TrainingLoop(
      step_fn=_distributed_step(
          run.strategy,
          make_replica_step(model, optimizer,
                            recipes.create_loss(recipe, reduction="none"),
                            run.global_batch_size, num_classes)),
      checkpoints=checkpoints, num_steps=run.num_steps, log_every=log_every,
      log_flag="trainer.train_classifier.log_every",
      checkpoint_flag="trainer.train_classifier.checkpoint_every",
      report=functools.partial(_report, optimizer, run, print_fn), hooks=[
          loop.Periodic(_EVAL_FLAG, run.eval_every_steps,
                        lambda at: _evaluate(evaluator, at, print_fn),
                        at_last_step=False, timed=False)
      ], steps_per_execution=steps_per_execution)


@dataclasses.dataclass(frozen=True)
class _Run:
  """The strategy, batch sizes, length and learning rate of a run."""
  strategy: tf.distribute.Strategy
  global_batch_size: int
  eval_batch_size: int
  replicas: int
  steps_per_epoch: float
  num_steps: int
  learning_rate: float
  eval_every_steps: int

  @classmethod
  def plan(cls, strategy, training_set, recipe, global_batch_size,
           eval_batch_size, num_steps, eval_every_epochs):
    """Raises ConfigError for batches the replicas cannot split."""
    replicas = strategy.num_replicas_in_sync
    global_batch_size = int(global_batch_size or recipe.batch_size)
    if global_batch_size <= 0 or global_batch_size % replicas:
      raise configuration.ConfigError(
          f"the global batch {global_batch_size} must be a positive multiple "
          f"of the {replicas} replicas")
    eval_batch_size = int(eval_batch_size or global_batch_size)
    if eval_batch_size % replicas:
      raise configuration.ConfigError(
          f"the evaluation batch {eval_batch_size} must be a multiple of the "
          f"{replicas} replicas")
    steps_per_epoch = input_pipeline.steps_per_epoch(training_set,
                                                     global_batch_size)
    if num_steps is None:
      num_steps = input_pipeline.total_steps(training_set, global_batch_size,
                                             recipe.epochs)
    return cls(
        strategy=strategy, global_batch_size=global_batch_size,
        eval_batch_size=eval_batch_size, replicas=replicas,
        steps_per_epoch=steps_per_epoch, num_steps=num_steps,
        learning_rate=recipes.scaled_learning_rate(recipe, global_batch_size),
        eval_every_steps=(max(1, int(round(
            eval_every_epochs * steps_per_epoch))) if eval_every_epochs else 0))

  def check_intervals(self, steps_per_execution, log_every, checkpoint_every):
    """Refuses intervals that are not multiples of steps_per_execution."""
    loop.check_intervals(
        steps_per_execution, {
            "trainer.train_classifier.log_every": log_every,
            "trainer.train_classifier.checkpoint_every": checkpoint_every,
            _EVAL_FLAG: self.eval_every_steps
        })


def _build(strategy, model_factory, optimizer_factory, recipe, run, num_classes,
           loss_scaling, synchronized_batch_norm):
  """The model and its (built) optimizer, in the strategy's scope."""
  with strategy.scope():
    try:
      model = model_factory()
      optimizer = optimizer_factory(recipe, run.steps_per_epoch,
                                    global_batch_size=run.global_batch_size)
    except (ValueError, TypeError) as e:
      raise configuration.ConfigError(
          f"cannot build the classifier and its optimizer: {e}") from e
    if loss_scaling:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
  if model.num_classes != num_classes:
    raise configuration.ConfigError(
        f"the model has {model.num_classes} outputs but the data "
        f"{num_classes} classes; bind "
        f"models.create_classifier.num_classes = {num_classes}")
  height, width = model.input_image_shape
  if height != width:
    raise configuration.ConfigError(f"the model's input {height}x{width} "
                                    "is not square")
  if synchronized_batch_norm:
    synchronize_batch_norm(model)
  return model, optimizer


def _describe_run(model_dir, strategy, model, training_set, recipe, run,
                  single_crop, data_resolution, print_fn):
  """Prints what is trained on what, and records it in run.json."""
  image_size = int(model.input_image_shape[0])
  print_fn(f"training {model.name} ({model.count_params():,} parameters, "
           f"input {image_size}) on {training_set.data.data} data"
           f"{_resolution_text(data_resolution)}: "
           f"{training_set.real_size} real + {training_set.synthetic_size} "
           f"synthetic images per epoch, global batch "
           f"{run.global_batch_size}, {run.steps_per_epoch:.1f} steps per "
           f"epoch, {run.num_steps} steps, peak learning rate "
           f"{run.learning_rate:.4g}")
  if not strategies.is_chief(strategy):
    return
  files.atomic_write_json(
      os.path.join(model_dir, RUN_FILE), {
          "model": model.name,
          "parameters": int(model.count_params()),
          "image_size": image_size,
          "recipe": dataclasses.asdict(recipe),
          "global_batch_size": run.global_batch_size,
          "replicas": run.replicas,
          "peak_learning_rate": run.learning_rate,
          "steps_per_epoch": run.steps_per_epoch,
          "num_steps": int(run.num_steps),
          "single_crop": bool(single_crop),
          "data_resolution": data_resolution,
          "mixed_precision": keras.mixed_precision.global_policy().name,
          "training_data": training_set.summary(),
      })


def _training_data(strategy, model, training_set, recipe, run, data_seed,
                   single_crop, data_resolution):
  """The distributed training batches. ``data_seed`` is the run's seed plus
  the step it starts at: a resumed run starts a fresh shuffled pass (see
  the module docstring)."""
  # Created outside the strategy's scope: the augmentation layers' random
  # state lives on the host with the input pipeline.
  augmentation = recipes.create_training_augmentation(
      recipe, training_set.num_classes, seed=data_seed,
      input_mean=model.input_mean, input_std=model.input_std)
  return strategy.distribute_datasets_from_function(
      lambda context: input_pipeline.training_dataset(
          training_set, int(model.input_image_shape[0]), augmentation, run.
          global_batch_size, input_context=context, seed=data_seed, single_crop=
          single_crop, data_resolution=data_resolution, repeated_augmentations=
          recipe.repeated_augmentations))


def _evaluator(model, strategy, training_set, run, data_resolution):
  """Top-1 / top-5 on the real validation split."""
  return evaluation.Evaluator(
      model, strategy, lambda context: input_pipeline.validation_dataset(
          training_set.data.real_data_dir, int(model.input_image_shape[
              0]), training_set.num_classes, run.eval_batch_size, input_context=
          context, data_resolution=data_resolution), training_set.num_classes,
      run.eval_batch_size // run.replicas)


def _distributed_step(strategy, replica_step):
  """One step over every replica; the metrics SUM-reduced (the loss is
  each replica's share of the global mean)."""

  def step(iterator):
    per_replica = strategy.run(replica_step, args=next(iterator))
    return {
        name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        for name, value in per_replica.items()
    }

  return step


def _report(optimizer, run, print_fn, step, window):
  """The progress line of ``step``: the loss and training accuracy over the
  steps since the last one."""
  examples = max(window.sums.get("examples", 0.0), 1.0)
  metrics = {
      "loss": window.sums["loss"] / window.steps,
      "top1": window.sums["top1"] / examples,
      "top5": window.sums["top5"] / examples, "images_per_second":
          (window.steps * run.global_batch_size / window.seconds())
  }
  metrics["learning_rate"] = float(optimizer.learning_rate)
  eta = (run.num_steps - step) * run.global_batch_size / max(
      metrics["images_per_second"], 1e-9)
  print_fn(f"step {step}/{run.num_steps} epoch "
           f"{step / run.steps_per_epoch:.2f} loss {metrics['loss']:.4f} "
           f"top1 {metrics['top1']:.3f} top5 {metrics['top5']:.3f} "
           f"lr {metrics['learning_rate']:.3e} "
           f"{metrics['images_per_second']:.0f} images/s "
           f"eta {eta / 60:.1f} min")
  return metrics


def _finish(outcome, results, model_dir, strategy, model, training_set,
            compare_with, start_step, print_fn):
  """The run's result; a completed run's chief writes the evaluation
  reports and (unless a rerun after the end finds it) the Keras file."""
  if outcome["stopped"]:
    return dict(outcome, eval=None)
  step, result = outcome["step"], results[-1]
  if strategies.is_chief(strategy):
    summary = evaluation.write_reports(
        os.path.join(model_dir, EVAL_DIR), result,
        classes=training_set.class_names, compare_with=compare_with,
        label=f"trained on {training_set.data.data} data",
        extra={"model_dir": model_dir, "training_data": training_set.data.data})
    print_fn(f"wrote {summary['per_class_csv']} and "
             f"{summary['per_class_png']}")
    model_path = os.path.join(model_dir, MODEL_FILE)
    # A run resumed after its end saves the same weights: only if missing.
    if step > start_step or not tf.io.gfile.exists(model_path):
      save_model(model, model_path)
      print_fn(f"wrote {model_path}")
  return dict(outcome, eval=result)


def save_model(model, path):
  """Saves ``model`` as a float32 Keras file that is never half written.

  A model trained under a mixed policy is saved as its float32 copy (the
  variables are float32 either way; only the compute dtype changes): the
  file is for evaluation, where bfloat16 features would make metrics
  depend on rounding. Keras writes a local file (with the .keras suffix it
  insists on), whose bytes then go to ``path`` atomically
  (``files.atomic_write_bytes``), on any file system.
  """
  scratch = tempfile.mkdtemp(prefix="cdm_tf_model_")
  try:
    local = os.path.join(scratch, os.path.basename(path))
    float32_copy(model).save(local)
    with open(local, "rb") as f:
      files.atomic_write_bytes(path, f.read())
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def float32_copy(model):
  """``model`` itself if it computes in float32, else a copy that does,
  with the same weights."""
  serialized = keras.saving.serialize_keras_object(model)
  converted = _float32_policies(serialized)
  if converted == serialized:
    return model
  copy = keras.saving.deserialize_keras_object(converted)
  if not copy.built:
    copy.build_from_config(model.get_build_config())
  weights = model.get_weights()
  shapes = [tuple(w.shape) for w in weights]
  if [tuple(w.shape) for w in copy.weights] != shapes:
    raise ValueError(f"{model.name}: its float32 copy has other weights")
  copy.set_weights(weights)
  return copy


def _float32_policies(config):
  """A serialized Keras object with every mixed dtype policy made float32
  (serialized policies, and policies named by a "dtype" string)."""
  if isinstance(config, dict):
    if (str(config.get("class_name", "")).endswith("DTypePolicy") and
        str(config.get("config", {}).get("name", "")).startswith("mixed_")):
      return dict(config, config=dict(config["config"], name="float32"))
    return {
        key: "float32" if key == "dtype" and isinstance(value, str) and
             (value.startswith("mixed_")) else
             _float32_policies(value) for key, value in config.items()
    }
  if isinstance(config, (list, tuple)):
    return [_float32_policies(value) for value in config]
  return config


def _resolution_text(data_resolution):
  if data_resolution is None:
    return ""
  return (f" (real images made {data_resolution}x{data_resolution} as the "
          "generator's training data)")


def _evaluate(evaluator, step, print_fn):
  start = time.perf_counter()
  result = evaluator.evaluate(step)
  tf.summary.scalar("eval/top1", result.top1, step=step)
  tf.summary.scalar("eval/top5", result.top5, step=step)
  print_fn(f"eval step {step}: top1 {result.top1:.4f} top5 "
           f"{result.top5:.4f} on {result.num_examples} validation images "
           f"({time.perf_counter() - start:.1f} s)")
  return result
