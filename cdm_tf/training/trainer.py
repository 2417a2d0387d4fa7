"""The training loop of a diffusion stage, under any tf.distribute strategy.

Checkpoints (U-Net weights, their EMA, optimizer slots and step, and the
data iterator where the strategy supports it) every ``checkpoint_every``
steps and at exit; resumes from the latest checkpoint with the same step
count; keeps the last ``keep_checkpoints``. Writes TensorBoard scalars and
sample grids, prints progress, stops on a non-finite loss without saving the
bad state, and exports the EMA model for sampling at the end.

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

import math
import os
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf.data import contact_sheet
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.models import diffusion_model
from cdm_tf.models import export
from cdm_tf.text import factory as text_factory
from cdm_tf.training import initialization
from cdm_tf.training import preemption
from cdm_tf.training import run_settings
from cdm_tf.training import strategies
from cdm_tf.training import text_conditioning


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the run stopped without saving it."""
  exit_status = 3  # the binaries' status (cdm_tf/command_line.py)


def _checkpoint(model, optimizer, iterator):
  """Weights, EMA and optimizer; plus the data iterator when it can be saved
  (TF can save single-device iterators, not all distributed ones)."""
  items = {"unet_weights": list(model.unet.weights),
           "ema_weights": list(model.ema_variables),
           "optimizer": optimizer}
  if iterator is not None:
    try:
      return tf.train.Checkpoint(data_iterator=iterator, **items)
    except ValueError:
      logging.warning("this strategy's data iterator cannot be checkpointed; "
                      "a resumed run restarts the data order")
  return tf.train.Checkpoint(**items)


def _check_steps_and_batch(num_steps, global_batch_size, init_from, replicas):
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


@gin.configurable(denylist=["model_dir", "strategy"])
def train(model_dir, strategy, model_factory=gin.REQUIRED,
          dataset_factory=gin.REQUIRED, optimizer_factory=gin.REQUIRED,
          global_batch_size=64, num_steps=1000, checkpoint_every=500,
          keep_checkpoints=3, log_every=50, sample_every=0, num_samples=16,
          sample_respacing="100", sample_guidance_weight=1.0,
          save_iterator_state=True, export_at_end=True, seed=0,
          init_from=None, text_encoder_factory=None, class_prompts=None,
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
    print_fn: where progress lines go.

  Returns:
    dict of the last logged metrics (floats) and the final step.

  Raises:
    ConfigError: a step count or batch that cannot train (raised before
      anything is written).
    NonFiniteLossError: the loss became NaN or Inf.
  """
  _check_steps_and_batch(num_steps, global_batch_size, init_from,
                         strategy.num_replicas_in_sync)
  # Only the chief writes into model_dir (often shared by every worker).
  chief = strategies.is_chief(strategy)
  if chief:
    tf.io.gfile.makedirs(model_dir)
  # float16 needs loss scaling; bfloat16 has float32's exponent range.
  loss_scaling = keras.mixed_precision.global_policy().name == "mixed_float16"
  # Same seed, same initial weights: runs are reproducible, whatever the
  # strategy.
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    model = model_factory()
    optimizer = optimizer_factory(loss_scaling=loss_scaling)
    model.build_all(optimizer)
  logging.info("U-Net parameters: %d", model.unet.count_params())
  encoder = None
  if model.is_text_conditioned:
    encoder = (text_encoder_factory or text_factory.create_encoder)()
    text_factory.check_same_encoder(model.text_encoder, encoder, "the model")
    model.set_text_encoder(text_factory.describe(encoder))
    print_fn(f"text encoder {encoder.name} (frozen, max_length "
             f"{encoder.max_length}, width {encoder.embed_dim})")

  def dataset_fn(input_context):
    dataset = dataset_factory(input_context=input_context,
                              global_batch_size=global_batch_size)
    if text_conditioning.has_captions(dataset):
      if encoder is None:
        raise ValueError("the batches carry captions but the model is not "
                         "text-conditioned (set unet.UNet.text_embed_dim)")
      dataset = text_conditioning.encode_captions(dataset, encoder)
    return dataset

  dataset = strategy.distribute_datasets_from_function(dataset_fn)
  captioned = diffusion_model.TEXT_TOKENS in dataset.element_spec
  if encoder is not None and not captioned:
    prompt_source = class_prompts or text_conditioning.ClassPrompts()
    prompts = prompt_source.prompts()
    embeddings = text_conditioning.encode_prompts(
        encoder, prompts,
        prompt_source.cache_dir or (
            os.path.join(model_dir, "text_embeddings") if chief else None))
    with strategy.scope():
      model.set_class_prompts(prompts, embeddings)
    print_fn(f"{len(prompts)} class prompts, e.g. {prompts[:3]}")
  iterator = iter(dataset)
  if save_iterator_state and strategies.num_workers(strategy) > 1:
    # Each worker reads its own shard of the files, and only the chief's
    # checkpoint is kept: the others could not resume their iterators.
    logging.warning("multi-worker: the data iterators are not checkpointed; "
                    "a resumed run restarts the data order")
    save_iterator_state = False
  checkpoint = _checkpoint(model, optimizer,
                           iterator if save_iterator_state else None)
  manager = preemption.checkpoint_manager(checkpoint, model_dir, strategy,
                                         keep_checkpoints)
  run_settings.check_or_record(
      model_dir, run_settings.describe(model.get_config(), optimizer,
                                       model.weights),
      resuming=manager.latest_checkpoint is not None, chief=chief)
  resumed = preemption.restore_latest(checkpoint, manager)
  if resumed:
    print_fn(f"resumed from {resumed} at step "
             f"{int(optimizer.iterations.numpy())}")
  elif init_from:
    source = initialization.initialize_from(model, init_from)
    print_fn(f"initialised the U-Net and its EMA from {source}")

  # No AutoGraph: the step has no tensor-dependent Python control flow,
  # and converting the U-Net's code took longer than tracing it.
  @tf.function(autograph=False)
  def train_step(iterator):
    batch = next(iterator)
    per_replica = strategy.run(model.train_step, args=(batch,))
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()}

  writer = (tf.summary.create_file_writer(
      os.path.join(model_dir, "tensorboard")) if chief
            else tf.summary.create_noop_writer())
  step = int(optimizer.iterations.numpy())
  metrics = {}
  window_start, window_steps, window_sums = time.perf_counter(), 0, {}
  run_start, start_step = time.perf_counter(), step
  sample_inputs = None
  with preemption.StopRequested() as stop, writer.as_default():
    while step < num_steps and not stop.requested:
      values = train_step(iterator)
      step += 1
      window_steps += 1
      values = {k: float(v) for k, v in values.items()}
      for name, value in values.items():
        window_sums[name] = window_sums.get(name, 0.0) + value
      if not math.isfinite(values["loss"]):
        raise NonFiniteLossError(
            f"non-finite loss {values['loss']} at step {step} (grad norm "
            f"{values.get('grad_norm')}); stopped without saving. The last "
            f"good checkpoint is {manager.latest_checkpoint}. Lower the "
            "learning rate, add warmup or gradient clipping, or check the "
            "data.")
      if step % log_every == 0 or step == num_steps:
        # Means over the steps since the last log: one step's hybrid loss
        # is too noisy to read.
        elapsed = time.perf_counter() - window_start
        steps_per_second = window_steps / max(elapsed, 1e-9)
        means = {k: v / window_steps for k, v in window_sums.items()}
        window_start, window_steps, window_sums = time.perf_counter(), 0, {}
        learning_rate = float(optimizer.learning_rate)
        metrics = dict(means, learning_rate=learning_rate,
                       steps_per_second=steps_per_second)
        for name, value in metrics.items():
          tf.summary.scalar(f"train/{name}", value, step=step)
        eta = (num_steps - step) / max(steps_per_second, 1e-9)
        print_fn(f"step {step}/{num_steps} loss {means['loss']:.4f} "
                 f"grad_norm {means['grad_norm']:.3f} lr {learning_rate:.2e} "
                 f"{steps_per_second:.2f} steps/s eta {eta / 60:.1f} min")
      if step % checkpoint_every == 0:
        manager.save(checkpoint_number=step)
      if sample_every and step % sample_every == 0:
        # Every worker takes the batch the inputs may come from, so their
        # iterators stay at the same step.
        sample_inputs = sample_inputs or _sample_inputs(model, iterator,
                                                        strategy, num_samples)
        if chief:
          _write_samples(model, model_dir, step, sample_inputs,
                         sample_respacing, sample_guidance_weight, seed)
    if manager.latest_checkpoint is None or int(
        manager.latest_checkpoint.rsplit("-", 1)[1]) != step:
      manager.save(checkpoint_number=step)
    writer.flush()
  if stop.requested:
    print_fn(f"stopped at step {step} on request; checkpoint saved")
    return dict(metrics, step=step, stopped=True)
  if step > start_step:
    print_fn(f"trained steps {start_step}..{step} in "
             f"{time.perf_counter() - run_start:.1f} s")
  strategies.print_weights_digest(
      strategy, list(model.unet.weights) + list(model.ema_variables), print_fn)
  if export_at_end and chief:
    sample_inputs = sample_inputs or _sample_inputs(model, iterator, strategy,
                                                    num_samples)
    _write_samples(model, model_dir, step, sample_inputs, sample_respacing,
                   sample_guidance_weight, seed)
    path = export.export_model(model, os.path.join(model_dir, "export"))
    print_fn(f"exported the EMA model to {path}")
  return dict(metrics, step=step)


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
    keys.extend(diffusion_model.TEXT_KEYS)
  if keys:
    batch = next(iterator)
    values = {key: np.concatenate([
        p.numpy() for p in strategy.experimental_local_results(batch[key])])
              for key in keys + ["label"]}
    repeats = -(-count // len(values["label"]))
    values = {key: np.concatenate([value] * repeats)[:count]
              for key, value in values.items()}
    labels, low_res = values["label"], values.get("low_res")
    if diffusion_model.TEXT_TOKENS in values:
      text = {key: values[key] for key in diffusion_model.TEXT_KEYS}
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
                           diffusion=diffusion,
                           guidance_weight=guidance_weight, text=text)
  images = diffusion_preprocessing.to_uint8(samples).numpy()
  columns = int(math.ceil(math.sqrt(len(images))))
  rows = [list(images[i:i + columns]) for i in range(0, len(images), columns)]
  if low_res is not None:  # show the conditioning next to each sample
    lows = diffusion_preprocessing.to_uint8(low_res).numpy()
    rows = [[img for pair in zip(lows[i:i + columns], images[i:i + columns])
             for img in pair] for i in range(0, len(images), columns)]
  sheet = contact_sheet.grid(rows, cell_size=max(model.unet.resolution, 64))
  path = os.path.join(model_dir, "samples", f"step_{step:08d}.png")
  contact_sheet.write_png(path, sheet)
  tf.summary.image("samples", sheet[None], step=step)
  logging.info("wrote %s", path)
