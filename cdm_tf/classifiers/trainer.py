"""The training loop of an ImageNet classifier, under any tf.distribute
strategy.

A custom loop (not ``Model.fit``) so the run behaves like the diffusion
trainer (``cdm_tf.training.trainer``): it checkpoints the weights
(including batch-norm statistics), the optimizer and the number of steps
done every ``checkpoint_every`` steps and on SIGTERM, resumes from the
latest checkpoint after a kill, writes TensorBoard scalars (loss, learning
rate, train and validation top-1 / top-5, images/s), prints progress lines,
and stops on a NaN / Inf loss, or weights found non-finite before a save,
without saving the bad state.

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
import math
import os
import time

import gin
import keras
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import input_pipeline
from cdm_tf.classifiers import recipes
from cdm_tf.training import preemption
from cdm_tf.training import run_settings
from cdm_tf.training import strategies
from cdm_tf.training import trainer as diffusion_trainer

EVAL_DIR = "eval"
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"

# The diffusion trainer's error: binaries handle both loops' NaN stops alike.
NonFiniteLossError = diffusion_trainer.NonFiniteLossError


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
        logits, tf.argmax(labels, axis=-1, output_type=tf.int32),
        num_classes)
    return {"loss": loss,
            "top1": tf.reduce_sum(counts["top1"]),
            "top5": tf.reduce_sum(counts["top5"]),
            "examples": local_batch}
  return replica_step


@gin.configurable(denylist=["model_dir", "strategy", "training_set",
                            "recipe", "model_factory", "optimizer_factory",
                            "global_batch_size", "single_crop",
                            "compare_with", "print_fn"])
def train_classifier(model_dir, strategy, training_set, recipe, model_factory,
          optimizer_factory=recipes.create_optimizer, global_batch_size=None,
          single_crop=False, compare_with=None, data_resolution=None,
          num_steps=None, checkpoint_every=1000, keep_checkpoints=3,
          log_every=100, eval_every_epochs=0.0, eval_batch_size=None,
          synchronized_batch_norm=False, seed=0, print_fn=print):
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
    eval_every_epochs: also evaluate every this many epochs (0: only at the
      end).
    eval_batch_size: global evaluation batch; None is the training batch.
    synchronized_batch_norm: batch-norm statistics over the global batch
      (``synchronize_batch_norm``) instead of each replica's.
    seed: seed of the initial weights, data order and augmentation.
    print_fn: where progress lines go.

  Returns:
    dict: "step", the last logged training metrics, "eval" (the final
    ``EvalResult``, or None when stopped early) and "stopped". A completed
    run has written ``<model_dir>/model.keras`` (``MODEL_FILE``).

  Raises:
    ConfigError: inconsistent model, data and batch.
    NonFiniteLossError: the loss became NaN or Inf.
  """
  input_pipeline.check_data_resolution(training_set, data_resolution)
  chief = strategies.is_chief(strategy)
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
  learning_rate = recipes.scaled_learning_rate(recipe, global_batch_size)

  # float16 needs loss scaling; bfloat16 has float32's exponent range.
  loss_scaling = (keras.mixed_precision.global_policy().name
                  == "mixed_float16")
  # Same seed, same initial weights, whatever the strategy.
  keras.utils.set_random_seed(seed)
  if compare_with:
    try:
      evaluation.read_per_class_csv(compare_with, training_set.num_classes)
    except (ValueError, OSError, tf.errors.OpError) as e:
      raise configuration.ConfigError(f"compare_with: {e}") from e
  with strategy.scope():
    try:
      model = model_factory()
      optimizer = optimizer_factory(recipe, steps_per_epoch,
                                    global_batch_size=global_batch_size)
    except (ValueError, TypeError) as e:
      raise configuration.ConfigError(
          f"cannot build the classifier and its optimizer: {e}") from e
    if loss_scaling:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
  if model.num_classes != training_set.num_classes:
    raise configuration.ConfigError(
        f"the model has {model.num_classes} outputs but the data "
        f"{training_set.num_classes} classes; bind "
        f"models.create_classifier.num_classes = {training_set.num_classes}")
  height, width = model.input_image_shape
  if height != width:
    raise configuration.ConfigError(f"the model's input {height}x{width} "
                                    "is not square")
  image_size = int(height)
  if synchronized_batch_norm:
    synchronize_batch_norm(model)

  step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  checkpoint = tf.train.Checkpoint(model_weights=list(model.weights),
                                   optimizer=optimizer, step=step_counter)
  manager = preemption.checkpoint_manager(checkpoint, model_dir, strategy,
                                         keep_checkpoints)
  run_settings.check_or_record(
      model_dir, run_settings.describe({"architecture": model.name}, optimizer,
                                       model.weights),
      resuming=manager.latest_checkpoint is not None, chief=chief)
  resumed = preemption.restore_latest(checkpoint, manager)
  if resumed:
    print_fn(f"resumed from {resumed} at step {int(step_counter.numpy())}")
  step = int(step_counter.numpy())
  print_fn(f"training {model.name} ({model.count_params():,} parameters, "
           f"input {image_size}) on {training_set.data.data} data"
           f"{_resolution_text(data_resolution)}: "
           f"{training_set.real_size} real + {training_set.synthetic_size} "
           f"synthetic images per epoch, global batch {global_batch_size}, "
           f"{steps_per_epoch:.1f} steps per epoch, {num_steps} steps, peak "
           f"learning rate {learning_rate:.4g}")

  if chief:
    files.atomic_write_json(os.path.join(model_dir, RUN_FILE), {
        "model": model.name,
        "parameters": int(model.count_params()),
        "image_size": image_size,
        "recipe": dataclasses.asdict(recipe),
        "global_batch_size": global_batch_size,
        "replicas": replicas,
        "peak_learning_rate": learning_rate,
        "steps_per_epoch": steps_per_epoch,
        "num_steps": int(num_steps),
        "single_crop": bool(single_crop),
        "data_resolution": data_resolution,
        "mixed_precision": keras.mixed_precision.global_policy().name,
        "training_data": training_set.summary(),
    })

  loss_fn = recipes.create_loss(recipe, reduction="none")
  # A resumed run starts a fresh shuffled pass (see the module docstring).
  data_seed = seed + step
  # Created outside the strategy's scope: the augmentation layers' random
  # state lives on the host with the input pipeline.
  augmentation = recipes.create_training_augmentation(
      recipe, training_set.num_classes, seed=data_seed,
      input_mean=model.input_mean, input_std=model.input_std)
  dataset = strategy.distribute_datasets_from_function(
      lambda context: input_pipeline.training_dataset(
          training_set, image_size, augmentation, global_batch_size,
          input_context=context, seed=data_seed, single_crop=single_crop,
          data_resolution=data_resolution,
          repeated_augmentations=recipe.repeated_augmentations))
  iterator = iter(dataset)
  evaluator = evaluation.Evaluator(
      model, strategy,
      lambda context: input_pipeline.validation_dataset(
          training_set.data.real_data_dir, image_size,
          training_set.num_classes, eval_batch_size, input_context=context,
          data_resolution=data_resolution),
      training_set.num_classes, eval_batch_size // replicas)

  replica_step = make_replica_step(model, optimizer, loss_fn,
                                   global_batch_size,
                                   training_set.num_classes)

  @tf.function
  def train_step(iterator):
    per_replica = strategy.run(replica_step, args=next(iterator))
    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value,
                                  axis=None)
            for name, value in per_replica.items()}

  @tf.function
  def weights_are_finite():
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in model.weights
                          if tf.as_dtype(v.dtype).is_floating])

  def save(step):
    # A finite loss can still come with an update that made the weights
    # Inf or NaN (seen as a bad loss one step later): never save those.
    if not bool(weights_are_finite()):
      raise _non_finite("weights", step, manager)
    step_counter.assign(step)
    manager.save(checkpoint_number=step)

  writer = (tf.summary.create_file_writer(
      os.path.join(model_dir, "tensorboard")) if chief
            else tf.summary.create_noop_writer())
  eval_every_steps = (max(1, int(round(eval_every_epochs * steps_per_epoch)))
                      if eval_every_epochs else 0)
  metrics = {}
  window = _Window()
  run_start, start_step = time.perf_counter(), step
  result = None
  with preemption.StopRequested() as stop, writer.as_default():
    while step < num_steps and not stop.requested:
      values = {k: float(v) for k, v in train_step(iterator).items()}
      step += 1
      if not math.isfinite(values["loss"]):
        raise _non_finite(f"loss {values['loss']}", step, manager)
      window.add(values)
      if step % log_every == 0 or step == num_steps:
        metrics = window.flush(global_batch_size)
        metrics["learning_rate"] = float(optimizer.learning_rate)
        for name, value in metrics.items():
          tf.summary.scalar(f"train/{name}", value, step=step)
        eta = (num_steps - step) * global_batch_size / max(
            metrics["images_per_second"], 1e-9)
        print_fn(f"step {step}/{num_steps} epoch "
                 f"{step / steps_per_epoch:.2f} loss {metrics['loss']:.4f} "
                 f"top1 {metrics['top1']:.3f} top5 {metrics['top5']:.3f} "
                 f"lr {metrics['learning_rate']:.3e} "
                 f"{metrics['images_per_second']:.0f} images/s "
                 f"eta {eta / 60:.1f} min")
      if step % checkpoint_every == 0:
        save(step)
      if eval_every_steps and step % eval_every_steps == 0 and (
          step < num_steps):
        eval_start = time.perf_counter()
        result = _evaluate(evaluator, step, print_fn)
        # Training throughput excludes the evaluation.
        window.start += time.perf_counter() - eval_start
    if manager.latest_checkpoint is None or int(
        manager.latest_checkpoint.rsplit("-", 1)[1]) != step:
      save(step)
    if stop.requested:
      writer.flush()
      print_fn(f"stopped at step {step} on request; checkpoint saved")
      return dict(metrics, step=step, eval=None, stopped=True)
    if step > start_step:
      print_fn(f"trained steps {start_step}..{step} in "
               f"{time.perf_counter() - run_start:.1f} s")
    strategies.print_weights_digest(strategy, model.weights, print_fn)
    result = _evaluate(evaluator, step, print_fn)
    writer.flush()
  if chief:
    summary = evaluation.write_reports(
        os.path.join(model_dir, EVAL_DIR), result,
        classes=training_set.class_names, compare_with=compare_with,
        label=f"trained on {training_set.data.data} data",
        extra={"model_dir": model_dir,
               "training_data": training_set.data.data})
    print_fn(f"wrote {summary['per_class_csv']} and "
             f"{summary['per_class_png']}")
    model_path = os.path.join(model_dir, MODEL_FILE)
    # A run resumed after its end saves the same weights: only if missing.
    if step > start_step or not tf.io.gfile.exists(model_path):
      save_model(model, model_path)
      print_fn(f"wrote {model_path}")
  return dict(metrics, step=step, eval=result, stopped=False)


def save_model(model, path):
  """Saves ``model`` as a float32 Keras file that is never half written.

  A model trained under a mixed policy is saved as its float32 copy (the
  variables are float32 either way; only the compute dtype changes): the
  file is for evaluation, where bfloat16 features would make metrics
  depend on rounding. It is saved under a temporary name in the same
  directory, then renamed over ``path`` (Keras insists on the .keras
  suffix, so the temporary name keeps it).
  """
  directory, name = os.path.split(path)
  stem, suffix = os.path.splitext(name)
  tmp = os.path.join(directory, f"{stem}.tmp-{os.getpid()}{suffix}")
  if directory:
    tf.io.gfile.makedirs(directory)
  try:
    float32_copy(model).save(tmp)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


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
    return {key: "float32" if key == "dtype" and isinstance(value, str) and (
        value.startswith("mixed_")) else _float32_policies(value)
            for key, value in config.items()}
  if isinstance(config, (list, tuple)):
    return [_float32_policies(value) for value in config]
  return config


class _Window:
  """Sums of step metrics since the last progress line."""

  def __init__(self):
    self.start = time.perf_counter()
    self.steps = 0
    self.sums = {}

  def add(self, values):
    self.steps += 1
    for name, value in values.items():
      self.sums[name] = self.sums.get(name, 0.0) + value

  def flush(self, global_batch_size):
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    examples = max(self.sums.get("examples", 0.0), 1.0)
    metrics = {"loss": self.sums["loss"] / self.steps,
               "top1": self.sums["top1"] / examples,
               "top5": self.sums["top5"] / examples,
               "images_per_second": self.steps * global_batch_size / elapsed}
    self.start, self.steps, self.sums = time.perf_counter(), 0, {}
    return metrics


def _resolution_text(data_resolution):
  if data_resolution is None:
    return ""
  return (f" (real images made {data_resolution}x{data_resolution} as the "
          "generator's training data)")


def _non_finite(what, step, manager):
  return NonFiniteLossError(
      f"non-finite {what} at step {step}; stopped without saving. The last "
      f"good checkpoint is {manager.latest_checkpoint}. Lower the learning "
      "rate (or the global batch), lengthen the warmup, or check the data.")


def _evaluate(evaluator, step, print_fn):
  start = time.perf_counter()
  result = evaluator.evaluate(step)
  tf.summary.scalar("eval/top1", result.top1, step=step)
  tf.summary.scalar("eval/top5", result.top5, step=step)
  print_fn(f"eval step {step}: top1 {result.top1:.4f} top5 "
           f"{result.top5:.4f} on {result.num_examples} validation images "
           f"({time.perf_counter() - start:.1f} s)")
  return result

