import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.diffusion import create_diffusion
from cdm_tf.diffusion import per_example_noise
from cdm_tf.diffusion_training import optimizers
from cdm_tf.models import export
from cdm_tf.models.diffusion_model import DiffusionModel
from cdm_tf.models.unet import UNet


def _unet(**kwargs):
  config = dict(resolution=8, base_channels=32, channel_mult=(1, 2),
                num_res_blocks=1, attention_resolutions=(4,), num_heads=2,
                num_classes=3)
  config.update(kwargs)
  return UNet(**config)


def _base(learning_rate=1e-3, **kwargs):
  model = DiffusionModel(_unet(learn_sigma=True), num_timesteps=100,
                         model_var_type="learned_range", loss_type="hybrid",
                         **kwargs)
  model.build_all(optimizers.create_optimizer("adam", learning_rate))
  return model


def _super_resolution(augmentation="gaussian"):
  model = DiffusionModel(
      _unet(low_res_resolution=4,
            aug_level_conditioning=augmentation == "gaussian"),
      num_timesteps=100, conditioning_augmentation=augmentation)
  model.build_all(optimizers.create_optimizer("adam", 1e-3))
  return model


def _batch(size, resolution=8, low_res=None, start=0):
  rng = np.random.default_rng(0)
  batch = {
      "x_start": tf.constant(
          rng.uniform(-1, 1, (size, resolution, resolution, 3)), tf.float32),
      "label": tf.range(size) % 3,
      "seed": per_example_noise.example_seeds(tf.range(start, start + size)),
  }
  if low_res:
    batch["low_res"] = tf.image.resize(batch["x_start"], (low_res, low_res))
  return batch


def test_training_overfits_a_fixed_batch():
  model = _base(learning_rate=2e-3, ema_decay=0.9)
  batch = _batch(8)
  step = tf.function(model.train_step)
  losses = [float(step(batch)["mse"]) for _ in range(40)]
  # Same examples and seeds every step: the epsilon MSE must come down.
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_ema_follows_the_weights_with_its_decay():
  model = _base(ema_decay=0.5)
  before = [v.numpy() for v in model.unet.trainable_variables]
  tf.function(model.train_step)(_batch(4))
  after = [v.numpy() for v in model.unet.trainable_variables]
  for ema, old, new in zip(model.ema_variables, before, after):
    np.testing.assert_allclose(ema.numpy(), 0.5 * old + 0.5 * new, atol=1e-6)


def test_ema_weights_are_swapped_in_and_restored():
  model = _base(ema_decay=0.0)  # EMA = latest weights
  for v in model.ema_variables:
    v.assign(tf.ones_like(v) * 0.25)
  training = [v.numpy() for v in model.unet.trainable_variables]
  with model.ema_weights() as unet:
    assert all(np.all(v.numpy() == 0.25) for v in unet.trainable_variables)
  for v, old in zip(model.unet.trainable_variables, training):
    np.testing.assert_array_equal(v.numpy(), old)


def test_per_example_losses_do_not_depend_on_the_batch():
  model = _base()
  batch = _batch(4)
  full = model.loss_terms(batch, training=False)["loss"].numpy()
  # Each half of the batch on its own (same pixels, same seeds) gets the
  # same per-example losses as inside the full batch.
  for part in (slice(0, 2), slice(2, 4)):
    alone = {k: v[part] for k, v in batch.items()}
    np.testing.assert_allclose(
        model.loss_terms(alone, training=False)["loss"].numpy(), full[part],
        rtol=1e-5)


@pytest.mark.parametrize("augmentation", ["gaussian", "blur", "none"])
def test_super_resolution_trains_and_samples(augmentation):
  model = _super_resolution(augmentation)
  batch = _batch(4, low_res=4)
  metrics = tf.function(model.train_step)(batch)
  assert np.isfinite(float(metrics["loss"]))
  with model.ema_weights():
    samples = model.sample(
        batch["seed"], labels=batch["label"], low_res=batch["low_res"],
        diffusion=create_diffusion("cosine", 100, "5"),
        aug_level=0.25 if augmentation == "gaussian" else 0.0)
  assert samples.shape == (4, 8, 8, 3)
  assert np.abs(samples.numpy()).max() <= 1.0 + 1e-6


def test_guidance_weight_changes_class_conditional_samples():
  model = _base(ema_decay=0.0)
  step = tf.function(model.train_step)
  for _ in range(3):  # move the zero-initialized output layers
    step(_batch(4))
  seeds = per_example_noise.example_seeds(tf.range(2))
  diffusion = create_diffusion("cosine", 100, "5",
                               model_var_type="learned_range")
  plain = model.sample(seeds, labels=[0, 1], diffusion=diffusion)
  guided = model.sample(seeds, labels=[0, 1], diffusion=diffusion,
                        guidance_weight=3.0)
  again = model.sample(seeds, labels=[0, 1], diffusion=diffusion)
  np.testing.assert_allclose(plain.numpy(), again.numpy(), atol=1e-6)
  assert np.abs(plain.numpy() - guided.numpy()).max() > 1e-4
  with pytest.raises(ValueError, match="labels"):
    model.sample(seeds, diffusion=diffusion)


def test_export_round_trip_samples_identically(tmp_path):
  model = _super_resolution("gaussian")
  tf.function(model.train_step)(_batch(4, low_res=4))
  path = export.export_model(model, str(tmp_path / "export"))
  loaded = export.load_model(path)
  assert loaded.diffusion_config == model.diffusion_config
  assert loaded.conditioning_augmentation == "gaussian"
  batch = _batch(2, low_res=4)
  kwargs = dict(labels=batch["label"], low_res=batch["low_res"],
                diffusion=create_diffusion("cosine", 100, "4"), aug_level=0.1)
  with model.ema_weights():
    expected = model.sample(batch["seed"], **kwargs).numpy()
  np.testing.assert_allclose(
      loaded.sample(batch["seed"], **kwargs).numpy(), expected, atol=1e-5)
  assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_get_config_round_trip():
  model = _super_resolution("blur")
  clone = DiffusionModel.from_config(model.get_config())
  assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("unet_kwargs,model_kwargs,match", [
    (dict(learn_sigma=True), dict(), "learn_sigma"),
    (dict(), dict(conditioning_augmentation="gaussian"), "super-resolution"),
    (dict(low_res_resolution=4), dict(conditioning_augmentation="gaussian"),
     "aug_level_conditioning"),
    (dict(), dict(conditioning_augmentation="noise"), "unknown"),
    (dict(), dict(label_dropout=1.0), "label_dropout"),
])
def test_inconsistent_settings_raise(unet_kwargs, model_kwargs, match):
  with pytest.raises(ValueError, match=match):
    DiffusionModel(_unet(**unet_kwargs), num_timesteps=100, **model_kwargs)


def test_loss_scaling_gives_the_same_step_as_plain_training():
  # float16 training scales the loss; the step itself must not change.
  weights = {}
  for loss_scaling in (False, True):
    keras.utils.set_random_seed(0)
    model = DiffusionModel(_unet(learn_sigma=True), num_timesteps=100,
                           model_var_type="learned_range", loss_type="hybrid",
                           clip_grad_norm=0.5)
    model.build_all(
        optimizers.create_optimizer("adam", 1e-3, loss_scaling=loss_scaling))
    metrics = tf.function(model.train_step)(_batch(4))
    weights[loss_scaling] = ([
        v.numpy() for v in model.unet.trainable_variables
    ], float(metrics["grad_norm"]))
  (plain, plain_norm), (scaled, scaled_norm) = weights[False], weights[True]
  assert scaled_norm == pytest.approx(plain_norm, rel=1e-4)
  for a, b in zip(plain, scaled):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_export_fingerprint_follows_the_weights(tmp_path):
  model = _super_resolution("gaussian")
  model.build_all()
  first = export.export_model(model, str(tmp_path / "a"))
  again = export.export_model(model, str(tmp_path / "b"))
  assert (
      export.weights_fingerprint(first) == export.weights_fingerprint(again))
  model.ema_variables[0].assign(model.ema_variables[0] + 1.0)
  changed = export.export_model(model, str(tmp_path / "c"))
  assert (export.weights_fingerprint(changed)
          != export.weights_fingerprint(first))
