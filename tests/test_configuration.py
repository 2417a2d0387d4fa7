import json

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
