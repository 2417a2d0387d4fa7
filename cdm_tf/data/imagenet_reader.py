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
* Records are decoded in groups of ``_GROUP_SIZE``, each group inside its
  own nested dataset with ``ignore_errors()`` followed by a closing element:
  a record whose parsing or decoding fails is dropped, and a scan over the
  group finds the missing position and names the record from the group's
  files and indices. Checks that do not need a decoder (missing image,
  label out of range, bytes that are no image) set an integer status.
  Messages are built only for problems: string work for every record cost
  more than the decoding of a small image.
* The scan raises, naming file and record, on any problem, or with
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

# Status of an element inside the pipeline: small integers, so that the
# common path carries no strings; messages are built only for problems.
_RECORD = 0  # raw record, not yet decoded
_OK = 1  # decoded, passes all checks
_END_OF_FILE = 2  # end-of-file marker, the file was read to its end
_END_OF_GROUP = 3  # closes a group of decoded records (see _decode_groups)
_FIRST_PROBLEM = 4
_MISSING_IMAGE = 4
_MISSING_LABEL_STATUS = 5
_LABEL_OUT_OF_RANGE = 6
_NOT_AN_IMAGE = 7
_UNDECODABLE = 8
_DAMAGED_FILE = 9

# Keys of the elements inside the pipeline.
_PATH = "path"
_INDEX = "index"
_RAW = "raw"
_STATUS = "status"
_BYTES_READ = "bytes_read"  # bytes of the file before this element
_SIZE = "size"  # byte size of the file
_STORED_LABEL = "stored_label"
_POSITION = "position"  # place in its group

_UNDECODABLE_DETAIL = (
    "not a valid tf.train.Example, or the image decoder rejected its image "
    "(explain_record(path, index) shows TensorFlow's reason)")

# Records decoded per nested dataset: amortizes building that dataset.
_GROUP_SIZE = 16

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
  # zip with a constant flag instead of a map: no function call per record.
  records = tf.data.Dataset.zip((
      tf.data.TFRecordDataset(path).ignore_errors(),
      tf.data.Dataset.from_tensors(tf.constant(False)).repeat()))
  end_marker = tf.data.Dataset.from_tensors(
      (tf.constant(b""), tf.constant(True)))

  def number(state, item):
    # Integer work only: the message of a damaged file is built later, and
    # only for that file's marker.
    index, offset = state
    raw, is_end = item
    status = tf.where(
        is_end, tf.where(tf.equal(offset, size), _END_OF_FILE, _DAMAGED_FILE),
        _RECORD)
    next_offset = (offset + tf.cast(tf.strings.length(raw), tf.int64)
                   + RECORD_OVERHEAD_BYTES)
    element = {_PATH: path, _INDEX: index, _RAW: raw, _STATUS: status,
               _BYTES_READ: offset, _SIZE: size}
    return (index + 1, next_offset), element

  return records.concatenate(end_marker).scan(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
      _no_autograph(number))


def _make_decoder(keys, num_classes):
  """A map function: raw record element -> decoded element with a status.

  A record's problems are told by status alone; ``_make_describer`` turns a
  status into words. Markers (no record) keep their status.
  """
  spec = {
      keys.image: tf.io.FixedLenFeature([], tf.string, default_value=""),
      keys.label: tf.io.FixedLenFeature([], tf.int64,
                                        default_value=_MISSING_LABEL),
  }

  def decode(element):
    # A marker's empty raw parses as an empty Example (cheaper than a
    # tf.cond around the parse); its status is restored below.
    features = tf.io.parse_single_example(element[_RAW], spec)
    encoded = features[keys.image]
    stored_label = features[keys.label]
    label = stored_label - keys.label_offset
    # In order of precedence, so the first failing check sets the status.
    checks = [
        (tf.equal(tf.strings.length(encoded), 0), _MISSING_IMAGE),
        (tf.equal(stored_label, _MISSING_LABEL), _MISSING_LABEL_STATUS),
        ((label < 0) | (label >= num_classes), _LABEL_OUT_OF_RANGE),
        (tf.logical_not(image_decoding.is_supported_image(encoded)),
         _NOT_AN_IMAGE),
    ]
    status = tf.constant(_OK)
    for failed, failed_status in reversed(checks):
      status = tf.where(failed, failed_status, status)
    status = tf.where(tf.equal(element[_STATUS], _RECORD), status,
                      element[_STATUS])
    image = image_decoding.decode_rgb_or_placeholder(
        encoded, tf.equal(status, _OK))
    decoded = dict(element)
    del decoded[_RAW]
    decoded.update({_STATUS: status, _STORED_LABEL: stored_label,
                    schema.IMAGE: image,
                    schema.LABEL: tf.cast(label, tf.int32)})
    return decoded

  return _no_autograph(decode)


def _make_describer(keys, num_classes):
  """(status, stored label, bytes read, file size) -> what is wrong.

  Only called for problems: string formatting is too slow for every record.
  No quotes in messages: tf.debugging.Assert would print them escaped.
  """
  first_label = keys.label_offset
  last_label = keys.label_offset + num_classes - 1
  constant_details = {
      _MISSING_IMAGE: f"no image: feature {keys.image} is missing or empty",
      _MISSING_LABEL_STATUS: f"no label: feature {keys.label} is missing",
      _NOT_AN_IMAGE: (f"feature {keys.image} is not an image (not "
                      f"{image_decoding.SUPPORTED_FORMATS})"),
      _UNDECODABLE: _UNDECODABLE_DETAIL,
  }

  def describe(status, stored_label, bytes_read, size):
    branches = {s: (lambda d=d: tf.constant(d))
                for s, d in constant_details.items()}
    branches[_LABEL_OUT_OF_RANGE] = lambda: tf.strings.join([
        f"label {keys.label} = ", tf.strings.as_string(stored_label),
        f" is outside {first_label}..{last_label} ({num_classes} classes)"])
    branches[_DAMAGED_FILE] = lambda: tf.strings.join([
        "reading stopped at byte ", tf.strings.as_string(bytes_read), " of ",
        tf.strings.as_string(size), ": this record is corrupt (bad "
        "checksum), the file is truncated or it could not be read; the rest "
        "of the file is lost"])
    # switch_case wants branches 0..n-1: number the problems from 0.
    return tf.switch_case(
        status - _FIRST_PROBLEM,
        [branches[s] for s in range(_FIRST_PROBLEM, _DAMAGED_FILE + 1)])

  return describe


def _where(path, index):
  return tf.strings.join(["bad ImageNet record: ", path, ", record ",
                          tf.strings.as_string(index), ": "])


def _as_true(op):
  """True, once ``op`` has run (a tf.cond branch must return a tensor)."""
  with tf.control_dependencies([op]):
    return tf.constant(True)


def _make_group_decoder(keys, num_classes, skip_corrupt, stats):
  """An interleave function: a batch of raw elements -> their good examples.

  tf.data has no try/except: an error in a map function ends the iteration
  with a message that names no file. So each group of records is decoded in
  its own nested dataset with ignore_errors(), which drops a record whose
  parsing or decoding fails. A closing element carries the group's size,
  and a scan over the group sees which positions are missing: those are the
  records TensorFlow rejected, named from the group's paths and indices.
  Problems found by status or by a gap raise, naming file and record, or
  with ``skip_corrupt`` are counted in ``stats`` and logged.
  """
  decode = _make_decoder(keys, num_classes)
  describe = _make_describer(keys, num_classes)

  def decode_group(group):
    size = tf.shape(group[_INDEX], out_type=tf.int64)[0]
    positioned = dict(group)
    positioned[_POSITION] = tf.range(size)
    decoded = tf.data.Dataset.from_tensor_slices(positioned).map(
        decode).ignore_errors()
    closing = {
        _PATH: tf.constant(""), _INDEX: tf.constant(-1, tf.int64),
        _STATUS: tf.constant(_END_OF_GROUP), _BYTES_READ: tf.constant(
            0, tf.int64), _SIZE: tf.constant(0, tf.int64),
        _POSITION: size, _STORED_LABEL: tf.constant(0, tf.int64),
        schema.IMAGE: image_decoding.empty_image(),
        schema.LABEL: tf.constant(-1),
    }
    decoded = decoded.concatenate(tf.data.Dataset.from_tensors(closing))

    def lost_lines(first, end):
      # One message per record missing from positions first..end-1.
      return tf.strings.join([
          _where(group[_PATH][first:end], group[_INDEX][first:end]),
          _UNDECODABLE_DETAIL])

    def element_message(element):
      return tf.strings.join([
          _where(element[_PATH], element[_INDEX]),
          describe(element[_STATUS], element[_STORED_LABEL],
                   element[_BYTES_READ], element[_SIZE])])

    def report(expected, element):
      position = element[_POSITION]
      is_problem = element[_STATUS] >= _FIRST_PROBLEM
      if not skip_corrupt:
        # Lost records come before this element in record order.
        message = tf.cond(position > expected,
                          lambda: lost_lines(expected, expected + 1)[0],
                          lambda: element_message(element))
        return tf.debugging.Assert(False, [message])
      # (A marker's message is built but masked out: this runs rarely.)
      lines = tf.concat([
          lost_lines(expected, position),
          tf.boolean_mask([element_message(element)], [is_problem])], 0)
      skipped = stats.skipped_records.assign_add(
          position - expected + tf.cast(is_problem, tf.int64))
      damaged = stats.damaged_files.assign_add(
          tf.cast(tf.equal(element[_STATUS], _DAMAGED_FILE), tf.int64))
      warn = tf.print("skipping", tf.strings.reduce_join(
          lines, separator="\nskipping "), output_stream=logging.warning)
      return tf.group(skipped, damaged, warn)

    def check(expected, element):
      bad = ((element[_POSITION] > expected)
             | (element[_STATUS] >= _FIRST_PROBLEM))
      # Messages are built only inside this branch.
      checked = tf.cond(bad,
                        lambda: _as_true(report(expected, element)),
                        lambda: tf.constant(True))
      with tf.control_dependencies([checked]):
        keep = tf.equal(element[_STATUS], _OK)
      example = {schema.IMAGE: element[schema.IMAGE],
                 schema.LABEL: element[schema.LABEL],
                 schema.SOURCE: element[_PATH]}
      return element[_POSITION] + 1, (keep, example)

    return decoded.scan(tf.constant(0, tf.int64), _no_autograph(check)).filter(
        _no_autograph(lambda keep, example: keep)).map(
            _no_autograph(lambda keep, example: example))

  return _no_autograph(decode_group)


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

  # A seeded shuffle promises a reproducible order; otherwise examples may
  # come out of order, as soon as any group is decoded.
  deterministic = not shuffle or seed is not None
  return records.batch(_GROUP_SIZE).interleave(
      _make_group_decoder(keys, num_classes, skip_corrupt, stats),
      cycle_length=tf.data.AUTOTUNE, block_length=_GROUP_SIZE,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


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
         _BYTES_READ: 0, _SIZE: 0})
  except tf.errors.OpError as e:
    return f"{where}: {e.message}"
  status = int(element[_STATUS])
  if status != _OK:
    detail = _make_describer(keys, num_classes)(
        status, element[_STORED_LABEL], 0, 0)
    return f"{where}: {detail.numpy().decode()}"
  height, width, _ = element[schema.IMAGE].shape
  return (f"{where}: fine, label {int(element[schema.LABEL])}, image "
          f"{height}x{width}")
