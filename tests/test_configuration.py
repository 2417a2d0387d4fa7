import json
import os

import gin
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files


def test_missing_gin_file_is_named(tmp_path):
  with pytest.raises(configuration.ConfigError, match="not found.*nope.gin"):
    configuration.parse_gin([str(tmp_path / "nope.gin")], [])


def test_bad_binding_is_reported_with_the_binding(tmp_path):
  gin_file = tmp_path / "ok.gin"
  gin_file.write_text("")
  with pytest.raises(configuration.ConfigError, match="not_a_module.f.x"):
    configuration.parse_gin([str(gin_file)], ["not_a_module.f.x = 1"])


def test_unclosed_binding_is_a_config_error():
  with pytest.raises(configuration.ConfigError, match="bad gin configuration"):
    configuration.parse_gin([], ["a.b = (1, 2"])


def test_atomic_json_write_replaces_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "report.json"
  files.atomic_write_json(str(path), {"a": 1})
  files.atomic_write_json(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 2}
  assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
  path = tmp_path / "report.json"
  files.atomic_write_json(str(path), {"a": 1})

  def broken_rename(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(tf.io.gfile, "rename", broken_rename)
  with pytest.raises(OSError, match="disk full"):
    files.atomic_write_json(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files that import the configurables the bindings below name.
KIND_GIN_FILES = [
    os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin"),
    os.path.join(ROOT, "gin", "classifiers", "fashion_mnist", "resnet_tiny.gin")
]


@pytest.fixture()
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize(
    "binding,message",
    [
        ("trainer.train.num_steps = 'ten'",
         "num_steps = 'ten' is a string, but the parameter takes a number "
         "\\(default 1000\\)"),
        ("unet.UNet.channel_mult = 3", "channel_mult = 3 is a number, but the "
         "parameter takes a sequence"),
        # No default: the dataclass field's annotation (int) says what it takes.
        ("recipes.ClassifierRecipe.batch_size = [8]",
         "batch_size = \\[8\\] is a sequence, but the parameter takes a "
         "number$"),
        # Optional[float]: a number or None.
        ("recipes.ClassifierRecipe.weight_decay = 'x'",
         "weight_decay = 'x' is a "
         "string"),
    ])
def test_binding_of_the_wrong_kind_is_refused_while_parsing(
    clean_gin, binding, message):
  del clean_gin
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.parse_gin(KIND_GIN_FILES, [binding])


@pytest.mark.parametrize(
    "binding",
    [
        "trainer.train.num_steps = 2.0",  # int and float are both numbers
        "unet.UNet.dropout = None",  # None switches a setting off
        "unet.UNet.channel_mult = [1, 2]",  # a list for a tuple
        "recipes.ClassifierRecipe.weight_decay = None",
        "recipes.ClassifierRecipe.learning_rate = 1",
    ])
def test_bindings_of_the_right_kind_are_accepted(clean_gin, binding):
  del clean_gin
  configuration.parse_gin(KIND_GIN_FILES, [binding])
