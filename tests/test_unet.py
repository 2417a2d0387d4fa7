"""Tests for the diffusion U-Net (cdm_tf.models)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.models import UNet
from cdm_tf.models import sinusoidal_embedding

# A tiny two-level model: 16x16 -> 8x8, attention at side 8.
TINY = dict(resolution=16, in_channels=3, base_channels=16, channel_mult=(1, 2),
            num_res_blocks=1, attention_resolutions=(8,), num_heads=2,
            group_norm_groups=8)


def _model(**overrides):
  config = dict(TINY)
  config.update(overrides)
  model = UNet(**config)
  model.build()
  return model


def _random_inputs(model, batch_size=2, text_length=5, seed=0):
  """Random inputs of the right structure for `model`."""
  rng = np.random.default_rng(seed)
  inputs = {}
  for key, value in model.dummy_inputs(batch_size, text_length).items():
    if key == "label":
      inputs[key] = rng.integers(0, model.num_classes,
                                 batch_size).astype(np.int32)
    elif key == "text_mask":
      mask = np.ones((batch_size, text_length), bool)
      mask[:, -2:] = False  # The last two tokens are padding.
      inputs[key] = mask
    elif key in ("time", "aug_level"):
      inputs[key] = rng.uniform(0, 1000, batch_size).astype(np.float32)
    else:
      inputs[key] = rng.normal(size=value.shape).astype(np.float32)
  return inputs


def _perturb(model, seed=1, scale=0.1):
  """Adds noise to every weight so zero-initialised layers carry signal."""
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    value = variable.numpy()
    variable.assign(value +
                    scale * rng.normal(size=value.shape).astype(value.dtype))


def _run(model, inputs):
  return model(inputs, training=False).numpy()


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("learn_sigma,out_channels", [(False, 3), (True, 6)])
def test_output_shape_epsilon_and_learned_sigma(learn_sigma, out_channels):
  model = _model(learn_sigma=learn_sigma, num_classes=10)
  out = model(_random_inputs(model, batch_size=3))
  assert out.shape == (3, 16, 16, out_channels)
  assert out.dtype == tf.float32
  assert model.out_channels == out_channels


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_super_resolution_output_shape(interpolation):
  model = _model(low_res_resolution=8, low_res_interpolation=interpolation,
                 learn_sigma=True)
  inputs = _random_inputs(model)
  assert inputs["low_res"].shape == (2, 8, 8, 3)
  assert model(inputs).shape == (2, 16, 16, 6)
  # x_t and the upsampled low_res are concatenated: 6 input channels.
  assert model.input_conv.kernel.shape == (3, 3, 6, 16)


def test_aug_level_and_text_output_shapes():
  model = _model(low_res_resolution=8, aug_level_conditioning=True,
                 text_embed_dim=12, num_classes=4)
  assert model.input_names() == [
      "x_t", "time", "label", "low_res", "aug_level", "text_pooled",
      "text_tokens", "text_mask"
  ]
  for text_length in (1, 7):
    out = model(_random_inputs(model, text_length=text_length))
    assert out.shape == (2, 16, 16, 3)


def test_head_dim_and_no_updown_variant():
  model = _model(num_heads=None, head_dim=8, resblock_updown=False,
                 use_scale_shift_norm=False, channel_mult=(1, 2, 2),
                 attention_resolutions=(4, 8))
  assert model(_random_inputs(model)).shape == (2, 16, 16, 3)


def test_unknown_batch_size_in_tf_function():
  model = _model(num_classes=3)
  signature = {
      "x_t": tf.TensorSpec((None, 16, 16, 3), tf.float32),
      "time": tf.TensorSpec((None,), tf.float32),
      "label": tf.TensorSpec((None,), tf.int32),
  }
  step = tf.function(lambda inputs: model(inputs, training=False),
                     input_signature=[signature])
  assert step(_random_inputs(model, batch_size=5)).shape == (5, 16, 16, 3)


# --------------------------------------------------------- initialisation


def test_untrained_model_predicts_zero():
  model = _model(num_classes=5, learn_sigma=True, low_res_resolution=8,
                 aug_level_conditioning=True, text_embed_dim=12)
  out = _run(model, _random_inputs(model))
  np.testing.assert_array_equal(out, np.zeros_like(out))


def test_sinusoidal_embedding_values():
  features = sinusoidal_embedding(tf.constant([0.0, 500.0]), 8).numpy()
  assert features.shape == (2, 8)
  np.testing.assert_allclose(features[0], [1, 1, 1, 1, 0, 0, 0, 0])
  # Frequencies 10000 ** (-i / 4): the first is 1 rad per unit of time.
  np.testing.assert_allclose(features[1, 0], np.cos(500.0), atol=1e-4)
  np.testing.assert_allclose(features[1, 7], np.sin(500.0 * 10000**-0.75),
                             atol=1e-5)
  assert sinusoidal_embedding(tf.zeros([3]), 7).shape == (3, 7)


# ------------------------------------------------------------ conditioning


def _differs(a, b):
  return np.max(np.abs(a - b)) > 1e-4


def test_label_and_null_label_change_output():
  model = _model(num_classes=5)
  _perturb(model)
  inputs = _random_inputs(model)
  base = _run(model, inputs)
  other = dict(inputs, label=(inputs["label"] + 1) % 5)
  null = dict(inputs, label=np.full_like(inputs["label"], 5))  # Null label.
  assert _differs(base, _run(model, other))
  assert _differs(base, _run(model, null))
  assert _differs(_run(model, other), _run(model, null))
  assert model.label_embedding.input_dim == 6


def test_time_changes_output():
  model = _model()
  _perturb(model)
  inputs = _random_inputs(model)
  later = dict(inputs, time=inputs["time"] + 10.0)
  assert _differs(_run(model, inputs), _run(model, later))


def test_low_res_changes_output():
  model = _model(low_res_resolution=8)
  _perturb(model)
  inputs = _random_inputs(model)
  other = dict(inputs, low_res=inputs["low_res"] + 0.5)
  assert _differs(_run(model, inputs), _run(model, other))


def test_aug_level_changes_output():
  model = _model(low_res_resolution=8, aug_level_conditioning=True)
  _perturb(model)
  inputs = _random_inputs(model)
  other = dict(inputs, aug_level=inputs["aug_level"] + 10.0)
  assert _differs(_run(model, inputs), _run(model, other))


def test_text_changes_output_and_mask_hides_padding():
  model = _model(text_embed_dim=12)
  _perturb(model)
  inputs = _random_inputs(model, text_length=5)
  base = _run(model, inputs)
  pooled = dict(inputs, text_pooled=inputs["text_pooled"] + 1.0)
  assert _differs(base, _run(model, pooled))

  # Random changes: the tokens are layer-normalised, so adding a constant
  # would change nothing.
  rng = np.random.default_rng(7)
  tokens = inputs["text_tokens"].copy()
  tokens[:, 0] = rng.normal(size=tokens[:, 0].shape)  # A real token.
  assert _differs(base, _run(model, dict(inputs, text_tokens=tokens)))

  padded = inputs["text_tokens"].copy()
  padded[:, -1] = 100.0 * rng.normal(size=padded[:, -1].shape)  # Masked out.
  np.testing.assert_allclose(base, _run(model, dict(inputs,
                                                    text_tokens=padded)),
                             atol=1e-5)


def test_dropout_only_in_training():
  model = _model(dropout=0.5)
  _perturb(model)
  inputs = _random_inputs(model)
  np.testing.assert_array_equal(_run(model, inputs), _run(model, inputs))
  first = model(inputs, training=True).numpy()
  second = model(inputs, training=True).numpy()
  assert _differs(first, second)


# --------------------------------------------------------- serialisation

FULL = dict(num_classes=4, learn_sigma=True, low_res_resolution=8,
            aug_level_conditioning=True, text_embed_dim=12, dropout=0.1)


def test_config_round_trip_gives_identical_outputs():
  model = _model(**FULL)
  _perturb(model)
  clone = UNet.from_config(model.get_config())
  clone.build()
  clone.set_weights(model.get_weights())
  assert clone.get_config() == model.get_config()
  inputs = _random_inputs(model)
  np.testing.assert_array_equal(_run(model, inputs), _run(clone, inputs))


# Keras's own saving code calls np.array on TF variables (upstream warning).
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning")
def test_save_and_load_keras_file(tmp_path):
  model = _model(**FULL)
  _perturb(model)
  path = str(tmp_path / "unet.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, UNet)
  assert loaded.get_config() == model.get_config()
  inputs = _random_inputs(model)
  np.testing.assert_array_equal(_run(model, inputs), _run(loaded, inputs))


# ------------------------------------------------------- mixed precision


def test_mixed_bfloat16_returns_float32_close_to_float32():
  reference = _model(num_classes=4, low_res_resolution=8)
  _perturb(reference)
  inputs = _random_inputs(reference)
  expected = _run(reference, inputs)

  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    mixed = _model(num_classes=4, low_res_resolution=8)
  finally:
    keras.config.set_dtype_policy(previous)
  assert keras.config.dtype_policy().name == previous.name

  assert mixed.input_conv.compute_dtype == "bfloat16"
  assert mixed.output_conv.compute_dtype == "float32"
  assert all(w.dtype == "float32" for w in mixed.weights)
  mixed.set_weights(reference.get_weights())
  out = mixed(inputs, training=False)
  assert out.dtype == tf.float32
  error = np.max(np.abs(out.numpy() - expected))
  assert error < 0.05 * np.max(np.abs(expected)), error


# ------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_clear_errors():
  model = _model(num_classes=4, low_res_resolution=8)
  good = _random_inputs(model)

  def message(inputs):
    with pytest.raises(ValueError) as info:
      model(inputs)
    return str(info.value)

  assert "missing ['label']" in message(
      {k: v for k, v in good.items() if k != "label"})
  assert "unexpected ['aug_level']" in message(
      dict(good, aug_level=good["time"]))
  assert "'x_t'" in message(dict(good, x_t=np.zeros((2, 8, 8, 3), np.float32)))
  assert "'x_t'" in message(dict(good, x_t=np.zeros((2, 16, 16, 4),
                                                    np.float32)))
  assert "'low_res'" in message(
      dict(good, low_res=np.zeros((2, 4, 4, 3), np.float32)))
  assert "'time'" in message(dict(good, time=np.zeros((2, 1), np.float32)))
  assert "integer" in message(dict(good, label=np.zeros(2, np.float32)))
  assert "batch size" in message(dict(good, time=np.zeros(3, np.float32)))
  with pytest.raises(ValueError, match="dict"):
    model(good["x_t"])


def test_bad_configs_raise_clear_errors():
  with pytest.raises(ValueError, match="exactly one of num_heads"):
    UNet(**dict(TINY, head_dim=8))
  with pytest.raises(ValueError, match="not downsampling factors"):
    UNet(**dict(TINY, attention_resolutions=(2,)))
  with pytest.raises(ValueError, match="cannot be halved"):
    UNet(**dict(TINY, resolution=12, channel_mult=(1, 2, 2, 2)))
  with pytest.raises(ValueError, match="group_norm_groups"):
    UNet(**dict(TINY, group_norm_groups=32))
  with pytest.raises(ValueError, match="low_res_interpolation"):
    UNet(**dict(TINY, low_res_resolution=8, low_res_interpolation="area"))


# -------------------------------------------------------- parameter count


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out + c_out


def _norm(c):
  return 2 * c


def _res(c_in, c_out, emb, scale_shift=True):
  count = (_norm(c_in) + _conv(3, c_in, c_out) + emb * c_out *
           (2 if scale_shift else 1) + c_out * (2 if scale_shift else 1) +
           _norm(c_out) + _conv(3, c_out, c_out))
  if c_in != c_out:
    count += _conv(1, c_in, c_out)
  return count


def _attn(c):
  return _norm(c) + (c * 3 * c + 3 * c) + (c * c + c)


def test_parameter_count_one_level_by_hand():
  # 8x8, one level of 16 channels, one block, attention, 3 classes, learned
  # sigma. Written out term by term:
  model = _model(resolution=8, channel_mult=(1,), num_res_blocks=1,
                 attention_resolutions=(8,), num_heads=1, num_classes=3,
                 learn_sigma=True)
  time_mlp = (16 * 64 + 64) + (64 * 64 + 64)  # 5,248
  labels = 4 * 64  # 256 (incl. null)
  input_conv = 3 * 3 * 3 * 16 + 16  # 448
  # A 16 -> 16 residual block: norm, conv, AdaGN projection, norm, conv.
  res_16 = 32 + (9 * 16 * 16 + 16) + (64 * 32 + 32) + 32 + (9 * 16 * 16 + 16)
  # A 32 -> 16 decoder block adds a 1x1 skip conv.
  res_32_16 = (64 + (9 * 32 * 16 + 16) + (64 * 32 + 32) + 32 +
               (9 * 16 * 16 + 16) + (32 * 16 + 16))
  attention = 32 + (16 * 48 + 48) + (16 * 16 + 16)  # 1,120
  encoder = res_16 + attention
  middle = res_16 + attention + res_16
  decoder = 2 * (res_32_16 + attention)  # Skips: input conv, encoder block.
  output = 32 + (9 * 16 * 6 + 6)
  expected = (time_mlp + labels + input_conv + encoder + middle + decoder +
              output)
  assert res_16 == 6_784 and res_32_16 == 9_648
  assert expected == 50_982
  assert model.count_params() == expected


def test_parameter_count_two_levels_by_formula():
  # Conv up/down-sampling, additive embedding, two blocks, no attention at
  # side 16, low_res input (6 input channels), aug level, no classes.
  model = _model(resolution=16, channel_mult=(1, 2), num_res_blocks=2,
                 attention_resolutions=(8,), resblock_updown=False,
                 use_scale_shift_norm=False, low_res_resolution=8,
                 aug_level_conditioning=True)
  e = 64
  expected = 2 * ((16 * e + e) + (e * e + e))  # time + aug level
  expected += _conv(3, 6, 16)
  # Encoder: side 16 (16 ch), downsample, side 8 (32 ch, attention).
  # Skips saved: 16 (input), 16, 16, 16 (down), 32, 32.
  expected += 2 * _res(16, 16, e, False) + _conv(3, 16, 16)
  expected += _res(16, 32, e, False) + _res(32, 32, e, False) + 2 * _attn(32)
  expected += 2 * _res(32, 32, e, False) + _attn(32)  # Middle.
  # Decoder side 8: three blocks fed skips 32, 32, 16, then upsample conv.
  expected += (_res(64, 32, e, False) + _res(64, 32, e, False) +
               _res(48, 32, e, False) + 3 * _attn(32) + _conv(3, 32, 32))
  # Decoder side 16: skips 16, 16, 16.
  expected += _res(48, 16, e, False) + 2 * _res(32, 16, e, False)
  expected += _norm(16) + _conv(3, 16, 3)
  assert model.count_params() == expected


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_low_res_upsampling_matches_tf_image_resize(interpolation):
  # The U-Net upsamples with fixed matrices (XLA has no bicubic kernel).
  model = _model(low_res_resolution=8, low_res_interpolation=interpolation)
  low_res = tf.random.stateless_uniform([2, 8, 8, 3], (1, 2), -1, 1)
  x = tf.zeros([2, 16, 16, 3])
  got = model._network_input({"x_t": x, "low_res": low_res})[..., 3:]  # pylint: disable=protected-access
  expected = tf.image.resize(low_res, (16, 16), method=interpolation)
  np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
  compiled = tf.function(model._network_input, jit_compile=True)  # pylint: disable=protected-access
  np.testing.assert_allclose(
      compiled({"x_t": x, "low_res": low_res})[..., 3:].numpy(),
      expected.numpy(), atol=1e-5)
