"""Writing files so that a reader never sees a half-written one."""

import io
import json
import os
import uuid

import tensorflow as tf


def atomic_write_bytes(path, data):
  """Writes to a temporary name in the same directory, then renames."""
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


def check_writable_directory(directory):
  """Creates ``directory`` if needed and writes and removes a probe file in
  it: a job that writes its results at the end checks this first, so an
  unusable output directory costs no work.

  Raises:
    OSError: naming the directory and what went wrong.
  """
  probe = os.path.join(directory, f".write-probe-{uuid.uuid4().hex}")
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, "wb") as f:
      f.write(b"")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise OSError(f"{directory} is not a writable directory "
                  f"({getattr(e, 'message', None) or e}); give one that "
                  "can be created and written") from e


def atomic_write_json(path, obj):
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True)
                            + "\n").encode("utf-8"))


def atomic_write_figure(path, fig):
  """A matplotlib figure as a PNG, laid out tight, written atomically."""
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  atomic_write_bytes(path, buffer.getvalue())


def json_differences(path, record, ignore=()):
  """Top-level keys whose values differ between ``record`` and the JSON
  object stored at ``path`` (sorted), or None if there is no such file.

  For jobs that record their settings in their output directory and must
  refuse to continue one made with other settings.
  """
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    existing = json.load(f)
  keys = (set(existing) | set(record)) - set(ignore)
  return sorted(k for k in keys if existing.get(k) != record.get(k))
