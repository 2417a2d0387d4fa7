"""Azizi et al.'s recipe at CPU scale: a text-to-image stage pretrained on
captioned real images, fine-tuned into a class-conditional model whose
prompts are the class names, resumed, and sampled into a class-balanced
synthetic set; plus the pieces (null prompt, class-prompt table,
initialisation, captions) on their own.

Real data (a Fashion-MNIST subset with synthetic template captions) and the
real frozen all-MiniLM-L6-v2 encoder; the gin files are the shipped ones,
with the U-Net shrunk to one level so that tracing stays short.
"""

import json
import os
import re
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.data import caption_reader
from cdm_tf.data import class_names
from cdm_tf.data import schema
from cdm_tf.data_preparation import captions
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion_training import initialization
from cdm_tf.diffusion_training import input_pipeline
from cdm_tf.diffusion_training import optimizers
from cdm_tf.diffusion_training import text_conditioning
from cdm_tf.diffusion_training import trainer
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.models import diffusion_model
from cdm_tf.models import export
from cdm_tf.models import unet as unet_lib
from cdm_tf.synthetic_set import split_manifest
from cdm_tf.text import class_prompts
from cdm_tf.text import conditioning
from cdm_tf.text import factory as text_factory
from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_GIN = os.path.join(ROOT, "gin", "models",
                            "fashion_mnist_16_text_pretrain.gin")
FINETUNE_GIN = os.path.join(ROOT, "gin", "models",
                            "fashion_mnist_16_text_finetune.gin")
GENERATION_GIN = os.path.join(ROOT, "gin", "generation",
                              "fashion_mnist_16_to_32.gin")
MAX_LENGTH = 16  # as in both gin files
TEXT_DIM = 384  # all-MiniLM-L6-v2
# The shipped configs with a one-level U-Net, small batches, short logs.
TINY = {
    "unet.UNet.base_channels": 16,
    "unet.UNet.channel_mult": (1,),
    "unet.UNet.attention_resolutions": (16,),
    "unet.UNet.group_norm_groups": 8,
    "unet.UNet.dropout": 0.0,
    "trainer.train.global_batch_size": 8,
    "trainer.train.log_every": 4,
    "trainer.train.sample_every": 0,
    "trainer.train.num_samples": 4,
    "trainer.train.sample_respacing": "'4'",
    "input_pipeline.diffusion_dataset.shuffle_buffer": 100,
}


@pytest.fixture(scope="module")
def encoder():
  return text_factory.create_encoder(name="minilm", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Labelled records and their captioned copy (synthetic captions)."""
  root = tmp_path_factory.mktemp("text_data")
  labelled = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(8, 1))
  captioned = str(root / "captioned")
  captions.write_captioned_copy(labelled, captioned,
                                class_prompts.dataset_prompt_names(labelled),
                                print_fn=lambda _: None)
  return labelled, captioned


def _train(gin_file, model_dir, encoder, **bindings):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [gin_file], [f"{k} = {v}" for k, v in dict(TINY, **bindings).items()])
  lines = []
  try:
    result = trainer.train(str(model_dir), tf.distribute.get_strategy(),
                           text_encoder_factory=lambda: encoder,
                           print_fn=lines.append)
  finally:
    gin.clear_config()
  losses = [
      float(m)
      for line in lines
      for m in re.findall(r"^step \d+/\d+ loss ([\d.]+)", line)
  ]
  return result, lines, losses


def _checkpoint_weights(model_dir, step, name="unet_weights"):
  reader = tf.train.load_checkpoint(
      os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
  count = sum(1 for key in reader.get_variable_to_shape_map()
              if key.startswith(f"{name}/"))
  return [
      reader.get_tensor(f"{name}/{i}/.ATTRIBUTES/VARIABLE_VALUE")
      for i in range(count)
  ]


def _distance(a, b):
  return np.sqrt(sum(np.sum((x - y)**2) for x, y in zip(a, b)))


def test_pretrain_on_captions_finetune_on_class_names_resume_and_generate(
    tmp_path, data, encoder):
  labelled, captioned = data
  encoder_weights = [w.numpy().copy() for w in encoder.model.weights]

  # 1. Text-to-image pretraining on (image, caption) pairs. A fast EMA so
  # that the short run's export holds what it learned.
  pretrain_dir = tmp_path / "pretrain"
  _, lines, pretrain_losses = _train(
      PRETRAIN_GIN, pretrain_dir, encoder, **{
          "input_pipeline.diffusion_dataset.data_dir": f"'{captioned}'",
          "trainer.train.num_steps": 12, "trainer.train.checkpoint_every": 12,
          "diffusion_model.DiffusionModel.ema_decay": 0.5,
          "optimizers.create_optimizer.learning_rate": 2e-3,
          "optimizers.create_optimizer.warmup_steps": 0
      })
  assert len(pretrain_losses) == 3 and np.all(np.isfinite(pretrain_losses))
  assert pretrain_losses[-1] < 0.85 * pretrain_losses[0], pretrain_losses
  pretrained = pretrain_dir / "export"
  config = export.read_config(str(pretrained))
  assert config["text_encoder"] == text_factory.describe(encoder)
  assert "class_prompts" not in config  # a text-to-image model

  # 2. Fine-tuning on class labels whose prompts are the class names, with
  # Adafactor, from the pretrained export; stopped after 8 steps.
  finetune_dir = tmp_path / "finetune"
  finetune = {
      "DATA_DIR": f"'{labelled}'", "PRETRAINED_MODEL": f"'{pretrained}'",
      "trainer.train.checkpoint_every": 8,
      "optimizers.create_optimizer.learning_rate": 2e-3
  }
  _, lines, first_losses = _train(
      FINETUNE_GIN, finetune_dir, encoder,
      **{"trainer.train.num_steps": 8,
         "trainer.train.export_at_end": False}, **finetune)
  assert f"initialised the U-Net and its EMA from export {pretrained}" in (
      lines)
  assert any("10 class prompts, e.g. ['T-shirt', 'trouser', 'pullover']" in line
             for line in lines)
  # It starts where pretraining ended, not from scratch.
  assert max(first_losses) < 0.85 * pretrain_losses[0], (pretrain_losses,
                                                         first_losses)
  step8 = _checkpoint_weights(finetune_dir, 8)

  # 3. Restarted: it resumes from its own checkpoint (step 8), not from
  # the pretrained export, and continues to step 12.
  _, lines, resumed_losses = _train(FINETUNE_GIN, finetune_dir, encoder,
                                    **{"trainer.train.num_steps": 12},
                                    **finetune)
  assert any(
      line.startswith("resumed from") and line.endswith("ckpt-8 at step 8")
      for line in lines), lines
  assert not any(line.startswith("initialised") for line in lines)
  assert "trained steps 8..12 in" in " ".join(lines)
  assert np.all(np.isfinite(resumed_losses))
  assert max(resumed_losses) < 0.85 * pretrain_losses[0]
  step12 = _checkpoint_weights(finetune_dir, 12)
  pretrained_unet = export.load_model(str(pretrained)).unet.get_weights()
  # 4 more steps from step 8's weights; a re-initialised run would be 4
  # steps from the pretrained ones.
  assert _distance(step12, step8) < 0.75 * _distance(step12, pretrained_unet)

  # 4. The frozen encoder is untouched by every train step.
  for before, after in zip(encoder_weights, encoder.model.weights):
    np.testing.assert_array_equal(before, after.numpy())

  # 5. A class-balanced synthetic set from the fine-tuned text model: each
  # label is sampled with its class name as the prompt.
  finetuned = str(finetune_dir / "export")
  config = export.read_config(finetuned)
  assert config["class_prompts"][9] == "ankle boot"
  cascade = cascade_lib.Cascade([
      cascade_lib.Stage(finetuned, timestep_respacing="4", guidance_weight=1.25)
  ], text_encoder=encoder)
  assert cascade.num_classes == 10
  assert cascade.network_evaluations_per_example() == 8  # guided: 2 x 4
  classes = class_names.load_classes(labelled)
  plan = plan_lib.GenerationPlan(plan_lib.uniform_counts(20, 10), 10)
  out = str(tmp_path / "synthetic")
  summary = synthetic_dataset.generate(
      out, cascade, plan, classes,
      synthetic_dataset.GenerationSettings(batch_size=10, examples_per_shard=10,
                                           image_format="png",
                                           sheet_per_class=1,
                                           progress_every_seconds=0),
      print_fn=lambda _: None)
  assert summary["split_complete"]
  manifest = split_manifest.read(out, "train")
  assert manifest.class_counts == (2,) * 10
  assert manifest.settings["cascade"]["class_prompts"][0] == "T-shirt"
  # One seed for all ten classes: each prompt gives another image.
  seeds = np.repeat(per_example_noise.example_seeds([7]).numpy(), 10, 0)
  images = cascade.sample(seeds, np.arange(10)).reshape(10, -1)
  assert len({image.tobytes() for image in images}) == 10


# ------------------------------------------------------------------ parts


def _text_unet(**kwargs):
  config = dict(resolution=8, base_channels=16, channel_mult=(1,),
                num_res_blocks=1, attention_resolutions=(8,), num_heads=2,
                group_norm_groups=8, text_embed_dim=TEXT_DIM)
  config.update(kwargs)
  return unet_lib.UNet(**config)


def _built(model, rng, optimizer=None):
  """Builds the model; zero-initialised weights (output and residual
  convolutions) get random values, else the untrained U-Net outputs 0
  whatever its conditioning."""
  model.build_all(optimizer)
  for weights in (model.unet.trainable_variables, model.ema_variables):
    for v in weights:
      if v.shape.rank >= 2 and not v.numpy().any():
        v.assign(rng.normal(0.0, 0.05, v.shape).astype(np.float32))
  return model


def _random_text(rng, batch, length=5):
  mask = np.arange(length)[None] < rng.integers(2, length + 1, (batch, 1))
  tokens = rng.normal(size=(batch, length, TEXT_DIM)).astype(
      np.float32) * mask[..., None]
  return {
      "text_pooled": rng.normal(size=(batch, TEXT_DIM)).astype(np.float32),
      "text_tokens": tokens, "text_mask": mask
  }


def _image_batch(rng, size):
  return {
      "x_start": tf.constant(rng.uniform(-1, 1, (size, 8, 8, 3)), tf.float32),
      "label": tf.constant(np.arange(size) % 3, tf.int32),
      "seed": per_example_noise.example_seeds(tf.range(size))
  }


def test_class_labels_condition_on_their_prompts_embeddings():
  rng = np.random.default_rng(0)
  model = _built(
      diffusion_model.DiffusionModel(_text_unet(), num_timesteps=100,
                                     label_dropout=0.3), rng)
  table = _random_text(rng, 3)
  model.set_class_prompts(["tench", "goldfish", "great white shark"], table)
  assert model.num_classes == 3 and model.is_conditional
  batch = _image_batch(rng, 6)
  by_label = model.loss_terms(batch)["loss"]
  # The same batch carrying its labels' embeddings itself: the same loss.
  explicit = dict(batch,
                  **{k: tf.gather(v, batch["label"]) for k, v in table.items()})
  del explicit["label"]
  np.testing.assert_allclose(
      model.loss_terms(explicit)["loss"], by_label, rtol=1e-5)
  # Another prompt set changes it; prompts other than the recorded ones
  # are refused.
  other = dict(
      batch,
      **{k: tf.gather(v, (batch["label"] + 1) % 3) for k, v in table.items()})
  assert np.abs(model.loss_terms(other)["loss"] - by_label).max() > 1e-4
  with pytest.raises(ValueError, match="differ"):
    model.set_class_prompts(["a", "b", "c"], table)
  with pytest.raises(ValueError, match="text embeddings"):
    diffusion_model.DiffusionModel(_text_unet()).loss_terms(batch)


def test_null_prompt_is_no_text_for_dropout_and_guidance():
  rng = np.random.default_rng(1)
  text = conditioning.text_inputs(_random_text(rng, 4))
  dropped = conditioning.drop_text(text, tf.constant([True, False, True,
                                                      False]))
  for row in (0, 2):
    assert not dropped["text_mask"][row].numpy().any()
    assert not dropped["text_tokens"][row].numpy().any()
    assert not dropped["text_pooled"][row].numpy().any()
  for key in conditioning.TEXT_KEYS:
    np.testing.assert_array_equal(dropped[key][1], text[key][1])

  model = _built(
      diffusion_model.DiffusionModel(_text_unet(), num_timesteps=100), rng)
  seeds = per_example_noise.example_seeds(tf.range(4))
  cond, uncond = model.sampling_conditioning(seeds, text=text)
  np.testing.assert_array_equal(cond["text_tokens"], text["text_tokens"])
  assert not uncond["text_mask"].numpy().any()
  assert not uncond["text_pooled"].numpy().any()
  # Guidance runs both branches: w = 0 is the model on the null prompt.
  x = tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32)
  t = tf.fill([4], 500.0)
  unguided = model.guided_model_fn(uncond, uncond, 1.0)(x, t)
  np.testing.assert_allclose(
      model.guided_model_fn(cond, uncond, 0.0)(x, t), unguided, atol=1e-5)
  conditional = model.guided_model_fn(cond, uncond, 1.0)(x, t)
  assert np.abs(conditional - unguided).max() > 1e-4


def test_label_dropout_drops_label_and_prompt_together():
  # label_dropout just below 1: every example is dropped to the null label
  # and the null prompt, so the labels and prompts cannot matter.
  rng = np.random.default_rng(2)
  model = _built(
      diffusion_model.DiffusionModel(_text_unet(num_classes=3),
                                     num_timesteps=100, label_dropout=0.9999),
      rng)
  batch = _image_batch(rng, 4)
  batch.update(_random_text(rng, 4))
  other = dict(batch, label=tf.constant([2, 2, 0, 1]),
               **_random_text(np.random.default_rng(3), 4))
  np.testing.assert_allclose(
      model.loss_terms(batch)["loss"],
      model.loss_terms(other)["loss"], rtol=1e-6)


def test_text_configs_record_the_encoder_and_class_configs_stay_as_they_were(
    tmp_path):
  plain = diffusion_model.DiffusionModel(
      unet_lib.UNet(resolution=8, base_channels=16, channel_mult=(1,),
                    attention_resolutions=(8,), num_heads=1,
                    group_norm_groups=8, num_classes=3))
  assert "text_encoder" not in plain.get_config()
  assert "class_prompts" not in plain.get_config()
  description = {
      "name": "enc", "fingerprint": "ab" * 32, "max_length": 5, "embed_dim": 384
  }
  model = diffusion_model.DiffusionModel(_text_unet(), text_encoder=description,
                                         class_prompts=["x", "y"])
  model.build_all()
  loaded = export.load_model(export.export_model(model, str(tmp_path / "e")))
  assert loaded.text_encoder == description
  assert loaded.class_prompts == ["x", "y"] and loaded.num_classes == 2
  with pytest.raises(ValueError, match="width"):
    model.set_text_encoder(dict(description, embed_dim=16))
  with pytest.raises(ValueError, match="text_embed_dim"):
    diffusion_model.DiffusionModel(plain.unet, class_prompts=["x"])


def test_another_encoder_is_refused(encoder):
  recorded = dict(text_factory.describe(encoder), fingerprint="0" * 64)
  with pytest.raises(ValueError, match="fingerprint differ"):
    text_factory.check_same_encoder(recorded, encoder, "stage x")
  text_factory.check_same_encoder(text_factory.describe(encoder), encoder,
                                  "stage x")
  text_factory.check_same_encoder(None, encoder, "stage x")


def test_initialisation_from_export_and_checkpoint(tmp_path):
  rng = np.random.default_rng(4)

  def built():
    model = diffusion_model.DiffusionModel(_text_unet(), num_timesteps=100)
    model.build_all(optimizers.create_optimizer("adam", 1e-3))
    return model

  description = {
      "name": "enc", "fingerprint": "ab" * 32, "max_length": 5,
      "embed_dim": TEXT_DIM
  }
  source = built()
  source.set_text_encoder(description)
  for weights in (source.unet.trainable_variables, source.ema_variables):
    for v in weights:
      v.assign(rng.normal(size=v.shape).astype(np.float32))
  export_dir = export.export_model(source, str(tmp_path / "export"))
  tf.train.Checkpoint(unet_weights=list(source.unet.weights),
                      ema_weights=list(source.ema_variables),
                      optimizer=source.optimizer).save(
                          str(tmp_path / "run" / "checkpoints" / "ckpt"))

  from_export = built()
  assert "export" in initialization.initialize_from(from_export, export_dir)
  from_run = built()
  assert "checkpoint" in initialization.initialize_from(from_run,
                                                        str(tmp_path / "run"))
  for i, (unet_var, ema) in enumerate(
      zip(source.unet.trainable_variables, source.ema_variables)):
    # An export holds the EMA weights: both start from them.
    np.testing.assert_array_equal(
        from_export.unet.trainable_variables[i].numpy(), ema.numpy())
    np.testing.assert_array_equal(from_export.ema_variables[i].numpy(),
                                  ema.numpy())
    np.testing.assert_array_equal(from_run.unet.trainable_variables[i].numpy(),
                                  unet_var.numpy())
    np.testing.assert_array_equal(from_run.ema_variables[i].numpy(),
                                  ema.numpy())
  assert int(from_run.optimizer.iterations.numpy()) == 0  # a fresh start

  wider = diffusion_model.DiffusionModel(_text_unet(base_channels=24),
                                         num_timesteps=100)
  wider.build_all()
  for path in (export_dir, str(tmp_path / "run")):
    with pytest.raises(ValueError, match="architecture"):
      initialization.initialize_from(wider, path)
  with pytest.raises(FileNotFoundError):
    initialization.initialize_from(built(), str(tmp_path / "nothing"))
  other_encoder = built()
  other_encoder.set_text_encoder(dict(description, fingerprint="cd" * 32))
  with pytest.raises(ValueError, match="same encoder"):
    initialization.initialize_from(other_encoder, export_dir)


def test_caption_batches_are_encoded_by_the_frozen_encoder(data, encoder):
  _, captioned = data

  def dataset():  # a new one each time: the same (seeded) order
    return input_pipeline.diffusion_dataset(captioned, resolution=16,
                                            global_batch_size=4,
                                            shuffle_buffer=50, captions=True)

  assert text_conditioning.has_captions(dataset())
  raw = next(iter(dataset()))
  encoded = next(iter(text_conditioning.encode_captions(dataset(), encoder)))
  assert schema.CAPTION not in encoded
  assert encoded["text_tokens"].shape == (4, MAX_LENGTH, 384)
  assert encoded["text_mask"].dtype == tf.bool
  expected = encoder.encode([c.decode() for c in raw[schema.CAPTION].numpy()])
  np.testing.assert_allclose(encoded["text_pooled"], expected.pooled, atol=1e-5)
  np.testing.assert_array_equal(encoded["label"], raw["label"])


def test_captions_are_templates_of_class_name_and_pixels(data):
  _, captioned = data
  dark = np.zeros((32, 32, 3), np.uint8)
  dark[4:28, 12:20] = 90  # narrow and tall, small, dark, evenly filled
  assert captions.describe_image(dark) == {
      "tone": "dark", "size": "small", "texture": "plain", "shape": "tall"
  }
  texts = {
      captions.template_caption(dark, "ankle boot", str(i)) for i in range(40)
  }
  assert "a photo of a dark ankle boot" in texts
  assert "an ankle boot" in texts
  assert "a grayscale picture of a tall ankle boot" in texts
  assert captions.template_caption(dark, "bag",
                                   "7") == (captions.template_caption(
                                       dark, "bag", "7"))

  names = class_prompts.dataset_prompt_names(captioned)
  examples = list(
      caption_reader.read_dataset(captioned, split="train", shuffle=False))
  assert len(examples) == 80
  for example in examples:
    caption = example[schema.CAPTION].numpy().decode()
    assert names[int(example[schema.LABEL])] in caption, caption
  manifest = split_manifest.read(captioned, "train")
  assert "synthetic templates" in manifest.settings["captions"]


def test_generate_tool_samples_a_text_cascade_with_a_frozen_stage(
    tmp_path, data, encoder):
  """tools/generate.py unchanged, with the shipped Fashion-MNIST cascade
  config and text stages in it: the base fine-tuned on class names (it
  records the prompts) and a frozen super-resolution stage that records
  none and takes the cascade's. Untrained weights: the pipeline is tested."""
  labelled, _ = data
  prompts = class_prompts.dataset_prompt_names(labelled)
  description = text_factory.describe(encoder)
  rng = np.random.default_rng(6)
  base = _built(
      diffusion_model.DiffusionModel(
          _text_unet(resolution=16, attention_resolutions=(16,)),
          num_timesteps=1000, text_encoder=description, class_prompts=prompts),
      rng)
  frozen_sr = _built(
      diffusion_model.DiffusionModel(
          _text_unet(resolution=32, attention_resolutions=(32,), num_heads=1,
                     low_res_resolution=16, aug_level_conditioning=True),
          num_timesteps=1000, conditioning_augmentation="gaussian",
          text_encoder=description), rng)
  base_dir = export.export_model(base, str(tmp_path / "base"))
  sr_dir = export.export_model(frozen_sr, str(tmp_path / "sr"))
  out = str(tmp_path / "synthetic")
  bindings = [
      f"BASE_MODEL_DIR = '{base_dir}'",
      f"SR_MODEL_DIR = '{sr_dir}'",
      "base/cascade.Stage.steps = 3",
      "sr/cascade.Stage.steps = 2",
      "synthetic_dataset.GenerationSettings.batch_size = 10",
      "synthetic_dataset.GenerationSettings.examples_per_shard = 10",
      "synthetic_dataset.GenerationSettings.progress_every_seconds = 0",
  ]
  result = subprocess.run([
      sys.executable,
      os.path.join(ROOT, "tools",
                   "generate.py"), f"--gin_file={GENERATION_GIN}",
      *[f"--gin_bindings={b}" for b in bindings], f"--real_data_dir={labelled}",
      "--total=20", f"--output_dir={out}"
  ], capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = split_manifest.read(out, "train")
  assert manifest.complete and manifest.class_counts == (2,) * 10
  assert manifest.settings["cascade"]["class_prompts"] == prompts
  summary = json.load(
      open(os.path.join(out, "summary.worker-00000-of-00001.json")))
  # The base stage is guided (1.25): 3 steps x 2, then 2 SR steps.
  assert summary["network_evaluations_per_image"] == 8

  # Prompts other than the recorded ones are refused; text stages that
  # record none need them given.
  with pytest.raises(ValueError, match="differ"):
    cascade_lib.Cascade([cascade_lib.Stage(base_dir)], text_encoder=encoder,
                        class_prompts=["a"] * 10)
  text_only = _built(
      diffusion_model.DiffusionModel(_text_unet(), num_timesteps=100,
                                     text_encoder=description), rng)
  text_only_dir = export.export_model(text_only, str(tmp_path / "text"))
  with pytest.raises(ValueError, match="class_prompts"):
    cascade_lib.Cascade([cascade_lib.Stage(text_only_dir)],
                        text_encoder=encoder)
  given = cascade_lib.Cascade([cascade_lib.Stage(text_only_dir)],
                              text_encoder=encoder, class_prompts=prompts[:3])
  assert given.num_classes == 3
