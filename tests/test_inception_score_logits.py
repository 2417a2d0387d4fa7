"""The Inception Score on the 2015 Inception's 1008 logits, without torch.

torch.save files are written here by hand, in both formats the reader
supports (legacy: five pickles and raw storages; zip: data.pkl and
data/<key>), with pickle opcodes for what only torch could pickle (tensor
rebuilds, storage ids). They hold tiny tensors, strided, offset and (legacy)
on storage views, whose arrays the reader must return exactly; and a logits
layer of the real shape [1008, 2048] for the checks of pytorch-fid's file.
The network is stood in for by fixed features: building Inception-v3 is
slow, and the logits only need its pool3 (tests/test_fid_inception.py checks
those against the original network). Last, the pipeline job hands the file
to every step that scores ImageNet samples.
"""

import collections
import json
import logging
import pickle
import struct
import zipfile

import numpy as np
import pytest

from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import fid_inception
from cdm_tf.metrics import inception_logits
from cdm_tf.metrics import inception_score
from cdm_tf.metrics import networks
from cdm_tf.metrics import sample_quality
from cdm_tf.metrics import torchscript_archive
from cdm_tf.pipeline import job

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
FC_SHAPE = (inception_logits.NUM_LOGITS, fid_inception.FEATURE_DIM)
STORAGE_TYPES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage"
}

# ------------------------------------------- torch.save files, by hand


def _text(value):
  data = value.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
  return b"J" + struct.pack("<i", value)


def _ints(values):
  return b"(" + b"".join(_int(v) for v in values) + b"t"


_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"  # OrderedDict()


def _storage(storage_type, key, numel, legacy, view=None):
  """Pickle opcodes of a storage's persistent id."""
  fields = (_text("storage") + b"ctorch\n" + storage_type.encode() + b"\n" +
            _text(key) + _text("cpu") + _int(numel))
  if legacy:
    fields += b"N" if view is None else (b"(" + _text(view[0]) + _int(view[1]) +
                                         _int(view[2]) + b"t")
  return b"(" + fields + b"tQ"


def _tensor(storage, offset, size, stride):
  """_rebuild_tensor_v2(storage, offset, size, stride, False, {})."""
  return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + _int(offset) +
          _ints(size) + _ints(stride) + b"\x89" + _ORDERED_DICT + b"tR")


def _state_dict_pickle(entries):
  """An OrderedDict of (key, value opcodes)."""
  return (b"\x80\x02" + _ORDERED_DICT + b"(" +
          b"".join(_text(key) + value for key, value in entries) + b"u.")


def _write_legacy(path, object_pickle, storages):
  """The legacy layout: magic number, protocol, system info, the object,
  the storage keys, then each storage's element count and bytes."""
  with open(path, "wb") as f:
    for header in (LEGACY_MAGIC, 1001, {
        "protocol_version": 1001, "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4}
    }):
      f.write(pickle.dumps(header, protocol=2))
    f.write(object_pickle)
    f.write(pickle.dumps([key for key, _ in storages], protocol=2))
    for _, values in storages:
      f.write(struct.pack("<q", values.size))
      f.write(values.astype(values.dtype.newbyteorder("<")).tobytes())


def _write_zip(path, object_pickle, storages):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", object_pickle)
    archive.writestr("archive/byteorder", "little")
    archive.writestr("archive/version", "3\n")
    for key, values in storages:
      archive.writestr(f"archive/data/{key}", values.tobytes())


def _write_state_dict(path, arrays, legacy=True):
  """{key: numpy array} as torch.save writes a state dict, each array on a
  storage of its own."""
  entries, storages = [], []
  for index, (key, array) in enumerate(arrays.items()):
    array = np.ascontiguousarray(array)
    strides = tuple(s // array.itemsize for s in array.strides)
    storage = _storage(STORAGE_TYPES[array.dtype], str(index), array.size,
                       legacy)
    entries.append((key, _tensor(storage, 0, array.shape, strides)))
    storages.append((str(index), array.reshape(-1)))
  (_write_legacy if legacy else _write_zip)(path, _state_dict_pickle(entries),
                                            storages)


def _strided_state_dict(legacy):
  """Tensors on shared storages at offsets and strides, and their values."""
  floats = np.arange(10, dtype=np.float32)
  entries = [
      ("fc.weight",
       _tensor(_storage("FloatStorage", "0", 10, legacy), 2, (3, 2), (2, 1))),
      ("transposed",
       _tensor(_storage("FloatStorage", "0", 10, legacy), 0, (2, 3), (1, 2))),
      ("bn.num_batches_tracked",
       _tensor(_storage("LongStorage", "1", 1, legacy), 0, (), ())),
      ("double",
       _tensor(_storage("DoubleStorage", "2", 2, legacy), 0, (2,), (1,))),
  ]
  expected = {
      "fc.weight": [[2, 3], [4, 5], [6, 7]], "transposed": [[0, 2, 4],
                                                            [1, 3, 5]],
      "bn.num_batches_tracked": 7, "double": [0.5, -1.25]
  }
  if legacy:
    # A tensor on a view of storage "0": elements 4..7, from the second.
    entries.append(
        ("view",
         _tensor(_storage("FloatStorage", "0", 10, legacy, view=("v", 4, 4)), 1,
                 (2,), (1,))))
    expected["view"] = [5, 6]
  storages = [("0", floats), ("1", np.array([7], np.int64)),
              ("2", np.array([0.5, -1.25], np.float64))]
  return _state_dict_pickle(entries), storages, expected


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reader_returns_the_exact_arrays_of_both_formats(tmp_path, legacy):
  path = str(tmp_path / "state.pth")
  object_pickle, storages, expected = _strided_state_dict(legacy)
  (_write_legacy if legacy else _write_zip)(path, object_pickle, storages)
  state = torchscript_archive.load(path)
  assert isinstance(state, collections.OrderedDict)
  assert list(state) == list(expected)
  for key, values in expected.items():
    np.testing.assert_array_equal(state[key], values, err_msg=key)
  assert state["fc.weight"].dtype == np.float32
  assert state["bn.num_batches_tracked"].dtype == np.int64
  assert state["bn.num_batches_tracked"].shape == ()
  assert state["double"].dtype == np.float64


def _legacy_bytes(tmp_path):
  path = str(tmp_path / "good.pth")
  _write_legacy(path, *_strided_state_dict(True)[:2])
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.parametrize(
    "damage,message", [
        (lambda data: data[:-3], "truncated"),
        (lambda data: data[:40], "cannot read it as a legacy torch.save file"),
        (lambda data: b"\x80\x02" + data[2:12] + b"\x00" * 20,
         "cannot read it as a legacy torch.save file"),
        (lambda data: pickle.dumps(12345, protocol=2) + data[30:],
         "magic number 12345"),
        (lambda data: b"GIF89a" + data,
         "not a TorchScript archive or torch.save"),
        (lambda data: b"PK\x03\x04" + data, "damaged zip"),
    ], ids=[
        "cut_in_a_storage", "cut_in_the_pickle", "garbage_pickle",
        "wrong_magic", "not_torch", "bad_zip"
    ])
def test_damaged_files_give_an_error_naming_the_file(tmp_path, damage, message):
  path = str(tmp_path / "damaged.pth")
  with open(path, "wb") as f:
    f.write(damage(_legacy_bytes(tmp_path)))
  with pytest.raises(ValueError, match=message) as error:
    torchscript_archive.load(path)
  assert path in str(error.value)


def test_reader_refuses_code_in_a_legacy_pickle(tmp_path):
  path = str(tmp_path / "evil.pth")
  _write_legacy(path, b"\x80\x02cos\nsystem\n" + _text("true") + b"\x85R.", [])
  with pytest.raises(ValueError, match="unsupported global os.system"):
    torchscript_archive.load(path)


# ----------------------------------------- the logits layer of the file


def _fc_weight():
  rng = np.random.default_rng(0)
  return rng.normal(0, 0.05, FC_SHAPE).astype(np.float32)


def _kernels():
  """Two kernels of one shape (matched by value, not order) and another."""
  rng = np.random.default_rng(1)
  return {
      "Conv2d_1a_3x3.conv.weight": rng.normal(size=(4, 3, 3, 3)),
      "Mixed_5b.branch1x1.conv.weight": rng.normal(size=(2, 4, 1, 1)),
      "Mixed_5b.branch_pool.conv.weight": rng.normal(size=(2, 4, 1, 1))
  }


def _pytorch_fid_like(path, legacy=True, **changes):
  """A state dict laid out like pytorch-fid's, tiny but for fc."""
  arrays = {key: value.astype(np.float32) for key, value in _kernels().items()}
  arrays["Conv2d_1a_3x3.bn.running_var"] = np.ones(4, np.float32)
  arrays["fc.weight"] = _fc_weight()
  arrays["fc.bias"] = np.zeros(FC_SHAPE[0], np.float32)
  for key, value in changes.items():
    key = key.replace("__", ".")
    if value is None:
      del arrays[key]
    else:
      arrays[key] = value
  _write_state_dict(path, arrays, legacy)
  return path


def _references():
  """The kernels in another order than the file's, as the FID file names
  them."""
  kernels = list(_kernels().values())
  return [("net.layers.mixed.tower_2.conv", kernels[2].astype(np.float32)),
          ("net.layers.mixed.conv", kernels[1].astype(np.float32)),
          ("net.layers.conv", kernels[0].astype(np.float32))]


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_fc_weight_is_read_exactly_after_the_checks(tmp_path, legacy):
  path = _pytorch_fid_like(str(tmp_path / "fid.pth"), legacy)
  weight = inception_logits.read_fc_weight(path, _references())
  assert weight.shape == (1008, 2048) and weight.dtype == np.float32
  np.testing.assert_array_equal(weight, _fc_weight())


@pytest.mark.parametrize(
    "changes,message", [
        ({"fc__weight": None
         }, "no 'fc.weight' \\(the 1008-way logits layer\\)"),
        ({"fc__weight": np.zeros((1000, 2048), np.float32)
         }, "fc.weight has shape \\(1000, 2048\\), expected \\[1008, 2048\\]"),
        ({"fc__weight": np.zeros(
            (2048, 1008), np.float32)}, "has shape \\(2048, 1008\\)"),
        ({
            "fc__weight": np.where(
                np.arange(1008 * 2048).reshape(FC_SHAPE) == 5, np.nan,
                0).astype(np.float32)
        }, "holds 1 non-finite values"),
        ({"fc__weight": np.zeros(FC_SHAPE, np.int64)}, "is int64, not float"),
        ({
            "Mixed_5b__branch_pool__conv__weight": np.zeros(
                (2, 4, 1, 1), np.float32)
        }, "equals the FID Inception's net.layers.mixed.tower_2.conv"),
    ], ids=[
        "missing", "1000_classes", "transposed", "nan", "integer",
        "other_network"
    ])
def test_bad_weights_files_give_errors_naming_file_and_problem(
    tmp_path, changes, message):
  path = _pytorch_fid_like(str(tmp_path / "fid.pth"), **changes)
  with pytest.raises(ValueError, match=message) as error:
    inception_logits.read_fc_weight(path, _references())
  assert path in str(error.value)


def test_a_file_without_a_state_dict_or_at_all_is_refused(tmp_path):
  path = str(tmp_path / "tensor.pth")
  _write_legacy(
      path, b"\x80\x02" + _tensor(_storage("FloatStorage", "0", 2, True), 0,
                                  (2,), (1,)) + b".",
      [("0", np.zeros(2, np.float32))])
  with pytest.raises(ValueError, match="holds a ndarray, not a state dict"):
    inception_logits.read_fc_weight(path, [])
  with pytest.raises(FileNotFoundError):
    inception_logits.read_fc_weight(str(tmp_path / "missing.pth"), [])


# ------------------------------------------------- logits and the score


class _Pool3(features_lib.FeatureExtractor):
  """Stands for the FID Inception: its input is already the features."""

  def __init__(self, tag="pool3", weights_path=None, logits=False):
    self._tag = tag
    self.weights_path = weights_path
    self._logits = logits

  @property
  def name(self):
    return f"stand-in {self._tag}"

  @property
  def fingerprint(self):
    return f"fingerprint of {self._tag}"

  @property
  def has_logits(self):
    return self._logits

  def prepare(self, image):
    return image

  def compute(self, prepared):
    return np.asarray(prepared, np.float32), None


def test_logits_are_pool3_times_the_weight_without_bias():
  head = inception_logits.InceptionLogits(_Pool3(),
                                          [[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]])
  features = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)
  # By hand: [1*1+2*0, 1*0.5-2*1, 1*2+2*3], [0, 1, -3].
  expected = [[1.0, -1.5, 8.0], [0.0, 1.0, -3.0]]
  np.testing.assert_allclose(head.logits(features), expected, rtol=1e-7)
  pool3, logits = head.compute(features)
  np.testing.assert_array_equal(pool3, features)
  np.testing.assert_allclose(logits, expected, rtol=1e-7)
  assert logits.dtype == np.float32
  assert head.name == "Inception-v3 2015-12-05, 1008 logits"
  assert "1008 logits" in head.name and "2015" in head.name
  with pytest.raises(ValueError, match="expected features \\[N, 2\\]"):
    head.logits(np.zeros((2, 3)))


def _confident_features(count):
  """One-hot pool3 of 3 classes in turn: with fc = 50 I the logits are
  confident and evenly spread, so the IS is ~3 (the number of classes)."""
  return np.eye(3, dtype=np.float32)[np.arange(count) % 3]


def test_is_comes_from_the_features_at_hand_labelled_with_the_logits():
  pool3 = _Pool3()
  head = inception_logits.InceptionLogits(pool3, 50.0 * np.eye(3))
  features = _confident_features(30)
  # Features, not images: a second pass over images would raise.
  extracted = features_lib.ExtractedFeatures(features, None, pool3.name)
  assert sample_quality.scores_from_features(head, pool3)
  result = sample_quality.evaluate(extracted, pool3, {}, sample_counts=(30,),
                                   classifier=head)
  value = result.get("IS@30 (Inception-v3 2015-12-05, 1008 logits)")
  expected = inception_score.split_scores(features @ (50.0 * np.eye(3)))
  assert value.value == pytest.approx(expected.mean(), rel=1e-9)
  assert value.value == pytest.approx(3.0, rel=1e-6)
  assert value.num_samples == 30 and not result.notes


def test_logits_of_another_network_need_the_images():
  head = inception_logits.InceptionLogits(_Pool3("a"), np.eye(3))
  other = _Pool3("b")
  assert not sample_quality.scores_from_features(head, other)
  extracted = features_lib.ExtractedFeatures(_confident_features(30), None,
                                             other.name)
  with pytest.raises(ValueError, match="needs the generated images"):
    sample_quality.evaluate(extracted, other, {}, sample_counts=(30,),
                            classifier=head)


def test_without_logits_the_report_says_why_no_is_and_which_file(tmp_path):
  pool3 = _Pool3()
  extracted = features_lib.ExtractedFeatures(_confident_features(30), None,
                                             pool3.name)
  result = sample_quality.evaluate(extracted, pool3, {}, sample_counts=(30,))
  assert not [v for v in result.values if v.metric == "IS"]
  assert result.notes == [inception_logits.not_reported_note(pool3.name)]
  note = result.notes[0]
  assert note.startswith("IS not reported: stand-in pool3 has no logits.")
  for part in ("pt_inception-2015-12-05-6726825d.pth",
               "the fid_weights release of the pytorch-fid project",
               "--is_inception_weights", "1008 logits"):
    assert part in note
  assert result.format_table().endswith(f"note: {note}")
  path = str(tmp_path / "metrics.json")
  result.write_json(path)
  with open(path) as f:
    assert json.load(f)["notes"] == [note]


def test_networks_choose_the_is_network(caplog):
  pool3 = _Pool3()
  with caplog.at_level(logging.WARNING):
    assert networks.inception_score_classifier(pool3) is None
  assert "IS not reported: stand-in pool3 has no logits" in caplog.text
  with pytest.raises(ValueError, match="not both"):
    networks.inception_score_classifier(pool3, "model.keras", "fid.pth")
  with pytest.raises(ValueError, match="is for --feature_network=inception"):
    networks.inception_score_classifier(_Pool3(logits=True), None, "fid.pth")


def test_from_file_checks_the_94_convolutions_of_default_1(tmp_path):
  try:
    default_1 = fid_inception.default_weights_path()
  except FileNotFoundError as e:
    pytest.skip(f"FID Inception weights not installed ({e})")
  units = fid_inception.read_convolutions(default_1)
  # pytorch-fid's layout: kernels under other names, batch norms, fc.
  arrays = {}
  for index, unit in enumerate(units):
    arrays[f"unit{index}.conv.weight"] = unit["kernel"]
    arrays[f"unit{index}.bn.running_mean"] = unit["mean"]
  arrays["fc.weight"] = _fc_weight()
  arrays["fc.bias"] = np.zeros(FC_SHAPE[0], np.float32)
  path = str(tmp_path / inception_logits.WEIGHTS_FILE)
  _write_state_dict(path, arrays)
  head = inception_logits.from_file(path, _Pool3(weights_path=default_1))
  np.testing.assert_array_equal(head.fc_weight, _fc_weight())
  assert head.weights_path == path


def _job(**fields):
  return job.JobConfig(
      diffusion_stages=(job.DiffusionStage("base", ("base.gin",)),),
      generation_gin_files=("generation.gin",),
      classifier_gin_files=("classifier.gin",), cas_gin_files=("cas.gin",),
      **fields)


def test_pipeline_passes_the_weights_file_to_every_imagenet_scoring_step():
  config = _job(feature_network="inception", is_inception_weights="fid.pth",
                guidance_sweep_gin_files=("sweep.gin",))
  config.validate()
  scoring = [
      step for step in job.steps(config, "out")
      if step.tool in ("evaluate.py", "sweep.py")
  ]
  assert {step.tool for step in scoring} == {"evaluate.py", "sweep.py"}
  for step in scoring:
    assert "--is_inception_weights=fid.pth" in step.args, step.name
  with pytest.raises(ValueError, match="is_inception_weights is for"):
    _job(is_inception_weights="fid.pth").validate()  # classifier features
  with pytest.raises(ValueError, match="not both"):
    _job(feature_network="inception", is_inception_weights="fid.pth",
         is_classifier_model="model.keras").validate()
