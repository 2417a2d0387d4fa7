"""Writing files so that a reader never sees a half-written one."""

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
