"""Content-keyed cache entries: names, formats, candidate directories,
damaged or foreign files, unwritable directories."""

import os

import numpy as np
import pytest

from cdm_tf import content_cache
from cdm_tf import files as files_lib
from cdm_tf import fingerprints


def _entry(directories, extension=content_cache.JSON, description=None):
  return content_cache.Entry.of(
      description or {"files": [["a", 1]], "version": 1}, prefix="thing-",
      extension=extension, directories=directories, what="thing cache")


def test_name_and_key_follow_the_description(tmp_path):
  entry = _entry([str(tmp_path)])
  key = fingerprints.of_json({"version": 1, "files": [["a", 1]]})
  assert entry.key == key
  assert entry.name == f"thing-{key[:16]}.json"
  assert _entry([str(tmp_path)], description={"other": 2}).key != key
  with pytest.raises(ValueError, match="unknown cache extension"):
    _entry([str(tmp_path)], extension=".pkl")


def test_directories_are_the_data_directory_then_cache_dir(tmp_path):
  data = [str(tmp_path / "d" / "a"), str(tmp_path / "d" / "b")]
  assert content_cache.directories(
      data, tmp_path / "c") == [str(tmp_path / "d"),
                                str(tmp_path / "c")]
  assert content_cache.directories(
      [str(tmp_path / "x" / "a"),
       str(tmp_path / "y" / "b")]) == []


@pytest.mark.parametrize("extension", [content_cache.JSON, content_cache.NPZ])
def test_written_payload_reads_back(tmp_path, extension):
  entry = _entry([str(tmp_path)], extension)
  payload = ({"counts": [1, 2]}
             if extension == content_cache.JSON else {"mean": np.arange(3.0)})
  path = entry.write(payload)
  assert path == os.path.join(str(tmp_path), entry.name)
  read, read_path = entry.read()
  assert read_path == path
  assert set(read) == set(payload)
  np.testing.assert_array_equal(next(iter(read.values())),
                                next(iter(payload.values())))


def test_damaged_foreign_or_rejected_entries_are_ignored(tmp_path):
  first, second = str(tmp_path / "first"), str(tmp_path / "second")
  entry = _entry([first, second])
  os.makedirs(first)
  with open(os.path.join(first, entry.name), "w") as f:
    f.write("{cut")
  assert entry.read() == (None, None)
  # Another key under this name is not trusted.
  files_lib.atomic_write_json(os.path.join(first, entry.name),
                              {"key": "0" * 64, "counts": [1]})
  assert entry.read() == (None, None)
  # The next directory's valid entry is found.
  _entry([second]).write({"counts": [5]})
  payload, path = entry.read()
  assert payload == {"counts": [5]} and path.startswith(second)
  assert entry.read(lambda p: "too short") == (None, None)


def test_unwritable_directories_are_skipped(tmp_path, monkeypatch):
  blocked = str(tmp_path / "blocked")
  real_write = files_lib.atomic_write_json

  def refuse_blocked(path, obj):
    if path.startswith(blocked):
      raise PermissionError(f"read-only: {path}")
    real_write(path, obj)

  monkeypatch.setattr(files_lib, "atomic_write_json", refuse_blocked)
  assert _entry([blocked]).write({"counts": [1]}) is None
  path = _entry([blocked, str(tmp_path / "cache")]).write({"counts": [1]})
  assert path.startswith(str(tmp_path / "cache"))
