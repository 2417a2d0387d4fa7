"""Results computed once from their inputs and kept on disk under a key of
those inputs.

Class counts of a split, FID statistics of a split and text embeddings of a
prompt set are each expensive to compute and fully determined by a small
description of their inputs (file names and sizes, settings, a network's
fingerprint). Each is stored as one file named
``<prefix><key[:16]><extension>``, the key being ``fingerprints.of_json``
of that description, so changed inputs get a new file and never reuse a
stale one. The full key is stored inside as well (``"key"``) and checked
before an entry is trusted.

Two formats: ``.json`` (a JSON object) and ``.npz`` (named numpy arrays,
compressed).
An entry may live in several candidate directories (next to the data, then
a cache directory for read-only data): reading takes the first valid one,
ignoring with a warning any that is unreadable or holds another key (a
cache miss only recomputes); writing is atomic (``cdm_tf.files``), so a
reader never sees half a file, and goes to the first directory that
accepts it.
"""

import dataclasses
import io
import os
import zipfile

from absl import logging
import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf import fingerprints

JSON = ".json"
NPZ = ".npz"
_KEY = "key"
# Hex digits of the key in a file name: 64 bits tell apart any entries one
# directory will hold, and the full key inside settles the rest.
_NAME_DIGITS = 16
# What a damaged, cut or foreign file raises when read.
_UNREADABLE = (OSError, tf.errors.OpError, ValueError, KeyError, EOFError,
               zipfile.BadZipFile)


def directories(data_files=(), cache_dir=None):
  """Candidate directories of an entry: the data's directory (when all of
  ``data_files`` are in one), then ``cache_dir`` (when given)."""
  data_dirs = {os.path.dirname(os.fspath(f)) for f in data_files}
  found = [data_dirs.pop()] if len(data_dirs) == 1 else []
  if cache_dir:
    found.append(os.fspath(cache_dir))
  return found


@dataclasses.dataclass(frozen=True)
class Entry:
  """One cached result: its key and where it may be stored.

  Attributes:
    key: hex sha256 of the inputs' description.
    name: the file name, ``<prefix><key[:16]><extension>``.
    directories: where to look for it, and write it, in order.
    what: what it holds, for log messages (e.g. "class-count cache").
  """
  key: str
  name: str
  directories: tuple
  what: str

  @classmethod
  def of(cls, description, *, prefix, extension, directories, what):
    """The entry of a JSON-able ``description`` of the inputs."""
    if extension not in (JSON, NPZ):
      raise ValueError(f"unknown cache extension {extension!r}; expected "
                       f"{JSON!r} or {NPZ!r}")
    key = fingerprints.of_json(description)
    return cls(key, f"{prefix}{key[:_NAME_DIGITS]}{extension}",
               tuple(directories), what)

  @property
  def paths(self):
    return [os.path.join(d, self.name) for d in self.directories]

  def read(self, check=None):
    """The first stored payload with this key, and its path.

    Args:
      check: optional function(payload) -> None if the payload is usable,
        else a reason (str) to ignore it.

    Returns:
      (payload, path), or (None, None) when no directory holds a valid
      entry. The payload is the JSON object, or {name: numpy array} of an
      .npz (without the key).
    """
    for path in self.paths:
      if not tf.io.gfile.exists(path):
        continue
      try:
        payload = _load(path)
        stored_key = payload.pop(_KEY)
      except _UNREADABLE as e:
        logging.warning("ignoring unreadable %s %s: %s", self.what, path, e)
        continue
      reason = ("it holds another key" if str(stored_key) != self.key else
                check(payload) if check else None)
      if reason:
        logging.warning("ignoring %s %s: %s", self.what, path, reason)
        continue
      return payload, path
    return None, None

  def write(self, payload):
    """Stores ``payload`` (a JSON object, or {name: array} for .npz) with
    the key, in the first directory that accepts it.

    Returns:
      The path written, or None (with warnings) if no directory could be
      written.
    """
    payload = dict(payload)
    if self.name.endswith(JSON):
      payload[_KEY] = self.key
      write = files.atomic_write_json
    else:
      payload[_KEY] = np.str_(self.key)
      buffer = io.BytesIO()
      # Compressed: embeddings of short prompts are mostly padding zeros.
      np.savez_compressed(buffer, **payload)
      payload = buffer.getvalue()
      write = files.atomic_write_bytes
    for path in self.paths:
      try:
        write(path, payload)
        return path
      except (OSError, tf.errors.OpError) as e:
        logging.warning("cannot write %s %s (%s)", self.what, path, e)
    return None


def _load(path):
  """The payload stored at ``path``, with its key, as a dict."""
  if path.endswith(JSON):
    payload = files.read_json(path)
    if not isinstance(payload, dict):
      raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    return payload
  with tf.io.gfile.GFile(path, "rb") as f:
    with np.load(io.BytesIO(f.read()), allow_pickle=False) as arrays:
      return {name: arrays[name] for name in arrays.files}
