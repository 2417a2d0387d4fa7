"""The FID Inception port: the TorchScript reader, the Keras network, resizing.

The network's features on real photos are compared with values the
original TorchScript network computed (tests/data/fid_inception_reference.json,
written by tools/check_fid_inception.py with torch), so the port is checked
without torch here.
"""

import json
import os
import struct
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.metrics import fid
from cdm_tf.metrics import fid_inception
from cdm_tf.metrics import torchscript_archive
from tests import real_photo_records as records

REFERENCE = os.path.join(os.path.dirname(__file__), "data",
                         "fid_inception_reference.json")
# Parameters of the 94 units: kernels plus beta, mean and variance.
NUM_PARAMETERS = 21_802_784


def _weights_path():
  try:
    return fid_inception.default_weights_path()
  except FileNotFoundError as e:
    pytest.skip(f"FID Inception weights not installed ({e}); `make setup` "
                f"installs them: {fid_inception.INSTALL_HINT}")


# ------------------------------------------- a hand-made TorchScript archive


def _text(value):
  data = value.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
  return b"J" + struct.pack("<i", value)


def _tensor(storage_type, key, numel, offset, size, stride):
  """Pickle opcodes of _rebuild_tensor_v2(storage, offset, size, stride)."""
  storage = (b"((" + _text("storage") + b"ctorch\n" + storage_type.encode() +
             b"\n" + _text(key) + _text("cpu") + _int(numel) + b"tQ")
  return (b"ctorch._utils\n_rebuild_tensor_v2\n" + storage + _int(offset) +
          b"(" + b"".join(_int(s) for s in size) + b"t" + b"(" +
          b"".join(_int(s) for s in stride) + b"t" + b"\x89" +
          b"ccollections\nOrderedDict\n)R" + b"tR")


def _archive(path, body, storages):
  pickled = (b"\x80\x02c__torch__.demo\nBlock\n)\x81}(" + body + b"ub.")
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("demo/data.pkl", pickled)
    archive.writestr("demo/version", "3\n")
    for key, data in storages.items():
      archive.writestr(f"demo/data/{key}", data)


def test_reader_rebuilds_strided_tensors_and_modules(tmp_path):
  path = str(tmp_path / "demo.pt")
  floats = np.arange(6, dtype="<f4")
  # bfloat16 of 1.0, -2.0, 0.5 is the top half of their float32 bits.
  bf16 = (np.array([1.0, -2.0, 0.5], "<f4").view("<u4") >> 16).astype("<u2")
  body = (_text("transposed") + _tensor("FloatStorage", "0", 6, 0, (3, 2),
                                        (1, 3)) + _text("offset") +
          _tensor("FloatStorage", "0", 6, 4, (2,), (1,)) + _text("halves") +
          _tensor("BFloat16Storage", "1", 3, 0, (3,), (1,)) + _text("stride") +
          _int(2) + _text("padding") + b"ctorch.jit._pickle\nbuild_intlist\n(" +
          _int(0) + _int(1) + b"l" + b"\x85R")
  _archive(path, body, {"0": floats.tobytes(), "1": bf16.tobytes()})
  root = torchscript_archive.load(path)
  assert root.type_name == "__torch__.demo.Block"
  np.testing.assert_array_equal(root.attributes["transposed"],
                                [[0, 3], [1, 4], [2, 5]])
  np.testing.assert_array_equal(root.attributes["offset"], [4, 5])
  np.testing.assert_array_equal(root.attributes["halves"], [1.0, -2.0, 0.5])
  assert root.attributes["transposed"].dtype == np.float32
  assert root.attributes["stride"] == 2
  assert root.attributes["padding"] == [0, 1]


def test_reader_refuses_code_and_tensors_past_their_storage(tmp_path):
  path = str(tmp_path / "evil.pt")
  _archive(path, _text("x") + b"cos\nsystem\n" + _text("true") + b"\x85R", {})
  with pytest.raises(ValueError, match="unsupported global os.system"):
    torchscript_archive.load(path)
  _archive(path,
           _text("x") + _tensor("FloatStorage", "0", 2, 1, (2,), (1,)),
           {"0": np.zeros(2, "<f4").tobytes()})
  with pytest.raises(ValueError, match="runs past its storage"):
    torchscript_archive.load(path)
  with open(path, "wb") as f:
    f.write(b"not a zip")
  with pytest.raises(ValueError, match="not a TorchScript archive"):
    torchscript_archive.load(path)


def test_weights_file_holds_the_94_units_of_inception_v3():
  units = fid_inception.read_convolutions(_weights_path())
  assert len(units) == fid_inception.NUM_CONVOLUTIONS
  assert sum(
      u["kernel"].size + 3 * u["beta"].size for u in units) == NUM_PARAMETERS
  first, last = units[0], units[-1]
  assert first["kernel"].shape == (32, 3, 3, 3) and first["stride"] == 2
  assert last["name"] == "net.layers.mixed_10.tower_2_conv"
  assert last["kernel"].shape == (192, 2048, 1, 1)
  assert all(u["kernel"].dtype == np.float32 for u in units)
  assert all((u["var"] > 0).all() for u in units)


# --------------------------------------------------------------- resizing


def test_resize_samples_like_tf1_bilinear_without_half_pixel_centres():
  row = np.array([0.0, 10.0, 20.0, 30.0], np.float32).reshape(1, 4, 1)
  image = np.repeat(row, 4, axis=0)
  # Down 4 -> 2: output pixel j samples input position 2j, no blending.
  down = fid_inception.resize_like_tf_fid(image, size=2).numpy()[0, :, 0]
  np.testing.assert_allclose(down, [0.0, 20.0])
  # Up 4 -> 8: positions j / 2, clamped at the last pixel.
  up = fid_inception.resize_like_tf_fid(image, size=8).numpy()[0, :, 0]
  np.testing.assert_allclose(up, [0, 5, 10, 15, 20, 25, 30, 30])


def test_images_at_299_pass_unchanged():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
  resized = fid_inception.resize_like_tf_fid(images).numpy()
  np.testing.assert_array_equal(resized, images.astype(np.float32))


# ----------------------------------------------------- the Keras network


@pytest.fixture(scope="module")
def inception():
  return fid_inception.FidInception(_weights_path())


@pytest.fixture(scope="module")
def photo_features(inception):
  """Features of 8 real photos (each resized from its own size)."""
  names = [os.path.basename(p) for p, _ in records.foolbox_photo_paths()[:8]]
  features = np.concatenate(
      [inception(records.decode_photo(name)[tf.newaxis])[0] for name in names])
  return dict(zip(names, features))


def test_features_match_the_original_network(photo_features):
  with open(REFERENCE) as f:
    reference = json.load(f)
  assert reference["photos"]
  for photo in reference["photos"]:
    features = photo_features[photo["name"]]
    head = np.asarray(photo["head"])
    np.testing.assert_allclose(features[:len(head)], head, atol=1e-4)
    assert features.mean() == pytest.approx(photo["mean"], abs=1e-5)
    assert np.linalg.norm(features) == pytest.approx(photo["l2_norm"], rel=1e-5)
    assert list(np.argsort(-features)[:5]) == photo["top_indices"][:5]


def test_features_are_2048_d_non_negative_and_finite(inception, photo_features):
  features = np.stack(list(photo_features.values()))
  assert features.shape == (8, fid_inception.FEATURE_DIM)
  assert features.dtype == np.float32
  assert np.isfinite(features).all()
  # pool3 averages ReLU outputs: non-negative, typically ~0.2-0.3 on photos.
  assert features.min() >= 0.0
  assert 0.1 < features.mean() < 0.5
  assert inception.name == "Inception-v3 pool3"
  assert not inception.has_logits


def test_fid_of_photos_is_zero_to_itself_and_smaller_than_to_noise(
    inception, photo_features):
  features = np.stack(list(photo_features.values()))
  rng = np.random.default_rng(1)
  noise, _ = inception(rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8))

  # The first 128 of 2048 dimensions: scipy's sqrtm of a 2048x2048 matrix
  # takes ~40 s on 2 idle cores (far longer on busy ones), of 128x128 ms.
  def stats(f):
    return fid.statistics(f[:, :128], inception.name)

  halves = fid.fid(stats(features[:4]), stats(features[4:])).value
  to_noise = fid.fid(stats(features[:4]), stats(noise)).value
  to_itself = fid.fid(stats(features[:4]), stats(features[:4])).value
  assert 0 < halves < to_noise
  assert abs(to_itself) < 1e-5 * halves
