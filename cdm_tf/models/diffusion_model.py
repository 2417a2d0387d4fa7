"""A diffusion model: a U-Net, its Gaussian process, training and sampling.

``DiffusionModel`` owns a ``UNet`` and the ``GaussianDiffusion`` it is trained
with, implements one training step (CDM Algorithm 1: random step, noise,
conditioning augmentation of the low-resolution input for super-resolution
stages, label dropout for classifier-free guidance, simple or hybrid loss),
keeps an exponential moving average (EMA) of the weights, and samples with the
EMA weights.

Batches are dicts: ``x_start`` float [B, H, W, C] in [-1, 1], ``label`` int
[B] (class-conditional models), ``low_res`` float [B, h, w, C] in [-1, 1]
(super-resolution models) and ``seed`` int64 [B, 2], one seed per example.
Every random draw of a step comes from the example's seed, so the result does
not depend on how the global batch is split across replicas.

Text-conditioned models (a U-Net with ``text_embed_dim``, Imagen's stages)
read a frozen text encoder's embeddings of each example's prompt
(``cdm_tf.text.conditioning.TEXT_KEYS``). A batch carries them (captioned
pretraining: the captions are encoded outside the step), or carries
``label`` and the model holds the encoded class prompts
(``set_class_prompts``; Azizi et al.'s fine-tuning, where each class's
prompt is its name): the step gathers the label's embeddings, so a step
moves only labels, not [B, L, D] tensors. Generation conditions on a class
the same way.

Text is dropped to the null prompt (no text; ``conditioning.null_text``)
with ``label_dropout``'s probability, by the same draw that drops the label.
"""

import contextlib

import keras
import tensorflow as tf

from cdm_tf.diffusion import conditioning_augmentation as cond_aug
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import guidance
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers
# Aliased: `conditioning` names the sampling conditioning dicts here.
from cdm_tf.text import conditioning as text_conditioning

CONDITIONING_AUGMENTATIONS = ("none", "gaussian", "blur")
# Uniform draws per example per step, by position.
_U_STEP, _U_IN_STEP, _U_LABEL_DROP, _U_AUG_LEVEL, _U_BLUR_SIGMA, _U_BLUR = (
    range(6))


@keras.saving.register_keras_serializable(package="cdm_tf")
class DiffusionModel(keras.Model):
  """Trains and samples one stage of a cascade.

  Args:
    unet: the ``UNet`` (its ``learn_sigma`` must match ``model_var_type``).
    schedule, num_timesteps, model_var_type, loss_type, noise_conditioning:
      the training process (``cdm_tf.diffusion.create_diffusion``).
    label_dropout: probability of replacing the label by the null label, so
      the same network is also unconditional (classifier-free guidance).
    conditioning_augmentation: for super-resolution stages, ``gaussian``
      (amortized over levels in ``aug_training_range``; the U-Net needs
      ``aug_level_conditioning``), ``blur`` (3x3, sigma in
      ``blur_sigma_range``, on ``blur_probability`` of examples) or ``none``.
    ema_decay: decay of the weight EMA used for sampling.
    clip_grad_norm: clip the global gradient norm (after the all-reduce), or
      None.
    text_encoder: identity of the frozen text encoder of a text-conditioned
      U-Net (``cdm_tf.text.factory.describe``), recorded in exports; the
      trainer sets it.
    class_prompts: for a text-conditioned model trained on class labels,
      the prompt of each class in label order (recorded in exports; their
      embeddings are attached with ``set_class_prompts``).
  """

  def __init__(self, unet, schedule="cosine", num_timesteps=1000,
               model_var_type="fixed_small", loss_type="simple",
               noise_conditioning="timestep", label_dropout=0.1,
               conditioning_augmentation="none", aug_training_range=(0.0, 1.0),
               blur_sigma_range=(0.4, 0.6), blur_probability=0.5,
               ema_decay=0.9999, clip_grad_norm=1.0, text_encoder=None,
               class_prompts=None, **kwargs):
    super().__init__(**kwargs)
    if isinstance(unet, dict):
      unet = keras.saving.deserialize_keras_object(unet)
    self.unet = unet
    self.diffusion_config = dict(schedule=schedule,
                                 num_timesteps=int(num_timesteps),
                                 model_var_type=model_var_type,
                                 loss_type=loss_type,
                                 noise_conditioning=noise_conditioning)
    self.diffusion = create_diffusion(**self.diffusion_config)
    if unet.learn_sigma != (model_var_type == "learned_range"):
      raise ValueError(
          f"the U-Net's learn_sigma={unet.learn_sigma} does not match "
          f"model_var_type={model_var_type!r}")
    if conditioning_augmentation not in CONDITIONING_AUGMENTATIONS:
      raise ValueError(f"unknown conditioning_augmentation "
                       f"{conditioning_augmentation!r}; expected one of "
                       f"{CONDITIONING_AUGMENTATIONS}")
    self.is_super_resolution = unet.low_res_resolution is not None
    if conditioning_augmentation != "none" and not self.is_super_resolution:
      raise ValueError("conditioning augmentation is for super-resolution "
                       "models (the U-Net has no low_res_resolution)")
    if (conditioning_augmentation == "gaussian") != bool(
        unet.aug_level_conditioning):
      raise ValueError("gaussian conditioning augmentation and the U-Net's "
                       "aug_level_conditioning go together")
    if not 0.0 <= label_dropout < 1.0:
      raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    self.label_dropout = float(label_dropout)
    self.conditioning_augmentation = conditioning_augmentation
    self.aug_training_range = tuple(float(v) for v in aug_training_range)
    self.gaussian_augmentation = cond_aug.GaussianConditioningAugmentation(
        self.diffusion, self.aug_training_range)
    self.blur_augmentation = cond_aug.BlurConditioningAugmentation(
        sigma_range=blur_sigma_range, probability=blur_probability)
    self.ema_decay = float(ema_decay)
    self.clip_grad_norm = clip_grad_norm
    self.ema_variables = []
    if (text_encoder or
        class_prompts is not None) and (not self.is_text_conditioned):
      raise ValueError("text_encoder and class_prompts are for "
                       "text-conditioned models (the U-Net has no "
                       "text_embed_dim)")
    self.text_encoder = None
    if text_encoder:
      self.set_text_encoder(text_encoder)
    self.class_prompts = (None if class_prompts is None else
                          [str(p) for p in class_prompts])
    if self.class_prompts is not None and self.unet.num_classes and len(
        self.class_prompts) != self.unet.num_classes:
      raise ValueError(f"{len(self.class_prompts)} class prompts for "
                       f"{self.unet.num_classes} classes")
    self._class_text = None

  # -- construction -------------------------------------------------------

  def build_all(self, optimizer=None):
    """Creates the U-Net weights, their EMA copies and the optimizer slots.

    Call inside the distribution strategy's scope.
    """
    if not self.unet.built:
      self.unet(self.unet.dummy_inputs(batch_size=1))
    if not self.ema_variables:
      # Replicas hold identical weights after each all-reduced update, so
      # the EMA is the same everywhere: let the first replica write it.
      self.ema_variables = [
          keras.Variable(tf.identity(v.value), trainable=False,
                         name=v.path.replace("/", "_") + "_ema",
                         aggregation="only_first_replica")
          for v in self.unet.trainable_variables
      ]
    if optimizer is not None:
      self.optimizer = optimizer
      optimizer.build(self.unet.trainable_variables)
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(self.diffusion_config)
    config.update(unet=keras.saving.serialize_keras_object(self.unet),
                  label_dropout=self.label_dropout,
                  conditioning_augmentation=self.conditioning_augmentation,
                  aug_training_range=self.aug_training_range,
                  blur_sigma_range=self.blur_augmentation.sigma_range,
                  blur_probability=self.blur_augmentation.probability,
                  ema_decay=self.ema_decay, clip_grad_norm=self.clip_grad_norm)
    # Only text models carry these keys: class-conditional configs (and
    # the ids hashed from their exports) stay as they were.
    if self.text_encoder is not None:
      config["text_encoder"] = dict(self.text_encoder)
    if self.class_prompts is not None:
      config["class_prompts"] = list(self.class_prompts)
    return config

  # -- text conditioning --------------------------------------------------

  @property
  def is_text_conditioned(self):
    return self.unet.text_embed_dim is not None

  @property
  def is_conditional(self):
    """Whether there is a condition to drop (classifier-free guidance)."""
    return bool(self.unet.num_classes) or self.is_text_conditioned

  @property
  def num_classes(self):
    """Classes a label may name: the U-Net's, else the class prompts'."""
    if self.unet.num_classes:
      return self.unet.num_classes
    return len(self.class_prompts) if self.class_prompts is not None else 0

  def set_text_encoder(self, description):
    """Records the frozen encoder's identity (``text.factory.describe``)."""
    if not self.is_text_conditioned:
      raise ValueError("the U-Net has no text_embed_dim")
    description = dict(description)
    if description.get("embed_dim") != self.unet.text_embed_dim:
      raise ValueError(
          f"the text encoder's width {description.get('embed_dim')} is not "
          f"the U-Net's text_embed_dim {self.unet.text_embed_dim}")
    if self.text_encoder is not None and self.text_encoder != description:
      raise ValueError(f"the model was trained with the text encoder "
                       f"{self.text_encoder}, not {description}")
    self.text_encoder = description

  def set_class_prompts(self, prompts, embeddings):
    """Conditions label c on ``prompts[c]``, whose embeddings are given.

    Creates the embedding table as non-trainable variables (call inside
    the distribution strategy's scope, as ``build_all``): every step and
    sampling call gathers its labels' rows from it.

    Args:
      prompts: list of C prompt strings, in label order; must equal
        ``class_prompts`` if the model already records some.
      embeddings: their ``TextEmbeddings`` (or a dict of
        ``conditioning.TEXT_KEYS``) from the model's frozen encoder.
    """
    if not self.is_text_conditioned:
      raise ValueError("class prompts need a text-conditioned U-Net")
    prompts = [str(p) for p in prompts]
    if self.class_prompts is not None and prompts != self.class_prompts:
      raise ValueError("these class prompts differ from the ones the model "
                       "was trained with")
    if self.unet.num_classes and len(prompts) != self.unet.num_classes:
      raise ValueError(f"{len(prompts)} class prompts for "
                       f"{self.unet.num_classes} classes")
    table = text_conditioning.text_inputs(embeddings)
    tokens_shape = table[text_conditioning.TEXT_TOKENS].shape
    if (tokens_shape[0] != len(prompts) or
        tokens_shape[-1] != self.unet.text_embed_dim):
      raise ValueError(f"class prompt embeddings of shape {tokens_shape} do "
                       f"not fit {len(prompts)} prompts of width "
                       f"{self.unet.text_embed_dim}")
    with tf.init_scope():
      # Variables, not constants: a 1000-class table must not be copied
      # into every traced graph.
      self._class_text = {
          key: tf.Variable(value, trainable=False, name=f"class_{key}")
          for key, value in table.items()
      }
    self.class_prompts = prompts

  def class_text(self, labels):
    """The class prompts' embeddings of ``labels`` [B] (gathered)."""
    if self._class_text is None:
      raise ValueError(
          "this text-conditioned model has no class prompt embeddings: "
          "pass text embeddings, or call set_class_prompts first")
    labels = tf.cast(labels, tf.int32)
    return {
        key: tf.gather(table, labels) for key, table in self._class_text.items()
    }

  # -- the network's inputs -----------------------------------------------

  def network_inputs(self, x_t, time_input, label=None, low_res=None,
                     aug_level=None, text=None):
    inputs = {"x_t": x_t, "time": time_input}
    if self.unet.num_classes:
      inputs["label"] = label
    if self.is_super_resolution:
      inputs["low_res"] = low_res
    if self.unet.aug_level_conditioning:
      inputs["aug_level"] = aug_level
    if self.is_text_conditioned:
      inputs.update(text)
    return inputs

  @property
  def null_label(self):
    return self.unet.num_classes

  # -- training -----------------------------------------------------------

  def _augmented_low_res(self, low_res, uniforms, seeds):
    if self.conditioning_augmentation == "gaussian":
      level = self.gaussian_augmentation.training_levels(uniforms[:,
                                                                  _U_AUG_LEVEL])
      noise = per_example_noise.per_example_normal(
          seeds, low_res.shape[1:],
          per_example_noise.STREAM_CONDITIONING_AUGMENTATION)
      return (self.gaussian_augmentation.augment(low_res, level, noise),
              self.gaussian_augmentation.model_input(level))
    if self.conditioning_augmentation == "blur":
      return self.blur_augmentation.augment(low_res, uniforms[:, _U_BLUR_SIGMA],
                                            uniforms[:, _U_BLUR]), None
    return low_res, None

  def loss_terms(self, batch, training=True):
    """Per-example loss terms of a batch (see ``training_losses``)."""
    x_start = tf.cast(batch["x_start"], tf.float32)
    seeds = batch["seed"]
    uniforms = per_example_noise.per_example_uniform(
        seeds, [6], per_example_noise.STREAM_TRAINING_UNIFORMS)
    t = tf.minimum(
        tf.cast(tf.floor(uniforms[:, _U_STEP] * self.diffusion.num_timesteps),
                tf.int32), self.diffusion.num_timesteps - 1)
    noise = per_example_noise.per_example_normal(
        seeds, x_start.shape[1:], per_example_noise.STREAM_TRAINING_NOISE)
    x_t, time_input = self.diffusion.training_inputs(x_start, t, noise,
                                                     uniforms[:, _U_IN_STEP])
    drop = uniforms[:, _U_LABEL_DROP] < self.label_dropout
    label = None
    if self.unet.num_classes:
      label = tf.cast(batch["label"], tf.int32)
      label = tf.where(drop, self.null_label, label)
    text = None
    if self.is_text_conditioned:
      text = text_conditioning.drop_text(self._training_text(batch), drop)
    low_res, aug_level = None, None
    if self.is_super_resolution:
      low_res, aug_level = self._augmented_low_res(
          tf.cast(batch["low_res"], tf.float32), uniforms, seeds)
    output = self.unet(
        self.network_inputs(x_t, time_input, label, low_res, aug_level, text),
        training=training)
    return self.diffusion.training_losses(output, x_start, x_t, t, noise)

  def _training_text(self, batch):
    """The batch's text embeddings, else its labels' class prompts'."""
    if all(key in batch for key in text_conditioning.TEXT_KEYS):
      return text_conditioning.text_inputs(batch)
    if self._class_text is not None and "label" in batch:
      return self.class_text(batch["label"])
    raise ValueError(
        "a text-conditioned model trains on batches with text embeddings "
        f"{text_conditioning.TEXT_KEYS} (e.g. encoded captions), or on "
        "labels after set_class_prompts")

  def train_step(self, batch):
    """One optimizer step on this replica's share of the global batch.

    The loss is the mean over the global batch (this replica's sum divided
    by the global batch size); gradients are summed across replicas.
    """
    replica = tf.distribute.get_replica_context()
    num_replicas = replica.num_replicas_in_sync if replica else 1
    local_batch = tf.shape(batch["x_start"])[0]
    global_batch = tf.cast(local_batch * num_replicas, tf.float32)
    with tf.GradientTape() as tape:
      terms = self.loss_terms(batch, training=True)
      loss = tf.reduce_sum(terms["loss"]) / global_batch
      scaled_loss = self._scale_loss(loss)
    variables = self.unet.trainable_variables
    # Dense float32 gradients (embedding lookups give IndexedSlices): the
    # all-reduce, clipping and 1/n split below need plain tensors.
    grads = [
        tf.cast(tf.convert_to_tensor(g), tf.float32)
        for g in tape.gradient(scaled_loss, variables)
    ]
    if replica is not None and num_replicas > 1:
      grads = replica.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    # With loss scaling the gradients stay scaled (the LossScaleOptimizer
    # checks them for overflow and unscales); norm and clip are scaled to
    # match.
    scale = self._loss_scale()
    scaled_norm = tf.linalg.global_norm(grads)
    grad_norm = scaled_norm / scale
    if self.clip_grad_norm:
      grads, _ = tf.clip_by_global_norm(grads, self.clip_grad_norm * scale,
                                        use_norm=scaled_norm)
    # Keras optimizers all-reduce (SUM) in replica context; the gradients
    # are already reduced, so hand each replica its 1/n share.
    if num_replicas > 1:
      grads = [g / num_replicas for g in grads]
    self.optimizer.apply(grads, variables)
    self._update_ema()
    metrics = {"loss": loss * num_replicas, "grad_norm": grad_norm}
    for name in ("mse", "vb"):
      if name in terms:
        metrics[name] = (tf.reduce_sum(terms[name]) / global_batch *
                         num_replicas)
    # Metrics are this replica's share times n: the caller MEAN-reduces.
    return metrics

  def _scale_loss(self, loss):
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      return self.optimizer.scale_loss(loss)
    return loss

  def _loss_scale(self):
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      return tf.cast(self.optimizer.dynamic_scale, tf.float32)
    return tf.constant(1.0)

  def _update_ema(self):
    decay = self.ema_decay
    for ema, var in zip(self.ema_variables, self.unet.trainable_variables):
      ema.assign(decay * ema.value +
                 (1.0 - decay) * tf.cast(var.value, ema.dtype))

  # -- sampling -----------------------------------------------------------

  @contextlib.contextmanager
  def ema_weights(self):
    """Temporarily puts the EMA weights into the U-Net (eager, host side)."""
    if not self.ema_variables:
      raise ValueError("the model has no EMA weights yet; call build_all()")
    saved = [v.numpy() for v in self.unet.trainable_variables]
    for var, ema in zip(self.unet.trainable_variables, self.ema_variables):
      var.assign(ema.value)
    try:
      yield self.unet
    finally:
      for var, value in zip(self.unet.trainable_variables, saved):
        var.assign(value)

  def sampling_conditioning(self, seeds, labels=None, low_res=None,
                            aug_level=0.0, truncated=False, text=None):
    """The network's conditioning for sampling, and its null version.

    Args:
      seeds: int [B, 2] per-example seeds (the augmentation noise's).
      labels: int [B] classes (class-conditional models).
      low_res: float [B, h, w, C] conditioning images (super-resolution).
      aug_level: Gaussian conditioning-augmentation level s in [0, 1]
        (gaussian-augmentation models; 0 for the others).
      truncated: ``low_res`` is already z_s, the low-resolution sampler
        stopped at s (CDM Algorithm 2, truncated); otherwise it is z_0 and
        is corrupted here to z'_s ~ q(z_s | z_0) (non-truncated).
      text: text-conditioned models: the prompts' ``TextEmbeddings`` (or a
        dict of ``conditioning.TEXT_KEYS``); None takes the class prompts
        of ``labels``.

    Returns:
      ``(conditioning, null_conditioning)`` dicts for ``guided_model_fn``;
      the null one has the null label and the null prompt (classifier-free
      guidance).
    """
    seeds = tf.convert_to_tensor(seeds)
    batch = tf.shape(seeds)[0]
    cond, uncond = {}, {}
    if self.unet.num_classes:
      if labels is None:
        raise ValueError("this model is class-conditional: pass labels")
      cond["label"] = tf.cast(labels, tf.int32)
      uncond["label"] = tf.fill([batch], self.null_label)
    if self.is_text_conditioned:
      if text is None:
        if labels is None:
          raise ValueError("this model is text-conditioned: pass text "
                           "embeddings, or labels of its class prompts")
        text = self.class_text(labels)
      text = text_conditioning.text_inputs(text)
      cond.update(text)
      uncond.update(text_conditioning.null_text(text))
    if (aug_level or truncated) and not self.unet.aug_level_conditioning:
      raise ValueError(
          "conditioning-augmentation level / truncation at sampling needs a "
          "model trained with gaussian conditioning augmentation (this one: "
          f"{self.conditioning_augmentation!r})")
    if self.is_super_resolution:
      if low_res is None:
        raise ValueError("this is a super-resolution model: pass low_res")
      low_res = tf.cast(low_res, tf.float32)
      if self.unet.aug_level_conditioning:
        level = tf.fill([batch], float(aug_level))
        if not truncated:
          noise = per_example_noise.per_example_normal(
              seeds, low_res.shape[1:],
              per_example_noise.STREAM_CONDITIONING_AUGMENTATION)
          low_res = self.gaussian_augmentation.augment(low_res, level, noise)
        cond["aug_level"] = uncond["aug_level"] = (
            self.gaussian_augmentation.model_input(level))
      cond["low_res"] = uncond["low_res"] = low_res
    return cond, uncond

  def guided_model_fn(self, conditioning, null_conditioning,
                      guidance_weight=1.0):
    """``fn(x_t, time_input)`` -> float32 network output with guidance."""

    def model_fn(x, time_input, c):
      text = ({key: c[key] for key in text_conditioning.TEXT_KEYS}
              if self.is_text_conditioned else None)
      return tf.cast(
          self.unet(
              self.network_inputs(x, time_input,
                                  c.get("label"), c.get("low_res"),
                                  c.get("aug_level"), text), training=False),
          tf.float32)

    if not self.is_conditional:
      guidance_weight = 1.0  # nothing to guide with
    return guidance.guided_model_fn(model_fn, conditioning, null_conditioning,
                                    guidance_weight, self.unet.learn_sigma)

  def sample(self, seeds, labels=None, low_res=None, diffusion=None,
             sampler="ddpm", guidance_weight=1.0, aug_level=0.0,
             truncated=False, text=None, **kwargs):
    """Samples with the current U-Net weights (wrap in ``ema_weights()``).

    Args:
      seeds, labels, low_res, aug_level, truncated, text: see
        ``sampling_conditioning``.
      diffusion: the sampling process (a respacing, or any schedule for
        continuous-noise models); defaults to the training process.
      sampler: ``ddpm``, ``ddim`` or a DPM-Solver++ solver (``dpmpp_2m``,
        ...); other keyword arguments go to ``samplers.sample`` (steps,
        eta, logvar_coeff, clip_denoised, stop_alpha_bar, ...).
      guidance_weight: classifier-free guidance weight w (1 = conditional).
    Returns:
      float32 [B, H, W, C] samples in [-1, 1].
    """
    diffusion = diffusion or self.diffusion
    seeds = tf.convert_to_tensor(seeds)
    cond, uncond = self.sampling_conditioning(seeds, labels, low_res, aug_level,
                                              truncated, text)
    fn = self.guided_model_fn(cond, uncond, guidance_weight)
    return samplers.sample(diffusion, fn, self.sample_shape, seeds,
                           sampler=sampler, **kwargs)

  @property
  def sample_shape(self):
    """Per-example shape of a sample, (H, W, C)."""
    return (self.unet.resolution, self.unet.resolution, self.unet.in_channels)
