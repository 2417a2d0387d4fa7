"""Training a diffusion stage, under any tf.distribute strategy.

The steps (``DiffusionModel.train_step``) run in ``loop.TrainingLoop``.
Checkpoints (U-Net weights, their EMA, optimizer slots and step, and the
data iterator where the strategy supports it) every ``checkpoint_every``
steps and at exit; resumes from the latest checkpoint with the same step
count; keeps the last ``keep_checkpoints``. Writes TensorBoard scalars and
sample grids, prints progress, stops on a non-finite loss or weights
without saving the bad state, and exports the EMA model for sampling at
the end.

Fine-tuning (Azizi et al.): ``init_from`` names another run's export or
checkpoint; a run without checkpoints of its own starts from those weights
(``initialization``), and once it has checkpoints it resumes from them and
never re-initialises. Text-conditioned stages get their frozen text encoder
from ``text.factory.create_encoder`` and their text from captions in the
batches or from class prompts (``text_conditioning``).

Freezing a stage, as Azizi et al. freeze the last super-resolution stage, is
not training it: its pretrained export goes into the cascade unchanged.
(``num_steps = 0`` with ``init_from`` exports the source weights with this
run's class prompts attached.)
"""

import functools
import math
import os

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.data import contact_sheet
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion_training import initialization
from cdm_tf.diffusion_training import text_conditioning
from cdm_tf.models import export
from cdm_tf.text import conditioning
from cdm_tf.text import factory as text_factory
from cdm_tf.training import loop
from cdm_tf.training import run_settings
from cdm_tf.training import strategies

# What a run writes under its model directory, besides the loop's
# checkpoints and TensorBoard events.
EXPORT_DIR = "export"
SAMPLES_DIR = "samples"
TEXT_EMBEDDINGS_DIR = "text_embeddings"
# Sample sheets: SAMPLES_DIR/<prefix><step, 8 digits><suffix>.
SAMPLE_SHEET_PREFIX = "step_"
SAMPLE_SHEET_SUFFIX = ".png"
_NON_FINITE_ADVICE = ("Lower the learning rate, add warmup or gradient "
                      "clipping, or check the data.")


def _checkpoint(model, optimizer, iterator):
  """Weights, EMA and optimizer; plus the data iterator when it can be saved
  (TF can save single-device iterators, not all distributed ones)."""
  items = {
      "unet_weights": list(model.unet.weights),
      "ema_weights": list(model.ema_variables), "optimizer": optimizer
  }
  if iterator is not None:
    try:
      return tf.train.Checkpoint(data_iterator=iterator, **items)
    except ValueError:
      logging.warning("this strategy's data iterator cannot be checkpointed; "
                      "a resumed run restarts the data order")
  return tf.train.Checkpoint(**items)


def _check_settings(num_steps, global_batch_size, init_from, replicas,
                    steps_per_execution, log_every, checkpoint_every,
                    sample_every):
  """Refuses settings that cannot train, before anything is written."""
  # num_steps = 0 only makes sense with init_from (it exports the source
  # weights); without it, it would export an untrained model.
  if num_steps < 0 or (num_steps == 0 and not init_from):
    raise configuration.ConfigError(
        f"trainer.train.num_steps must be positive (0 only with init_from), "
        f"got {num_steps}")
  if global_batch_size <= 0 or global_batch_size % replicas:
    raise configuration.ConfigError(
        f"trainer.train.global_batch_size {global_batch_size} must be a "
        f"positive multiple of the {replicas} replica(s)")
  loop.check_intervals(
      steps_per_execution, {
          "trainer.train.log_every": log_every,
          "trainer.train.checkpoint_every": checkpoint_every,
          "trainer.train.sample_every": sample_every
      })


@gin.configurable(denylist=["model_dir", "strategy"])
def train(model_dir, strategy, model_factory=gin.REQUIRED,
          dataset_factory=gin.REQUIRED, optimizer_factory=gin.REQUIRED,
          global_batch_size=64, num_steps=1000, checkpoint_every=500,
          keep_checkpoints=3, log_every=50, sample_every=0, num_samples=16,
          sample_respacing="100", sample_guidance_weight=1.0,
          save_iterator_state=True, export_at_end=True, seed=0, init_from=None,
          text_encoder_factory=None, class_prompts=None, steps_per_execution=1,
          print_fn=print):
  """Trains (or resumes training) a ``DiffusionModel``.

  Args:
    model_dir: checkpoints/, tensorboard/, samples/ and export/ go here.
    strategy: a ``tf.distribute.Strategy``.
    model_factory: callable returning a ``DiffusionModel`` (called in scope).
    dataset_factory: callable(input_context=, global_batch_size=) returning
      batches (``input_pipeline.diffusion_dataset``).
    optimizer_factory: callable(loss_scaling=) returning a Keras optimizer.
    global_batch_size: examples per step over all replicas.
    num_steps: total optimizer steps (a resumed run continues to this).
    checkpoint_every, keep_checkpoints, log_every: in steps.
    sample_every: write a sample grid every this many steps (0: only at the
      end); ``num_samples`` images with the EMA weights, sampled with the
      training schedule respaced to ``sample_respacing`` steps.
    save_iterator_state: checkpoint the input pipeline's position. Its
      shuffle buffer goes into every checkpoint, so large buffers cost disk.
    export_at_end: write the EMA model to model_dir/export.
    seed: seed of the initial weights and of the sample grids.
    init_from: fine-tuning: an export directory, or a run / checkpoint
      directory or checkpoint prefix, whose U-Net weights (and EMA) this
      run starts from when it has no checkpoint of its own yet.
    text_encoder_factory: callable returning the frozen ``TextEncoder`` of
      a text-conditioned model; None: ``text.factory.create_encoder`` as
      configured by gin.
    class_prompts: ``text_conditioning.ClassPrompts`` used when a
      text-conditioned model trains on labels (batches without captions);
      None: ``ClassPrompts()`` as configured by gin.
    steps_per_execution: optimizer steps per compiled call (``loop``);
      log_every, checkpoint_every and sample_every must be multiples of it.
    print_fn: where progress lines go.

  Returns:
    dict of the last logged metrics (floats) and the final step.

  Raises:
    ConfigError: a step count, batch or interval that cannot train (raised
      before anything is written).
    loop.NonFiniteLossError: the loss or the weights became NaN or Inf.
  """
  _check_settings(num_steps, global_batch_size, init_from,
                  strategy.num_replicas_in_sync, steps_per_execution, log_every,
                  checkpoint_every, sample_every)
  # Only the chief writes into model_dir (often shared by every worker).
  chief = strategies.is_chief(strategy)
  if chief:
    tf.io.gfile.makedirs(model_dir)
  model, optimizer = _build(strategy, model_factory, optimizer_factory, seed)
  iterator = _batches(model, strategy, dataset_factory, global_batch_size,
                      (text_encoder_factory, class_prompts), model_dir,
                      print_fn)
  checkpoints = _checkpoints(model, optimizer, iterator, model_dir, strategy,
                             save_iterator_state, checkpoint_every,
                             keep_checkpoints)
  _resume_or_initialize(checkpoints, model, optimizer, init_from, print_fn)
  grids = _SampleGrids(model, model_dir, iterator, strategy, num_samples,
                       sample_respacing, sample_guidance_weight, seed)
  outcome = _training_loop(
      model, optimizer, checkpoints, grids, num_steps, log_every, sample_every,
      steps_per_execution, print_fn).run(
          iterator, strategy, loop.summary_writer(model_dir, strategy),
          int(optimizer.iterations.numpy()), print_fn,
          digest_variables=list(model.unet.weights) + list(model.ema_variables))
  if outcome.pop("stopped"):
    return dict(outcome, stopped=True)
  if export_at_end and chief:
    grids.write(outcome["step"])
    path = export.export_model(model, os.path.join(model_dir, EXPORT_DIR))
    print_fn(f"exported the EMA model to {path}")
  return outcome


def _build(strategy, model_factory, optimizer_factory, seed):
  """The seeded model and its optimizer, built in the strategy's scope."""
  loss_scaling = loop.seed_and_loss_scaling(seed)
  with strategy.scope():
    model = model_factory()
    optimizer = optimizer_factory(loss_scaling=loss_scaling)
    model.build_all(optimizer)
  logging.info("U-Net parameters: %d", model.unet.count_params())
  return model, optimizer


def _batches(model, strategy, dataset_factory, global_batch_size, text,
             model_dir, print_fn):
  """The iterator of distributed training batches; a text-conditioned
  model gets its encoder, and its class prompts when the batches have no
  captions. ``text``: (text_encoder_factory, class_prompts) of ``train``."""
  text_encoder_factory, class_prompts = text
  encoder = _text_encoder(model, text_encoder_factory, print_fn)
  dataset = strategy.distribute_datasets_from_function(lambda context: _dataset(
      dataset_factory, context, global_batch_size, encoder))
  if (encoder is not None and
      conditioning.TEXT_TOKENS not in dataset.element_spec):
    _set_class_prompts(
        model, strategy, encoder, class_prompts,
        os.path.join(model_dir, TEXT_EMBEDDINGS_DIR)
        if strategies.is_chief(strategy) else None, print_fn)
  return iter(dataset)


def _checkpoints(model, optimizer, iterator, model_dir, strategy,
                 save_iterator_state, every, keep):
  """The run's ``loop.Checkpoints`` (settings checked and recorded)."""
  return loop.Checkpoints(
      _checkpoint(
          model, optimizer,
          iterator if _keeps_iterator(save_iterator_state, strategy) else None),
      model_dir, strategy,
      run_settings.describe(model.get_config(), optimizer,
                            model.weights), every=every, keep=keep,
      weights=list(model.unet.weights) + list(model.ema_variables),
      advice=_NON_FINITE_ADVICE)


def _resume_or_initialize(checkpoints, model, optimizer, init_from, print_fn):
  """Restores the latest checkpoint; without one, fine-tuning starts from
  ``init_from``'s weights."""
  resumed = checkpoints.restore()
  if resumed:
    print_fn(f"resumed from {resumed} at step "
             f"{int(optimizer.iterations.numpy())}")
  elif init_from:
    source = initialization.initialize_from(model, init_from)
    print_fn(f"initialised the U-Net and its EMA from {source}")


def _training_loop(model, optimizer, checkpoints, grids, num_steps, log_every,
                   sample_every, steps_per_execution, print_fn):
  return loop.TrainingLoop(
      step_fn=_distributed_step(model, grids.strategy), checkpoints=checkpoints,
      num_steps=num_steps, log_every=log_every,
      log_flag="trainer.train.log_every",
      checkpoint_flag="trainer.train.checkpoint_every",
      report=functools.partial(_report, optimizer, num_steps, print_fn), hooks=[
          loop.Periodic("trainer.train.sample_every", sample_every, grids.write)
      ], steps_per_execution=steps_per_execution,
      non_finite_detail=lambda values:
      (f" (grad norm {values.get('grad_norm')})"))


def _text_encoder(model, text_encoder_factory, print_fn):
  """The frozen text encoder of a text-conditioned model, else None."""
  if not model.is_text_conditioned:
    return None
  encoder = (text_encoder_factory or text_factory.create_encoder)()
  text_factory.check_same_encoder(model.text_encoder, encoder, "the model")
  model.set_text_encoder(text_factory.describe(encoder))
  print_fn(f"text encoder {encoder.name} (frozen, max_length "
           f"{encoder.max_length}, width {encoder.embed_dim})")
  return encoder


def _dataset(dataset_factory, input_context, global_batch_size, encoder):
  """One input pipeline's batches, captions encoded if it has them."""
  dataset = dataset_factory(input_context=input_context,
                            global_batch_size=global_batch_size)
  if text_conditioning.has_captions(dataset):
    if encoder is None:
      raise ValueError("the batches carry captions but the model is not "
                       "text-conditioned (set unet.UNet.text_embed_dim)")
    dataset = text_conditioning.encode_captions(dataset, encoder)
  return dataset


def _set_class_prompts(model, strategy, encoder, class_prompts, cache_dir,
                       print_fn):
  """A text-conditioned model training on labels: its class prompts and
  their embeddings (cached in ``cache_dir`` unless configured)."""
  prompt_source = class_prompts or text_conditioning.ClassPrompts()
  prompts = prompt_source.prompts()
  embeddings = text_conditioning.encode_prompts(
      encoder, prompts, prompt_source.cache_dir or cache_dir)
  with strategy.scope():
    model.set_class_prompts(prompts, embeddings)
  print_fn(f"{len(prompts)} class prompts, e.g. {prompts[:3]}")


def _keeps_iterator(save_iterator_state, strategy):
  """Whether the checkpoints hold the data iterator."""
  if save_iterator_state and strategies.num_workers(strategy) > 1:
    # Each worker reads its own shard of the files, and only the chief's
    # checkpoint is kept: the others could not resume their iterators.
    logging.warning("multi-worker: the data iterators are not checkpointed; "
                    "a resumed run restarts the data order")
    return False
  return save_iterator_state


def _distributed_step(model, strategy):
  """One step over every replica; the metrics MEAN-reduced."""

  def step(iterator):
    batch = next(iterator)
    per_replica = strategy.run(model.train_step, args=(batch,))
    return {
        k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
        for k, v in per_replica.items()
    }

  return step


def _report(optimizer, num_steps, print_fn, step, window):
  """The progress line of ``step``: means over the steps since the last
  one (one step's hybrid loss is too noisy to read)."""
  steps_per_second = window.steps / window.seconds()
  means = {k: v / window.steps for k, v in window.sums.items()}
  learning_rate = float(optimizer.learning_rate)
  eta = (num_steps - step) / max(steps_per_second, 1e-9)
  print_fn(f"step {step}/{num_steps} loss {means['loss']:.4f} "
           f"grad_norm {means['grad_norm']:.3f} lr {learning_rate:.2e} "
           f"{steps_per_second:.2f} steps/s eta {eta / 60:.1f} min")
  return dict(means, learning_rate=learning_rate,
              steps_per_second=steps_per_second)


class _SampleGrids:
  """The sample grids of a run: their conditioning, taken once, and the
  grid of a step (written by the chief)."""

  def __init__(self, model, model_dir, iterator, strategy, count, respacing,
               guidance_weight, seed):
    self._model, self._model_dir = model, model_dir
    self._iterator, self.strategy, self._count = iterator, strategy, count
    self._respacing, self._guidance_weight = respacing, guidance_weight
    self._seed = seed
    self._inputs = None

  def write(self, step):
    # Every worker takes the batch the inputs may come from, so their
    # iterators stay at the same step.
    self._inputs = self._inputs or _sample_inputs(self._model, self._iterator,
                                                  self.strategy, self._count)
    if strategies.is_chief(self.strategy):
      _write_samples(self._model, self._model_dir, step, self._inputs,
                     self._respacing, self._guidance_weight, self._seed)


def _sample_inputs(model, iterator, strategy, count):
  """Conditioning of the sample grids: labels (every class in turn), and
  what only data has: low-res images, caption embeddings (both taken from a
  training batch, with its labels)."""
  labels = np.arange(count) % max(model.num_classes, 1)
  low_res = text = None
  keys = []
  if model.is_super_resolution:
    keys.append("low_res")
  if model.is_text_conditioned and not model.class_prompts:
    keys.extend(conditioning.TEXT_KEYS)
  if keys:
    batch = next(iterator)
    values = {
        key: np.concatenate([
            p.numpy() for p in strategy.experimental_local_results(batch[key])
        ]) for key in keys + ["label"]
    }
    repeats = -(-count // len(values["label"]))
    values = {
        key: np.concatenate([value] * repeats)[:count]
        for key, value in values.items()
    }
    labels, low_res = values["label"], values.get("low_res")
    if conditioning.TEXT_TOKENS in values:
      text = {key: values[key] for key in conditioning.TEXT_KEYS}
  return labels, low_res, text


def _write_samples(model, model_dir, step, inputs, respacing, guidance_weight,
                   seed):
  labels, low_res, text = inputs
  config = dict(model.diffusion_config)
  config.pop("loss_type")
  diffusion = create_diffusion(timestep_respacing=respacing, **config)
  seeds = per_example_noise.example_seeds(np.arange(len(labels)), seed)
  with model.ema_weights():
    samples = model.sample(seeds, labels=labels, low_res=low_res,
                           diffusion=diffusion, guidance_weight=guidance_weight,
                           text=text)
  images = diffusion_preprocessing.to_uint8(samples).numpy()
  columns = int(math.ceil(math.sqrt(len(images))))
  rows = [list(images[i:i + columns]) for i in range(0, len(images), columns)]
  if low_res is not None:  # show the conditioning next to each sample
    lows = diffusion_preprocessing.to_uint8(low_res).numpy()
    rows = [[
        img
        for pair in zip(lows[i:i + columns], images[i:i + columns])
        for img in pair
    ]
            for i in range(0, len(images), columns)]
  sheet = contact_sheet.grid(rows, cell_size=max(model.unet.resolution, 64))
  path = os.path.join(
      model_dir, SAMPLES_DIR, f"{SAMPLE_SHEET_PREFIX}"
      f"{step:08d}{SAMPLE_SHEET_SUFFIX}")
  contact_sheet.write_png(path, sheet)
  tf.summary.image("samples", sheet[None], step=step)
  logging.info("wrote %s", path)
