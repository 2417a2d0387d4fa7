"""Writing files so that a reader never sees a half-written one."""

import io
import json
import os
import re
import time
import uuid

import tensorflow as tf

# What tf.io.gfile.glob (fnmatch) treats specially, the backslash being its
# escape character.
_GLOB_SPECIAL = "\\*?[]"
# ``<path>.tmp-<uuid hex>``: the temporary sibling of an atomic write or of
# an exported directory.
TMP_MARKER = ".tmp-"
_TMP_SUFFIX_RE = re.compile(r"^\.tmp-[0-9a-f]{32}$")
# An atomic write's temporary file lives for one write call: one untouched
# for this long belongs to a killed process, not to a concurrent writer.
STALE_WRITE_SECONDS = 3600.0


def read_json(path):
  """The JSON value stored at ``path``. A missing file raises
  FileNotFoundError and one that is not JSON (cut short, overwritten)
  ValueError, both naming the file."""
  try:
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f"{path}: no such file") from e
  try:
    return json.loads(text)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise ValueError(f"{path} is not valid JSON ({e}): it was cut short or "
                     "overwritten; restore it, or remove it (and what it "
                     "describes) to have it written again") from e


def glob_escape(path):
  """``path`` with glob metacharacters escaped, so that tf.io.gfile.glob
  takes it literally (a directory named ``data[1]`` or ``a*b``)."""
  return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in path)


def glob_in(directory, pattern):
  """tf.io.gfile.glob of the file name ``pattern`` inside ``directory``,
  the directory taken literally whatever characters its name holds."""
  return tf.io.gfile.glob(os.path.join(glob_escape(directory), pattern))


def temporaries_of(path):
  """The ``<path>.tmp-<uuid hex>`` siblings of ``path`` (files or
  directories), sorted."""
  path = path.rstrip("/")
  base = os.path.basename(path)
  found = glob_in(os.path.dirname(path), glob_escape(base) + TMP_MARKER + "*")
  return sorted(
      p for p in found if _TMP_SUFFIX_RE.match(os.path.basename(p)[len(base):]))


def remove_temporaries_of(path, older_than_seconds=0.0):
  """Deletes the temporaries of ``path`` left by killed writers: those last
  modified at least ``older_than_seconds`` ago; returns their paths."""
  now_ns = time.time_ns()
  removed = []
  for tmp in temporaries_of(path):
    try:
      if older_than_seconds > 0 and (
          now_ns - tf.io.gfile.stat(tmp).mtime_nsec) / 1e9 < older_than_seconds:
        continue
      if tf.io.gfile.isdir(tmp):
        tf.io.gfile.rmtree(tmp)
      else:
        tf.io.gfile.remove(tmp)
      removed.append(tmp)
    except tf.errors.NotFoundError:
      pass  # removed meanwhile by another process cleaning up
  return removed


def atomic_write_bytes(path, data):
  """Writes to a temporary name in the same directory, then renames.

  Temporaries of ``path`` that a killed process left behind long ago are
  removed first; recent ones may belong to a concurrent writer of the same
  path, so they are left alone.
  """
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  remove_temporaries_of(path, older_than_seconds=STALE_WRITE_SECONDS)
  tmp = f"{path}{TMP_MARKER}{uuid.uuid4().hex}"
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
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) +
                            "\n").encode("utf-8"))


def atomic_write_figure(path, fig):
  """A matplotlib figure as a PNG, laid out tight, written atomically."""
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  atomic_write_bytes(path, buffer.getvalue())
