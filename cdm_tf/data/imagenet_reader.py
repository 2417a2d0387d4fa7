"""Reading real ImageNet TFRecords (TPU-tool or TFDS format) with tf.data.

``read_dataset`` yields ``{schema.IMAGE: uint8 [H, W, 3], schema.LABEL: int32
0-based, schema.SOURCE: file name}``.

Bad input fails with an error that names the TFRecord file and the record
index. TensorFlow's own errors (``DataLossError: corrupted record at 128``,
``jpeg::Uncompress failed``) name neither, and an error inside a tf.data
function cannot be caught in the graph, so the pipeline is built to never
let TensorFlow fail on a record:

* Records are read per file with ``ignore_errors()``, numbered, and followed
  by an end-of-file marker that carries the number of bytes read. Each record
  takes ``len + 16`` bytes in a TFRecord file, so a marker whose byte count
  is short of the file size means reading stopped at a corrupt (bad CRC) or
  truncated record, whose index is the marker's record count.
* Each record is parsed and decoded inside a one-element dataset with
  ``ignore_errors()`` followed by a fallback element: if parsing or decoding
  fails, the fallback (carrying file and index) comes out instead. Checks
  that do not need a decoder (missing image, label out of range, bytes that
  are no image) set a status directly, with a precise message.
* A final filter raises, naming file and record, on any bad status, or with
  ``skip_corrupt=True`` drops the record, counts it in a ``ReadStats`` and
  logs a warning.

For a record the decoder rejects the message cannot include TensorFlow's
reason; ``explain_record(path, index)`` re-reads that record eagerly and
returns it.

Limits: files must be uncompressed TFRecords (both ImageNet formats are); a
file cut exactly at a record boundary looks like a valid shorter file and is
not detected.
"""

import concurrent.futures
import dataclasses
import os

from absl import logging
import tensorflow as tf

from cdm_tf.data import image_decoding
from cdm_tf.data import schema

DEFAULT_SHUFFLE_BUFFER = 10_000
DEFAULT_CYCLE_LENGTH = 64

# A TFRecord holds, per record: uint64 length, uint32 CRC of the length, the
# data, uint32 CRC of the data.
RECORD_OVERHEAD_BYTES = 16

# How each split's shards are named: the TPU tool, then TFDS.
_SPLIT_PATTERNS = ("{split}-*-of-*", "*-{split}.tfrecord-*-of-*")
_GLOB_CHARACTERS = "*?["
_STAT_THREADS = 32

# Default of a missing label: far outside any label range.
_MISSING_LABEL = -(2**62)

# Status of an element inside the pipeline.
_RECORD = 0  # raw record, not yet decoded
_OK = 1  # decoded, passes all checks
_END_OF_FILE = 2  # end-of-file marker, the file was read to its end
_FIRST_PROBLEM = 3
_MISSING_IMAGE = 3
_MISSING_LABEL_STATUS = 4
_LABEL_OUT_OF_RANGE = 5
_NOT_AN_IMAGE = 6
_UNDECODABLE = 7
_DAMAGED_FILE = 8

# Keys of the elements inside the pipeline.
_PATH = "path"
_INDEX = "index"
_RAW = "raw"
_STATUS = "status"
_DETAIL = "detail"

# The pipeline's functions use tf.cond / tf.where, not Python control flow
# on tensors, so AutoGraph conversion is skipped (it only costs build time).
_no_autograph = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class FeatureKeys:
  """Where a record format keeps the image and the label."""
  image: str
  label: str
  label_offset: int  # stored label = 0-based label + label_offset


def feature_keys(record_format):
  """The ``FeatureKeys`` of ``schema.FORMAT_TPU`` or ``schema.FORMAT_TFDS``."""
  if record_format == schema.FORMAT_TPU:
    return FeatureKeys(schema.TPU_IMAGE, schema.TPU_LABEL,
                       schema.TPU_LABEL_OFFSET)
  if record_format == schema.FORMAT_TFDS:
    return FeatureKeys(schema.TFDS_IMAGE, schema.TFDS_LABEL, 0)
  raise ValueError(f"record_format must be one of {schema.FORMATS}, "
                   f"got {record_format!r}")


def _has_glob(path):
  return any(c in path for c in _GLOB_CHARACTERS)


def list_files(path_or_pattern, split=None):
  """The sorted TFRecord files named by a directory, pattern or list.

  Args:
    path_or_pattern: a directory (then ``split`` is required and the split's
      shards of either naming are found: ``train-00000-of-01024`` or
      ``imagenet2012-train.tfrecord-00000-of-01024``), a glob pattern, a
      file, or a list of any of these. ``gs://`` paths work.
    split: split name, e.g. ``"train"`` or ``"validation"``; only for
      directories.

  Returns:
    Sorted list of file paths, without duplicates.

  Raises:
    FileNotFoundError: nothing matches (the message names the path).
    ValueError: a directory without ``split``, or with shards of both
      namings.
  """
  if isinstance(path_or_pattern, (list, tuple)):
    if not path_or_pattern:
      raise ValueError("list_files: got an empty list of paths")
    found = set()
    for entry in path_or_pattern:
      found.update(list_files(entry, split))
    return sorted(found)

  path = os.fspath(path_or_pattern)
  if tf.io.gfile.isdir(path):
    if not split:
      raise ValueError(f"{path} is a directory: pass split= (e.g. 'train') "
                       "or a file pattern")
    patterns = [p.format(split=split) for p in _SPLIT_PATTERNS]
    matches = [tf.io.gfile.glob(os.path.join(path, p)) for p in patterns]
    non_empty = [m for m in matches if m]
    if len(non_empty) > 1:
      raise ValueError(f"{path} holds {split} shards of both namings "
                       f"({' and '.join(patterns)}); pass a file pattern")
    if not non_empty:
      raise FileNotFoundError(f"no {split!r} shards in {path} (looked for "
                              f"{' and '.join(patterns)})")
    return sorted(non_empty[0])

  if split:
    raise ValueError(f"split={split!r} is only used with a directory, but "
                     f"{path} is not one")
  if _has_glob(path):
    matches = [m for m in tf.io.gfile.glob(path)
               if not tf.io.gfile.isdir(m)]
    if not matches:
      raise FileNotFoundError(f"no files match {path}")
    return sorted(matches)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  return [path]


def file_sizes(files):
  """Byte sizes of ``files`` (stat in parallel threads: slow on buckets)."""
  def size(path):
    try:
      return tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError as e:
      raise FileNotFoundError(f"{path}: no such file") from e

  if len(files) <= 1:
    return [size(f) for f in files]
  with concurrent.futures.ThreadPoolExecutor(
      min(_STAT_THREADS, len(files))) as pool:
    return list(pool.map(size, files))


def detect_format(path):
  """Reads the first record of ``path`` and tells its format.

  Returns:
    ``schema.FORMAT_TPU`` or ``schema.FORMAT_TFDS``.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is empty, not a TFRecord file of tf.train.Example,
      or has neither format's image and label features (the message lists
      the keys it found).
  """
  path = os.fspath(path)
  try:
    first = list(tf.data.TFRecordDataset(path).take(1).as_numpy_iterator())
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f"{path}: no such file") from e
  except tf.errors.OpError as e:
    raise ValueError(f"{path}: cannot read its first record; the file is "
                     f"corrupt or not a TFRecord file ({e.message})") from e
  if not first:
    raise ValueError(f"{path}: the file holds no records (empty file)")
  try:
    example = tf.train.Example.FromString(first[0])
  except Exception as e:  # pylint: disable=broad-except
    # protobuf raises its own DecodeError; its module path varies by backend.
    raise ValueError(f"{path}: the first record is not a serialized "
                     f"tf.train.Example ({e})") from e
  keys = set(example.features.feature)
  for record_format in schema.FORMATS:
    wanted = feature_keys(record_format)
    if wanted.image in keys and wanted.label in keys:
      return record_format
  raise ValueError(
      f"{path}: the first record is neither the TPU-tool format (needs "
      f"{schema.TPU_IMAGE!r} and {schema.TPU_LABEL!r}) nor the TFDS format "
      f"(needs {schema.TFDS_IMAGE!r} and {schema.TFDS_LABEL!r}); its "
      f"features are {sorted(keys)}")


class ReadStats:
  """What ``read_dataset(..., skip_corrupt=True)`` skipped; read after use.

  Attributes:
    skipped_records: tf.Variable (int64), records dropped: bad or missing
      label, missing image, bytes that are no image, an image the decoder
      rejects, a record that is no tf.train.Example, or a corrupt record at
      which reading a file stopped.
    damaged_files: tf.Variable (int64), files whose reading stopped at a
      corrupt or truncated record. The records after that point are lost and
      not in ``skipped_records`` (their number cannot be known).

  Create it outside any ``tf.distribute`` strategy scope so the variables
  are plain host variables.
  """

  def __init__(self):
    with tf.init_scope(), tf.device("/cpu:0"):
      self.skipped_records = tf.Variable(
          0, dtype=tf.int64, trainable=False, name="skipped_records")
      self.damaged_files = tf.Variable(
          0, dtype=tf.int64, trainable=False, name="damaged_files")

  def as_dict(self):
    return {"skipped_records": int(self.skipped_records.numpy()),
            "damaged_files": int(self.damaged_files.numpy())}


def _records_of_file(path, size):
  """Numbered raw records of one file, then an end-of-file marker."""
  records = tf.data.TFRecordDataset(path).ignore_errors()
  records = records.map(_no_autograph(lambda raw: (raw, tf.constant(False))))
  end_marker = tf.data.Dataset.from_tensors(
      (tf.constant(b""), tf.constant(True)))

  def number(state, item):
    index, offset = state
    raw, is_end = item
    read_to_end = tf.equal(offset, size)
    status = tf.where(
        is_end, tf.where(read_to_end, _END_OF_FILE, _DAMAGED_FILE), _RECORD)
    detail = tf.where(
        tf.equal(status, _DAMAGED_FILE),
        tf.strings.join([
            "reading stopped at byte ", tf.strings.as_string(offset), " of ",
            tf.strings.as_string(size), ": this record is corrupt (bad "
            "checksum), the file is truncated or it could not be read; the "
            "rest of the file is lost"]),
        "")
    next_offset = (offset + tf.cast(tf.strings.length(raw), tf.int64)
                   + RECORD_OVERHEAD_BYTES)
    element = {_PATH: path, _INDEX: index, _RAW: raw, _STATUS: status,
               _DETAIL: detail}
    return (index + 1, next_offset), element

  return records.concatenate(end_marker).scan(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
      _no_autograph(number))


def _make_decoder(keys, num_classes):
  """A map function: raw record element -> decoded element with a status."""
  spec = {
      keys.image: tf.io.FixedLenFeature([], tf.string, default_value=""),
      keys.label: tf.io.FixedLenFeature([], tf.int64,
                                        default_value=_MISSING_LABEL),
  }
  first_label = str(keys.label_offset)
  last_label = str(keys.label_offset + num_classes - 1)

  def parse_and_decode(raw):
    features = tf.io.parse_single_example(raw, spec)
    encoded = features[keys.image]
    stored_label = features[keys.label]
    label = stored_label - keys.label_offset
    # In order of precedence. No quotes in messages: tf.debugging.Assert
    # would print them escaped.
    checks = [
        (tf.equal(tf.strings.length(encoded), 0), _MISSING_IMAGE,
         tf.constant(f"no image: feature {keys.image} is missing or empty")),
        (tf.equal(stored_label, _MISSING_LABEL), _MISSING_LABEL_STATUS,
         tf.constant(f"no label: feature {keys.label} is missing")),
        ((label < 0) | (label >= num_classes), _LABEL_OUT_OF_RANGE,
         tf.strings.join([
             f"label {keys.label} = ", tf.strings.as_string(stored_label),
             f" is outside {first_label}..{last_label} ({num_classes} "
             "classes)"])),
        (tf.logical_not(image_decoding.is_supported_image(encoded)),
         _NOT_AN_IMAGE,
         tf.constant(f"feature {keys.image} is not an image (not "
                     f"{image_decoding.SUPPORTED_FORMATS})")),
    ]
    status = tf.constant(_OK)
    detail = tf.constant("")
    for failed, failed_status, message in reversed(checks):
      status = tf.where(failed, failed_status, status)
      detail = tf.where(failed, message, detail)
    image = tf.cond(tf.equal(status, _OK),
                    lambda: image_decoding.decode_rgb(encoded),
                    image_decoding.empty_image)
    return image, tf.cast(label, tf.int32), status, detail

  def decode(element):
    def pass_through():  # End-of-file markers carry no record.
      return (image_decoding.empty_image(), tf.constant(-1),
              element[_STATUS], element[_DETAIL])

    image, label, status, detail = tf.cond(
        tf.equal(element[_STATUS], _RECORD),
        lambda: parse_and_decode(element[_RAW]), pass_through)
    return {_PATH: element[_PATH], _INDEX: element[_INDEX], _STATUS: status,
            _DETAIL: detail, schema.IMAGE: image, schema.LABEL: label}

  return _no_autograph(decode)


@_no_autograph
def _undecodable(element):
  return {
      _PATH: element[_PATH], _INDEX: element[_INDEX],
      _STATUS: tf.constant(_UNDECODABLE),
      _DETAIL: tf.constant(
          "not a valid tf.train.Example, or the image decoder rejected its "
          "image (explain_record(path, index) shows TensorFlow's reason)"),
      schema.IMAGE: image_decoding.empty_image(),
      schema.LABEL: tf.constant(-1),
  }


def _attempt_decode(decode, element):
  """Decodes one element, or yields it marked undecodable if TF fails.

  tf.data has no try/except: an error in a map function ends the iteration
  with a message that names no file. Here the attempt runs in its own
  one-element dataset; ignore_errors() turns a failure into "no element",
  and then the fallback, which still knows file and index, is taken instead.
  """
  attempt = tf.data.Dataset.from_tensors(element).map(decode).ignore_errors()
  fallback = tf.data.Dataset.from_tensors(element).map(_undecodable)
  return attempt.concatenate(fallback).take(1)


def _make_checker(skip_corrupt, stats):
  """A filter predicate: keeps good examples, raises or skips bad ones."""

  def keep(element):
    status = element[_STATUS]
    is_problem = status >= _FIRST_PROBLEM
    message = tf.strings.join([
        "bad ImageNet record: ", element[_PATH], ", record ",
        tf.strings.as_string(element[_INDEX]), ": ", element[_DETAIL]])
    if not skip_corrupt:
      check = tf.debugging.Assert(tf.logical_not(is_problem), [message])
      with tf.control_dependencies([check]):
        return tf.equal(status, _OK)

    def count_and_warn():
      skipped = stats.skipped_records.assign_add(1)
      damaged = stats.damaged_files.assign_add(
          tf.cast(tf.equal(status, _DAMAGED_FILE), tf.int64))
      warn = tf.print("skipping", message, output_stream=logging.warning)
      with tf.control_dependencies([skipped, damaged, warn]):
        return tf.constant(True)

    counted = tf.cond(is_problem, count_and_warn, lambda: tf.constant(True))
    with tf.control_dependencies([counted]):
      return tf.equal(status, _OK)

  return _no_autograph(keep)


def read_dataset(files,
                 *,
                 split=None,
                 record_format=None,
                 num_classes=1000,
                 shuffle=True,
                 shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
                 seed=None,
                 cycle_length=DEFAULT_CYCLE_LENGTH,
                 repeat=False,
                 skip_corrupt=False,
                 stats=None,
                 input_context=None):
  """A tf.data.Dataset of decoded ImageNet examples from TFRecord files.

  Args:
    files: anything ``list_files`` accepts (list of files, pattern, file, or
      a directory with ``split``).
    split: split name when ``files`` is a directory.
    record_format: ``schema.FORMAT_TPU`` or ``schema.FORMAT_TFDS``; None
      detects it from the first file.
    num_classes: labels must be in 0..num_classes-1 after mapping to
      0-based (the TPU format stores label + 1).
    shuffle: shuffle file order and examples. The TPU tool's training shards
      are sorted by class, so training needs this (and a large
      ``cycle_length``).
    shuffle_buffer: examples in the shuffle buffer. It holds encoded records
      (about 110 KB each for ImageNet), so 10,000 take about 1 GB.
    seed: makes file order and example order reproducible.
    cycle_length: files read at once; their records are interleaved one by
      one.
    repeat: repeat forever (each pass reshuffles).
    skip_corrupt: drop bad records instead of raising; counted in ``stats``
      and logged as warnings.
    stats: a ``ReadStats`` to count skipped records in (only with
      ``skip_corrupt``).
    input_context: a ``tf.distribute.InputContext``; this input pipeline
      then reads only its share of the files.

  Returns:
    A dataset of ``{schema.IMAGE: uint8 [H, W, 3], schema.LABEL: int32
    0-based, schema.SOURCE: string file path}``. Bad input makes iteration
    fail with InvalidArgumentError "bad ImageNet record: <file>, record <i>:
    <what is wrong>".
  """
  files = list_files(files, split)
  if input_context is not None:
    pipelines = input_context.num_input_pipelines
    if len(files) < pipelines:
      raise ValueError(f"{len(files)} files cannot be sharded across "
                       f"{pipelines} input pipelines: need at least one file "
                       "per pipeline")
    files = files[input_context.input_pipeline_id::pipelines]
  if record_format is None:
    record_format = detect_format(files[0])
  keys = feature_keys(record_format)
  if num_classes < 1:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  if skip_corrupt and stats is None:
    stats = ReadStats()  # The warnings are still logged.

  file_table = tf.data.Dataset.from_tensor_slices(
      (tf.constant(files), tf.constant(file_sizes(files), tf.int64)))
  if shuffle:
    file_table = file_table.shuffle(len(files), seed=seed,
                                    reshuffle_each_iteration=True)
  if repeat:
    file_table = file_table.repeat()
  records = file_table.interleave(
      _no_autograph(_records_of_file),
      cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE)
  if shuffle:
    # Shuffling encoded records costs far less memory than decoded images;
    # the checks below do not depend on record order.
    records = records.shuffle(
        shuffle_buffer, seed=None if seed is None else seed + 1,
        reshuffle_each_iteration=True)

  decode = _make_decoder(keys, num_classes)
  examples = records.interleave(
      _no_autograph(lambda element: _attempt_decode(decode, element)),
      cycle_length=tf.data.AUTOTUNE, block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE)
  examples = examples.filter(_make_checker(skip_corrupt, stats))
  return examples.map(_no_autograph(
      lambda e: {schema.IMAGE: e[schema.IMAGE], schema.LABEL: e[schema.LABEL],
                 schema.SOURCE: e[_PATH]}))


def explain_record(path, index, record_format=None, num_classes=1000):
  """Reads record ``index`` of ``path`` eagerly and says what is wrong.

  For diagnosing a record that ``read_dataset`` reported as undecodable:
  here TensorFlow's own error message is available.

  Returns:
    A one-line description: the label and image size if the record is fine,
    else the error.
  """
  path = os.fspath(path)
  keys = feature_keys(record_format or detect_format(path))
  try:
    raw = list(tf.data.TFRecordDataset(path).skip(index).take(1)
               .as_numpy_iterator())
  except tf.errors.OpError as e:
    return f"{path}: cannot read up to record {index}: {e.message}"
  if not raw:
    return f"{path} has fewer than {index + 1} records"
  where = f"{path}, record {index}"
  try:
    element = _make_decoder(keys, num_classes)(
        {_PATH: path, _INDEX: index, _RAW: raw[0], _STATUS: _RECORD,
         _DETAIL: ""})
  except tf.errors.OpError as e:
    return f"{where}: {e.message}"
  if int(element[_STATUS]) != _OK:
    return f"{where}: {element[_DETAIL].numpy().decode()}"
  height, width, _ = element[schema.IMAGE].shape
  return (f"{where}: fine, label {int(element[schema.LABEL])}, image "
          f"{height}x{width}")
