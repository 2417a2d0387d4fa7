"""A cascade of exported diffusion stages sampled together (CDM Algorithm 2).

A cascade is a base stage followed by super-resolution stages, each an
exported model (``cdm_tf.models.export``) with its own sampler settings
(``Stage``). Stage k + 1 is conditioned on stage k's output:

* Gaussian conditioning augmentation, non-truncated (``aug_level`` s > 0):
  stage k samples to the end; its z_0 is put on the 8-bit grid (the
  super-resolution model trained on 8-bit images) and corrupted to
  z'_s ~ q(z_s | z_0) by stage k + 1.
* Truncated (``truncated=True``): stage k stops at s and hands z_s over as
  it is; s must be a step of stage k's sampling process.
* Blur-trained or unaugmented stages get z_0 unchanged (CDM Sec. 3.1: no
  augmentation at inference).

Every random draw comes from the example's seed folded with the stage index,
so a sample depends only on (seed, label) and the settings: not on the batch
size, the position in the batch, the worker or the number of replicas; up to
float rounding, since kernels for another per-replica batch size may round
differently in the last bits (a pixel at a rounding boundary can move by one
level).

Sampling runs under a ``tf.distribute`` strategy: the global batch is split
evenly over the replicas, ``steps_per_call`` steps of a stage's chain run
as one compiled ``strategy.run`` (a ``tf.while_loop``; the network in XLA
with ``jit_compile``; progress is reported between calls), and
intermediate images stay on their replica from stage to stage.

Text-conditioned stages (Azizi et al.: Imagen fine-tuned with each class's
name as its prompt) are sampled by class too: a label becomes its class
prompt. The class prompts are the ones the fine-tuned stages recorded in
their exports (or ``class_prompts``); they are encoded once by the frozen
text encoder (``text.factory.create_encoder``, which must be the encoder
the stages were trained with) and every stage gathers its labels' rows. A
text stage that records no prompts (a frozen, not fine-tuned stage, such as
Azizi et al.'s 256->1024 model) takes the cascade's.
"""

import dataclasses
import hashlib
import json
from typing import Optional

import gin
import numpy as np
import tensorflow as tf

from cdm_tf import fingerprints
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import dpm_solver
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion import samplers
from cdm_tf.models import export
from cdm_tf.text import embedding_cache
from cdm_tf.text import factory as text_factory


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a cascade: an exported model and how to sample it.

  Attributes:
    model_dir: the stage's export directory (``export.export_model``).
    sampler: ``ddpm`` (ancestral), ``ddim``, or a DPM-Solver++ solver
      (``dpmpp_2m``, ``dpmpp_3m``, ``dpmpp_2m_sde``; ``dpm_solver.py``).
    timestep_respacing: ddpm / ddim: steps kept from the sampling schedule,
      e.g. ``"1000"``, ``"250"``, ``"ddim32"``; None keeps every step.
    steps: solvers: network evaluations (per guidance branch).
    timestep_spacing: solvers: ``logsnr_uniform`` (default),
      ``time_uniform`` or ``karras`` noise levels.
    schedule, num_timesteps: a sampling schedule other than the training
      one, for continuous-noise models (CDM: trained on 2000 linear steps,
      sampled with 100 linear steps). None: the training schedule.
    guidance_weight: classifier-free guidance weight w (1 = conditional).
    logvar_coeff: DDPM log-variance mixing between beta-tilde_t (0) and
      beta_t (1); None uses the model's variance type.
    eta: DDIM stochasticity (0 = deterministic).
    clip_denoised: clip the predicted x_0 to [-1, 1] (static thresholding).
    dynamic_threshold_percentile: Imagen's dynamic thresholding instead.
    aug_level: Gaussian conditioning-augmentation level s in [0, 1] of this
      (super-resolution) stage's input; 0 for base and blur stages.
    truncated: truncated augmentation (stop the previous stage at s)
      rather than non-truncated (corrupt its finished sample to s).
  """
  model_dir: str
  sampler: str = "ddpm"
  timestep_respacing: Optional[str] = None
  steps: Optional[int] = None
  timestep_spacing: Optional[str] = None
  schedule: Optional[str] = None
  num_timesteps: Optional[int] = None
  guidance_weight: float = 1.0
  logvar_coeff: Optional[float] = None
  eta: float = 0.0
  clip_denoised: bool = True
  dynamic_threshold_percentile: Optional[float] = None
  aug_level: float = 0.0
  truncated: bool = False

  def __post_init__(self):
    if self.sampler not in samplers.SAMPLERS:
      raise ValueError(f"stage {self.model_dir}: unknown sampler "
                       f"{self.sampler!r}; expected one of {samplers.SAMPLERS}")
    if samplers.is_solver(self.sampler):
      self._check_solver_settings()
    elif self.steps is not None or self.timestep_spacing is not None:
      raise ValueError(f"stage {self.model_dir}: steps and timestep_spacing "
                       f"are solver settings; {self.sampler} takes "
                       "timestep_respacing")
    if self.sampler == "ddim" and self.logvar_coeff is not None:
      raise ValueError(f"stage {self.model_dir}: logvar_coeff is a DDPM "
                       "setting")
    if self.sampler == "ddpm" and self.eta:
      raise ValueError(f"stage {self.model_dir}: eta is a DDIM setting")
    if self.guidance_weight < 0:
      raise ValueError(f"stage {self.model_dir}: guidance_weight must be >= "
                       f"0, got {self.guidance_weight}")
    if not 0.0 <= self.aug_level <= 1.0:
      raise ValueError(f"stage {self.model_dir}: aug_level must be in "
                       f"[0, 1], got {self.aug_level}")
    if self.truncated and not self.aug_level:
      raise ValueError(f"stage {self.model_dir}: truncated augmentation "
                       "needs aug_level > 0")
    if (self.schedule is None) != (self.num_timesteps is None):
      raise ValueError(f"stage {self.model_dir}: give schedule and "
                       "num_timesteps together")

  def _check_solver_settings(self):
    where = f"stage {self.model_dir}: {self.sampler}"
    if not isinstance(self.steps, int) or self.steps < 1:
      raise ValueError(f"{where} needs steps >= 1, got {self.steps!r}")
    if (self.timestep_spacing is not None and
        self.timestep_spacing not in dpm_solver.TIMESTEP_SPACINGS):
      raise ValueError(f"{where}: unknown timestep_spacing "
                       f"{self.timestep_spacing!r}; expected one of "
                       f"{dpm_solver.TIMESTEP_SPACINGS}")
    for name in ("timestep_respacing", "schedule", "logvar_coeff"):
      if getattr(self, name) is not None:
        raise ValueError(f"{where} places its own noise levels on the "
                         f"training process: {name} is a ddpm / ddim setting")
    if self.eta:
      raise ValueError(f"{where}: eta is a DDIM setting")

  @property
  def evaluations_per_branch(self):
    """Network evaluations of a full chain (per guidance branch), from the
    settings and the export config alone."""
    if samplers.is_solver(self.sampler):
      return self.steps
    return self.sampling_diffusion().num_timesteps

  def sampling_diffusion(self, diffusion_config=None):
    """The process this stage samples with.

    Args:
      diffusion_config: the model's ``diffusion_config``; None reads it from
        the export.
    """
    config = diffusion_config or export.read_config(self.model_dir)
    if self.schedule is not None and config["noise_conditioning"] != (
        "continuous"):
      raise ValueError(
          f"stage {self.model_dir}: a sampling schedule other than the "
          "training one needs a continuous-noise model; respace the training "
          "schedule instead (timestep_respacing)")
    return create_diffusion(
        schedule=self.schedule or config["schedule"],
        num_timesteps=self.num_timesteps or config["num_timesteps"],
        timestep_respacing=self.timestep_respacing,
        model_var_type=config["model_var_type"],
        noise_conditioning=config["noise_conditioning"])

  def settings(self):
    """The sampler settings as a JSON-able dict (without the model path).

    Solver fields are left out of ddpm / ddim stages, so their settings
    (and the ids of sets made with them) are what they were before solvers.
    """
    values = dataclasses.asdict(self)
    values.pop("model_dir")
    if not samplers.is_solver(self.sampler):
      values.pop("steps")
      values.pop("timestep_spacing")
    return values


def configured_stages():
  """The stages bound to ``Cascade.stages`` in the parsed gin config, built
  without loading any model (for dry runs and checks)."""
  return [
      reference.scoped_configurable_fn()
      for reference in gin.query_parameter("Cascade.stages")
  ]


def leading_stages(num_stages=None):
  """The configured stages (``configured_stages``), or only the first
  ``num_stages`` of them: a cascade stopped early makes the images its next
  stage would have upsampled, pixel for pixel (the seeds are per example;
  a next stage with truncated augmentation would instead have started
  from a partly denoised image), so an earlier resolution can be scored
  on its own."""
  stages = configured_stages()
  if num_stages is None:
    return stages
  if not 1 <= num_stages <= len(stages):
    raise ValueError(f"num_stages must be in 1..{len(stages)} (the "
                     f"configured cascade's stages), got {num_stages}")
  return stages[:num_stages]


def estimated_evaluations_per_image(stages):
  """U-Net evaluations per image from the stages' settings and export
  configs alone (no weights loaded): steps, doubled for guided stages; an
  upper bound when a stage is truncated."""
  return sum(stage.evaluations_per_branch *
             (2 if stage.guidance_weight != 1.0 else 1) for stage in stages)


class _StageSampler:
  """Samples one loaded stage under a strategy, a segment of its chain per
  compiled call."""

  def __init__(self, stage, index, model, strategy, jit_compile,
               steps_per_call):
    self.stage = stage
    self.index = index
    self.model = model
    self.strategy = strategy
    self.jit_compile = jit_compile
    self.steps_per_call = steps_per_call
    self.diffusion = stage.sampling_diffusion(model.diffusion_config)
    # Of the weights loaded, not the export's weights.sha256: a unet.keras
    # replaced after export must not pass for the weights it replaced.
    self.weights_fingerprint = fingerprints.of_arrays(model.unet.get_weights())
    self.chain = None
    self.stop_alpha_bar = None
    self._prepare = tf.function(
        lambda inputs: strategy.run(self._replica_prepare, args=(inputs,)))

  def build_chain(self, stop_alpha_bar):
    """The stage's chain, to the clean data or to the next stage's z_s."""
    stage = self.stage
    self.stop_alpha_bar = stop_alpha_bar
    self.chain = samplers.create_chain(
        self.diffusion, stage.sampler, steps=stage.steps,
        timestep_spacing=stage.timestep_spacing, eta=stage.eta,
        logvar_coeff=stage.logvar_coeff, clip_denoised=stage.clip_denoised,
        dynamic_threshold_percentile=stage.dynamic_threshold_percentile,
        stop_alpha_bar=stop_alpha_bar)
    self._segment = tf.function(
        lambda state, aux, start, stop: self.strategy.run(
            self._replica_segment, args=(state, aux, start, stop)))

  @property
  def resolution(self):
    return self.model.unet.resolution

  @property
  def num_steps(self):
    """Steps this stage runs (an ancestral chain stopped early runs fewer
    than its process has)."""
    return self.chain.num_steps

  @property
  def schedule_steps(self):
    """Steps of the sampler's schedule: the process's, or a solver's."""
    if samplers.is_solver(self.stage.sampler):
      return self.chain.num_steps
    return self.diffusion.num_timesteps

  @property
  def network_calls_per_step(self):
    """U-Net evaluations per example per step (2 with guidance)."""
    guided = self.model.is_conditional and self.stage.guidance_weight != 1.0
    return 2 if guided else 1

  def sampler_name(self):
    return f"{self.stage.sampler}-{self.schedule_steps}"

  def _replica_prepare(self, inputs):
    seeds = per_example_noise.derive_seeds(
        inputs["seed"], per_example_noise.STREAM_CASCADE_STAGE, self.index)
    low_res = inputs.get("low_res")
    if low_res is not None and not self.stage.truncated:
      # z_0 of the previous stage, on the 8-bit grid the model trained on.
      low_res = diffusion_preprocessing.to_float(
          diffusion_preprocessing.to_uint8(low_res))
    cond, uncond = self.model.sampling_conditioning(seeds, inputs.get("label"),
                                                    low_res,
                                                    self.stage.aug_level,
                                                    self.stage.truncated)
    state = self.chain.initial_state(
        samplers.initial_noise(seeds, self.model.sample_shape))
    return state, {"seed": seeds, "cond": cond, "uncond": uncond}

  def _replica_segment(self, state, aux, start, stop):
    model_fn = self.model.guided_model_fn(aux["cond"], aux["uncond"],
                                          self.stage.guidance_weight)
    if self.jit_compile:
      model_fn = samplers.compile_network(model_fn)
    return samplers.chain_segment(self.chain, model_fn, state, start, stop,
                                  aux["seed"])

  def run(self, inputs, progress=None):
    """Samples from per-replica ``inputs``; returns per-replica images."""
    state, aux = self._prepare(inputs)
    total = self.num_steps
    for start, stop in samplers.segments(total, self.steps_per_call):
      state = self._segment(state, aux, tf.constant(start, tf.int32),
                            tf.constant(stop, tf.int32))
      if progress is not None:
        progress(self.index, stop, total)
    return self.chain.result(state)


@gin.configurable(denylist=["strategy", "dtype_policy"])
class Cascade:
  """Base and super-resolution stages, loaded and checked to fit together.

  Args:
    stages: a list of ``Stage``, lowest resolution first.
    strategy: the ``tf.distribute`` strategy to sample under (default: none).
    dtype_policy: Keras dtype policy of the U-Nets, e.g. ``mixed_bfloat16``;
      None keeps each export's own.
    jit_compile: compile the U-Net evaluations with XLA (the chain's noise
      draws stay TF kernels: ``samplers`` says why).
    steps_per_call: chain steps per compiled call (progress is reported
      between calls); None runs a stage's whole chain in one call. It does
      not change the pixels.
    text_encoder: the frozen ``TextEncoder`` of text-conditioned stages;
      None builds ``text.factory.create_encoder()`` (gin) when needed, with
      the max_length the stages recorded.
    class_prompts: prompts of the classes in label order, for text stages;
      None: the prompts the fine-tuned stages recorded.
    prompt_cache_dir: cache the encoded class prompts here
      (``text.embedding_cache``); None encodes them at every start.
  """

  def __init__(self, stages, strategy=None, dtype_policy=None,
               jit_compile=False, steps_per_call=10, text_encoder=None,
               class_prompts=None, prompt_cache_dir=None):
    if not stages:
      raise ValueError("a cascade needs at least one stage")
    self.stages = list(stages)
    self.strategy = strategy or tf.distribute.get_strategy()
    self.dtype_policy = dtype_policy
    self.jit_compile = bool(jit_compile)
    self._samplers = []
    with self.strategy.scope():
      for index, stage in enumerate(self.stages):
        model = export.load_model(stage.model_dir, dtype_policy)
        self._samplers.append(
            _StageSampler(stage, index, model, self.strategy, jit_compile,
                          steps_per_call))
    self._text_key = None
    self._attach_class_prompts(text_encoder, class_prompts, prompt_cache_dir)
    self._check()
    for k, sampler in enumerate(self._samplers):
      sampler.build_chain(self._stop_alpha_bar(k))

  def _check(self):
    first = self._samplers[0].model
    if first.is_super_resolution:
      raise ValueError(f"the first stage ({self.stages[0].model_dir}) is a "
                       "super-resolution model; a cascade starts with a base "
                       "model")
    if self.stages[0].aug_level or self.stages[0].truncated:
      raise ValueError("the base stage has no conditioning input to augment")
    for prev, cur in zip(self._samplers, self._samplers[1:]):
      model = cur.model
      if not model.is_super_resolution:
        raise ValueError(f"stage {cur.stage.model_dir} is not a "
                         "super-resolution model")
      if model.unet.low_res_resolution != prev.resolution:
        raise ValueError(
            f"stage {cur.stage.model_dir} upsamples from "
            f"{model.unet.low_res_resolution}x{model.unet.low_res_resolution}"
            f" but the stage before it makes {prev.resolution}x"
            f"{prev.resolution}")
      if (cur.stage.aug_level or
          cur.stage.truncated) and (model.conditioning_augmentation
                                    != "gaussian"):
        raise ValueError(
            f"stage {cur.stage.model_dir} was trained with "
            f"{model.conditioning_augmentation!r} conditioning augmentation: "
            "it takes no aug_level at inference")
    for sampler in self._samplers:
      if (sampler.stage.logvar_coeff is not None and
          sampler.model.unet.learn_sigma):
        raise ValueError(f"stage {sampler.stage.model_dir} learned its "
                         "variances: logvar_coeff is for fixed-variance models")
    num_classes = {s.model.num_classes for s in self._samplers}
    if len(num_classes) != 1:
      raise ValueError(f"stages disagree on the number of classes: "
                       f"{sorted(num_classes, key=str)}")

  def _attach_class_prompts(self, encoder, class_prompts, cache_dir):
    """Encodes the class prompts once and gives them to every text stage."""
    text = [s for s in self._samplers if s.model.is_text_conditioned]
    if not text:
      return
    recorded = {
        tuple(s.model.class_prompts)
        for s in text
        if s.model.class_prompts is not None
    }
    if class_prompts is not None:
      prompts = [str(p) for p in class_prompts]
    elif len(recorded) == 1:
      prompts = list(recorded.pop())
    elif recorded:
      raise ValueError("the text-conditioned stages were fine-tuned with "
                       "different class prompts")
    else:
      raise ValueError(
          "no stage records class prompts (text-to-image models not "
          "fine-tuned on classes): give Cascade.class_prompts")
    if encoder is None:
      # The recorded length, whatever gin says: any other length is
      # another encoder to the model.
      lengths = {
          s.model.text_encoder["max_length"]
          for s in text
          if s.model.text_encoder
      }
      encoder = text_factory.create_encoder(
          **({"max_length": lengths.pop()} if len(lengths) == 1 else {}))
    for sampler in text:
      text_factory.check_same_encoder(sampler.model.text_encoder, encoder,
                                      f"stage {sampler.stage.model_dir}")
    if cache_dir:
      embeddings = embedding_cache.encode(cache_dir, encoder, prompts)
    else:
      embeddings = encoder.encode(prompts)
    with self.strategy.scope():
      for sampler in text:
        sampler.model.set_class_prompts(prompts, embeddings)
    self._text_key = {
        "text_encoder": text_factory.describe(encoder), "class_prompts": prompts
    }

  def _stop_alpha_bar(self, k):
    """Where stage k stops: None (the clean data), or alpha-bar_s of the
    next stage if that stage truncates."""
    if k + 1 >= len(self.stages) or not self.stages[k + 1].truncated:
      return None
    nxt = self._samplers[k + 1]
    return nxt.model.gaussian_augmentation.truncation_alpha_bar(
        self.stages[k + 1].aug_level)

  # -- description --------------------------------------------------------

  @property
  def num_classes(self):
    return self._samplers[0].model.num_classes

  @property
  def resolutions(self):
    return [s.resolution for s in self._samplers]

  @property
  def num_replicas(self):
    return self.strategy.num_replicas_in_sync

  def network_evaluations_per_example(self):
    """U-Net evaluations to make one image (steps x guidance branches)."""
    return sum(s.num_steps * s.network_calls_per_step for s in self._samplers)

  def sampler_names(self):
    return [s.sampler_name() for s in self._samplers]

  def description(self):
    """Settings and models of every stage, JSON-able."""
    stages = []
    for sampler in self._samplers:
      stages.append({
          "model_dir": sampler.stage.model_dir,
          "resolution": sampler.resolution,
          "sampling_steps": sampler.schedule_steps,
          "stops_at_index": getattr(sampler.chain, "stop_at", None),
          "stops_at_alpha_bar": sampler.stop_alpha_bar,
          "diffusion": sampler.model.diffusion_config,
          "conditioning_augmentation":
              (sampler.model.conditioning_augmentation),
          **sampler.stage.settings(),
      })
    description = {
        "stages": stages, "dtype_policy": self.dtype_policy,
        "jit_compile": self.jit_compile
    }
    if self._text_key is not None:
      description["text_encoder"] = self._text_key["text_encoder"]["name"]
      description["class_prompts"] = self._text_key["class_prompts"]
    return description

  def weights_fingerprints(self):
    """Each stage's sha256 of the weight values it loaded, in stage order."""
    return [s.weights_fingerprint for s in self._samplers]

  def config_id(self):
    """A short id of the settings and of the exported models they use.

    Hashes each stage's sampler settings, its export's ``diffusion.json``
    and the fingerprint of the weights it loaded, so retrained or replaced
    weights get a new id.
    """
    # Not fingerprints.of_json: that hashes one JSON document, and these
    # ids, already stored in generated sets' records, hash the parts in turn.
    digest = hashlib.sha256()
    for sampler in self._samplers:
      directory = sampler.stage.model_dir
      digest.update(
          json.dumps(sampler.stage.settings(), sort_keys=True).encode())
      digest.update(
          json.dumps(export.read_config(directory), sort_keys=True).encode())
      digest.update(sampler.weights_fingerprint.encode())
    if self._text_key is not None:  # the prompts and their encoder
      digest.update(json.dumps(self._text_key, sort_keys=True).encode())
    return digest.hexdigest()[:16]

  # -- sampling -----------------------------------------------------------

  def _distribute(self, array):
    """Splits a global numpy batch evenly over the replicas."""
    array = np.asarray(array)
    per_replica = len(array) // self.num_replicas

    def value(context):
      start = context.replica_id_in_sync_group * per_replica
      return tf.constant(array[start:start + per_replica])

    return self.strategy.experimental_distribute_values_from_function(value)

  def sample(self, seeds, labels, progress=None, first_stage=0, low_res=None):
    """Runs the stages for a global batch.

    Args:
      seeds: int64 [B, 2] per-example seeds.
      labels: int [B] classes.
      progress: optional ``progress(stage_index, steps_done, steps_total)``.
      first_stage: start at this stage, given the uint8 output of the stage
        before it as ``low_res`` (e.g. a sweep over a later stage's settings
        reuses the earlier stages' images). The pixels equal those of a run
        from the first stage with the same seeds when ``low_res`` is that
        run's output of stage ``first_stage - 1``.
      low_res: uint8 [B, h, w, 3], with ``first_stage`` > 0 only.

    Returns:
      uint8 numpy [B, H, W, 3] images at the last stage's resolution.
    """
    seeds = np.asarray(seeds, np.int64)
    labels = np.asarray(labels, np.int32)
    if len(seeds) != len(labels):
      raise ValueError(f"{len(seeds)} seeds for {len(labels)} labels")
    if len(seeds) % self.num_replicas:
      raise ValueError(f"the batch ({len(seeds)}) must split evenly over "
                       f"{self.num_replicas} replicas")
    if self.num_classes and (labels.min() < 0 or
                             labels.max() >= self.num_classes):
      raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
    if not 0 <= first_stage < len(self._samplers):
      raise ValueError(f"first_stage {first_stage} is not a stage index "
                       f"(0..{len(self._samplers) - 1})")
    if (low_res is not None) != (first_stage > 0):
      raise ValueError("low_res is the input of a later first_stage: give "
                       "both or neither")
    inputs = {
        "seed": self._distribute(seeds), "label": self._distribute(labels)
    }
    images = None
    if first_stage:
      side = self._samplers[first_stage - 1].resolution
      low_res = np.asarray(low_res)
      if low_res.shape != (len(seeds), side, side, 3):
        raise ValueError(f"low_res must be [{len(seeds)}, {side}, {side}, "
                         f"3] (stage {first_stage - 1}'s output), not "
                         f"{low_res.shape}")
      images = self._distribute(
          diffusion_preprocessing.to_float(low_res).numpy())
    for index in range(first_stage, len(self._samplers)):
      if images is not None:
        inputs = dict(inputs, low_res=images)
      images = self._samplers[index].run(inputs, progress=progress)
    parts = self.strategy.experimental_local_results(images)
    return np.concatenate(
        [diffusion_preprocessing.to_uint8(p).numpy() for p in parts])
