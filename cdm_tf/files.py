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
