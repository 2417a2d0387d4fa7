"""Reading real ImageNet TFRecords (TPU-tool or TFDS format) with tf.data.

``read_dataset`` yields ``{schema.IMAGE: uint8 [H, W, 3], schema.LABEL: int32
0-based, schema.SOURCE: file name}``.

Bad input fails with an error that names the TFRecord file and the record
index. TensorFlow's own errors (``DataLossError: corrupted record at 128``,
``jpeg::Uncompress failed``) name neither, and an error inside a tf.data
function cannot be caught in the graph, so the pipeline is built to never
let TensorFlow fail on a record:

* Records are read per file with ``ignore_errors()`` and numbered. Each
  record takes ``len + 16`` bytes in a TFRecord file, so if the bytes read
  fall short of the file size, reading stopped at a corrupt (bad CRC) or
  truncated record, and a marker element carrying that record's index is
  added. Without ``skip_corrupt`` the marker raises right there, in the
  file's own reader, before the records are interleaved, repeated or
  shuffled: behind a shuffle buffer it would come out at a random time,
  maybe after a short training run ended, or never. The reader reaches the
  damage within one pass over the file, so training stops then, at the
  latest one shuffle buffer after the good records before the damage. A
  full check of the framing when the file list is built would read every
  record header up front: one ranged read per record on GCS, far too slow
  for ImageNet.
* After the shuffle, records are decoded in groups of ``_GROUP_SIZE``, each
  group in its own nested dataset. The fast path decodes a whole group in
  one function call; it is taken when the group is full and its images are
  good, small and of one size (e.g. Fashion-MNIST): per-record function calls
  cost more than decoding a small image. Any group that fails it is read
  record by record, in a nested dataset with ``ignore_errors()`` followed
  by a closing element: a record whose parsing or decoding fails is
  dropped, and the check over the group sees the missing position and
  names the record from the group's files and indices. Checks that do not
  need a decoder (missing image, label out of range, bytes that are no
  image) clear an ``ok`` flag; what exactly is wrong is worked out and put
  into words only for such records: string work for every record cost
  more than the decoding of a small image.
* The check raises, naming file and record, on any problem, or with
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
import functools
import os
import re

from absl import logging
import tensorflow as tf

from cdm_tf import files as files_lib
from cdm_tf.data import image_decoding
from cdm_tf.data import input_sharding
from cdm_tf.data import schema

DEFAULT_SHUFFLE_BUFFER = 10_000
DEFAULT_CYCLE_LENGTH = 64

# A TFRecord holds, per record: uint64 length, uint32 CRC of the length, the
# data, uint32 CRC of the data.
RECORD_OVERHEAD_BYTES = 16

# How each split's shards are named: the TPU tool, then TFDS.
_SPLIT_PATTERNS = ("{split}-*-of-*", "*-{split}.tfrecord-*-of-*")
_GLOB_CHARACTERS = "*?["
# index and total of a shard name of either naming.
_SHARD_NUMBERING_RE = re.compile(r"-(?P<index>\d+)-of-(?P<num>\d+)$")
# Missing shards named in a message; the rest are counted.
_MISSING_SHARDS_SHOWN = 5
_STAT_THREADS = 32

# Default of a missing label: far outside any label range.
_MISSING_LABEL = -(2**62)

# What is wrong with a record: small integers, worked out only for records
# that fail a check (see _status); messages are built only for problems.
_FIRST_PROBLEM = 4
_MISSING_IMAGE = 4
_MISSING_LABEL_STATUS = 5
_LABEL_OUT_OF_RANGE = 6
_NOT_AN_IMAGE = 7
_UNDECODABLE = 8
_DAMAGED_FILE = 9

# Keys of the elements inside the pipeline.
_FILE = "file"  # index into the list of files
_INDEX = "index"  # record number in its file; -1 for a group's closing row
_RAW = "raw"
_BYTES_READ = "bytes_read"  # a damaged file's marker: bytes read; else -1
_POSITION = "position"  # place in its group
_GROUP_FILES = "group_files"  # _FILE of every record of the group
_GROUP_INDICES = "group_indices"  # _INDEX of every record of the group
_OK = "ok"  # decoded and passes every check
_ENCODED = "encoded"
_STORED_LABEL = "stored_label"

_UNDECODABLE_DETAIL = (
    "not a valid tf.train.Example, or the image decoder rejected its image "
    "(explain_record(path, index) shows TensorFlow's reason)")

# Records per group: the fast path decodes a group in one call, and a
# group's nested datasets cost about as much to build as a small image's
# decoding.
_GROUP_SIZE = 32
# Largest image (height * width) the fast path decodes. Above it, decoding
# outweighs a per-record call, and a group decoded in one call only delays
# its first example.
_FAST_PATH_MAX_PIXELS = 128 * 128
# Records numbered per function call when reading a file.
_READ_BATCH = 64

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
      file, or a list of any of these. ``gs://`` paths work. A path that
      exists as it is written is a directory or file even if it holds glob
      characters (``data[1]``); so is the directory part of a pattern
      (``data[1]/train-*`` is ``train-*`` in the directory ``data[1]``
      if there is one).
    split: split name, e.g. ``"train"`` or ``"validation"``; only for
      directories.

  Returns:
    Sorted list of file paths, without duplicates.

  Raises:
    FileNotFoundError: nothing matches (the message names the path).
    ValueError: a directory without ``split``, with shards of both
      namings, or missing some shards of its ``-of-N`` set (e.g. a copy
      that was killed), or an invalid split name.
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
    schema.check_split_name(split)
    patterns = [p.format(split=split) for p in _SPLIT_PATTERNS]
    matches = [files_lib.glob_in(path, p) for p in patterns]
    non_empty = [m for m in matches if m]
    if len(non_empty) > 1:
      raise ValueError(f"{path} holds {split} shards of both namings "
                       f"({' and '.join(patterns)}); pass a file pattern")
    if not non_empty:
      raise FileNotFoundError(f"no {split!r} shards in {path} (looked for "
                              f"{' and '.join(patterns)})")
    return _check_complete_set(path, split, sorted(non_empty[0]))

  if split:
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"{path}: no such directory (give the data "
                              "directory holding the split's shards)")
    raise ValueError(f"split={split!r} is only used with a directory, but "
                     f"{path} is not one")
  if _has_glob(path) and not tf.io.gfile.exists(path):
    directory, name = os.path.split(path)
    if directory and tf.io.gfile.isdir(directory):
      # Only the file name is a pattern: the directory's name may hold
      # glob characters.
      matches = files_lib.glob_in(directory, name)
    else:
      matches = tf.io.gfile.glob(path)
    matches = [m for m in matches if not tf.io.gfile.isdir(m)]
    if not matches:
      raise FileNotFoundError(f"no files match {path}")
    return sorted(matches)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  return [path]


def _check_complete_set(directory, split, paths):
  """``paths``, if they are every shard 0..N-1 of one ``-of-N`` set.

  Only for a directory, which stands for the whole split; a pattern or a
  list may name a subset on purpose.
  """
  numbered = [_SHARD_NUMBERING_RE.search(os.path.basename(p)) for p in paths]
  totals = {int(m["num"]) for m in numbered}
  if len(totals) > 1:
    raise ValueError(f"{directory}: the {split} shards mix set sizes "
                     f"(-of-N with N in {sorted(totals)}); remove the stale "
                     "set or pass a file pattern")
  total = totals.pop()
  present = {int(m["index"]) for m in numbered}
  missing = [i for i in range(total) if i not in present]
  if missing:
    # Named like a present shard, with the missing index in its place.
    name, first = os.path.basename(paths[0]), numbered[0]
    width = len(first["index"])
    names = [
        f"{name[:first.start('index')]}{i:0{width}d}"
        f"{name[first.end('index'):]}" for i in missing[:_MISSING_SHARDS_SHOWN]
    ]
    more = len(missing) - len(names)
    raise ValueError(
        f"{directory}: {len(missing)} of the {total} {split} shards are "
        f"missing ({', '.join(names)}{f' and {more} more' if more else ''});"
        " the copy or conversion is incomplete: finish it, or pass a file "
        "pattern to read only some shards")
  return paths


def file_sizes(files):
  """Byte sizes of ``files`` (stat in parallel threads: slow on buckets)."""

  def size(path):
    try:
      return tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError as e:
      raise FileNotFoundError(f"{path}: no such file") from e

  if len(files) <= 1:
    return [size(f) for f in files]
  with concurrent.futures.ThreadPoolExecutor(min(_STAT_THREADS,
                                                 len(files))) as pool:
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
      self.skipped_records = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name="skipped_records")
      self.damaged_files = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="damaged_files")

  def as_dict(self):
    return {
        "skipped_records": int(self.skipped_records.numpy()),
        "damaged_files": int(self.damaged_files.numpy())
    }


def _feature_spec(keys):
  """What a record's parse reads: its image and label (missing ones get
  defaults that the checks catch)."""
  return {
      keys.image: tf.io.FixedLenFeature([], tf.string, default_value=""),
      keys.label: tf.io.FixedLenFeature([], tf.int64,
                                        default_value=_MISSING_LABEL),
  }


def _make_file_reader(skip_corrupt):
  """An interleave function: (file id, path, size) -> its numbered records.

  A damaged file ends in a marker; without ``skip_corrupt`` the marker
  raises here, naming the file, rather than after the shuffle.
  """
  return _no_autograph(
      functools.partial(_records_of_file, raise_if_damaged=not skip_corrupt))


def _records_of_file(file_id, path, size, raise_if_damaged):
  """Numbered raw records of one file, then a marker if it is damaged.

  Records are numbered in batches: one function call per ``_READ_BATCH``
  records instead of one per record.
  """
  batches = tf.data.Dataset.zip(
      (tf.data.TFRecordDataset(path).ignore_errors().batch(_READ_BATCH),
       tf.data.Dataset.from_tensors(tf.constant(False)).repeat()))
  end = tf.data.Dataset.from_tensors((tf.zeros([0],
                                               tf.string), tf.constant(True)))

  def number(state, batch):
    index, offset = state
    raw, is_end = batch
    count = tf.size(raw, out_type=tf.int64)
    # The marker row (kept only when reading stopped short of the file's
    # end) carries the record count as index and the bytes read.
    damaged = is_end & tf.not_equal(offset, size)
    if raise_if_damaged:
      checked = tf.cond(
          damaged, lambda: _as_true(
              tf.debugging.Assert(
                  False, [_damage_message(path, index, offset, size)])),
          lambda: tf.constant(True))
      with tf.control_dependencies([checked]):
        damaged = tf.identity(damaged)
    rows = count + tf.cast(damaged, tf.int64)
    records = {
        _FILE: tf.fill([rows], file_id),
        _INDEX: index + tf.range(rows),
        _RAW: tf.concat([raw, [""]], 0)[:rows],
        _BYTES_READ: tf.concat(
            [tf.fill([count], tf.constant(-1, tf.int64)), [offset]], 0)[:rows],
    }
    lengths = tf.cast(tf.strings.length(raw), tf.int64)
    next_offset = (offset + tf.reduce_sum(lengths) +
                   RECORD_OVERHEAD_BYTES * count)
    return (index + count, next_offset), records

  return batches.concatenate(end).scan(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
      _no_autograph(number)).unbatch()


def _spread_group(group):
  """A batch of records -> its records, each with its place in the group.

  Each row also carries the files and indices of the whole group, so that a
  record dropped in decoding can be named, and one closing row (index -1,
  no record) ends the group, so that a drop at its end is seen.
  """
  size = tf.size(group[_INDEX], out_type=tf.int64)
  rows = size + 1
  spread = {
      _FILE: tf.concat([group[_FILE], [0]], 0),
      _INDEX: tf.concat([group[_INDEX], [-1]], 0),
      _RAW: tf.concat([group[_RAW], [""]], 0),
      _BYTES_READ: tf.concat([group[_BYTES_READ], [-1]], 0),
      _POSITION: tf.range(rows),
      _GROUP_FILES: tf.tile(group[_FILE][tf.newaxis], [rows, 1]),
      _GROUP_INDICES: tf.tile(group[_INDEX][tf.newaxis], [rows, 1]),
  }
  return spread


def _make_decoder(keys, num_classes, files):
  """A map function: record element -> decoded element with an ``ok`` flag.

  Only the checks that decide ``ok`` run here, for every record; what is
  wrong with a record that is not ok is worked out by ``_status`` only for
  such records. Rows without a record (markers, group ends) have an empty
  raw: it parses as an Example without image, so they are never ok.
  """
  spec = _feature_spec(keys)
  files = tf.constant(files)

  def decode(element):
    features = tf.io.parse_single_example(element[_RAW], spec)
    encoded = features[keys.image]
    stored_label = features[keys.label]
    label = stored_label - keys.label_offset
    # An empty or missing image fails the header check; a missing label
    # is far out of range.
    ok = (image_decoding.is_supported_image(encoded) & (label >= 0) &
          (label < num_classes))
    decoded = dict(element)
    del decoded[_RAW]
    decoded.update({
        _OK: ok,
        _ENCODED: encoded,
        _STORED_LABEL: stored_label,
        schema.IMAGE: image_decoding.decode_rgb_or_placeholder(encoded, ok),
        schema.LABEL: tf.cast(label, tf.int32),
        schema.SOURCE: tf.gather(files, element[_FILE]),
    })
    return decoded

  return _no_autograph(decode)


def _status(keys, num_classes, encoded, stored_label, bytes_read):
  """What is wrong with a record that is not ok (a ``_FIRST_PROBLEM..``)."""
  label = stored_label - keys.label_offset
  # In order of precedence, so the first failing check sets the status.
  checks = [
      (bytes_read >= 0, _DAMAGED_FILE),
      (tf.equal(tf.strings.length(encoded), 0), _MISSING_IMAGE),
      (tf.equal(stored_label, _MISSING_LABEL), _MISSING_LABEL_STATUS),
      ((label < 0) | (label >= num_classes), _LABEL_OUT_OF_RANGE),
  ]
  status = tf.constant(_NOT_AN_IMAGE)
  for failed, failed_status in reversed(checks):
    status = tf.where(failed, failed_status, status)
  return status


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
    branches = {
        s: (lambda d=d: tf.constant(d)) for s, d in constant_details.items()
    }
    branches[_LABEL_OUT_OF_RANGE] = lambda: tf.strings.join([
        f"label {keys.label} = ",
        tf.strings.as_string(stored_label),
        f" is outside {first_label}..{last_label} ({num_classes} classes)"
    ])
    branches[_DAMAGED_FILE] = lambda: _damage_detail(bytes_read, size)
    # switch_case wants branches 0..n-1: number the problems from 0.
    return tf.switch_case(
        status - _FIRST_PROBLEM,
        [branches[s] for s in range(_FIRST_PROBLEM, _DAMAGED_FILE + 1)])

  return describe


def _damage_detail(bytes_read, size):
  return tf.strings.join([
      "reading stopped at byte ",
      tf.strings.as_string(bytes_read), " of ",
      tf.strings.as_string(size), ": this record is corrupt (bad "
      "checksum), the file is truncated or it could not be read; copy or "
      "write the file again"
  ])


def _damage_message(path, index, bytes_read, size):
  return tf.strings.join(
      [_where(path, index),
       _damage_detail(bytes_read, size)])


def _where(path, index):
  return tf.strings.join([
      "bad ImageNet record: ", path, ", record ",
      tf.strings.as_string(index), ": "
  ])


def _as_true(op):
  """True, once ``op`` has run (a tf.cond branch must return a tensor)."""
  with tf.control_dependencies([op]):
    return tf.constant(True)


class _Problems:
  """What both checks of ``_make_checker`` share: telling a bad element,
  describing it and lost records, and the output of a checked element."""

  def __init__(self, keys, num_classes, files, sizes):
    self._keys = keys
    self._num_classes = num_classes
    self._describe = _make_describer(keys, num_classes)
    self._files = tf.constant(files)
    self._sizes = tf.constant(sizes, tf.int64)

  def lost_lines(self, element, first, end):
    """One message per record missing from positions first..end-1."""
    return tf.strings.join([
        _where(tf.gather(self._files, element[_GROUP_FILES][first:end]),
               element[_GROUP_INDICES][first:end]), _UNDECODABLE_DETAIL
    ])

  def element_message(self, element):
    status = _status(self._keys, self._num_classes, element[_ENCODED],
                     element[_STORED_LABEL], element[_BYTES_READ])
    return tf.strings.join([
        _where(element[schema.SOURCE], element[_INDEX]),
        self._describe(status, element[_STORED_LABEL], element[_BYTES_READ],
                       tf.gather(self._sizes, element[_FILE]))
    ])

  @staticmethod
  def is_problem(element):
    return tf.logical_not(element[_OK] | (element[_INDEX] < 0))

  @staticmethod
  def output(element, checked):
    """A good example as a batch of one, anything else as a batch of none,
    once ``checked`` has run."""
    with tf.control_dependencies([checked]):
      keep = tf.cast(element[_OK], tf.int32)
    return {
        key: element[key][tf.newaxis][:keep]
        for key in (schema.IMAGE, schema.LABEL, schema.SOURCE)
    }


def _raising_check(problems):
  """The map function over ``(rank, element)`` that raises at the first
  problem (see ``_make_checker``)."""

  def check_raising(rank, element):
    lost = element[_POSITION] - rank
    position = element[_POSITION]

    def report():
      # Lost records come before this element in record order.
      message = tf.cond(
          lost > 0, lambda: problems.lost_lines(element, position - lost,
                                                position - lost + 1)[0],
          lambda: problems.element_message(element))
      return _as_true(tf.debugging.Assert(False, [message]))

    # Messages are built only inside this branch.
    checked = tf.cond((lost > 0) | problems.is_problem(element), report,
                      lambda: tf.constant(True))
    return problems.output(element, checked)

  return check_raising


def _counting_check(problems, stats):
  """The scan function over ``element`` that counts every problem in
  ``stats`` and logs it (see ``_make_checker``)."""

  def check_counting(expected, element):
    position = element[_POSITION]
    problem = problems.is_problem(element)

    def report():
      lines = tf.concat([
          problems.lost_lines(element, expected, position),
          tf.cond(problem,
                  lambda: problems.element_message(element)[tf.newaxis],
                  lambda: tf.zeros([0], tf.string))
      ], 0)
      skipped = stats.skipped_records.assign_add(position - expected +
                                                 tf.cast(problem, tf.int64))
      damaged = stats.damaged_files.assign_add(
          tf.cast(problem & (element[_BYTES_READ] >= 0), tf.int64))
      warn = tf.print("skipping",
                      tf.strings.reduce_join(lines, separator="\nskipping "),
                      output_stream=logging.warning)
      return _as_true(tf.group(skipped, damaged, warn))

    checked = tf.cond((position > expected) | problem, report,
                      lambda: tf.constant(True))
    next_expected = tf.where(element[_INDEX] < 0, tf.constant(0, tf.int64),
                             position + 1)
    return next_expected, problems.output(element, checked)

  return check_counting


def _make_checker(keys, num_classes, files, sizes, skip_corrupt, stats):
  """A function over decoded elements, in order, that finds every problem.

  A record whose parsing or decoding failed was dropped by ignore_errors():
  it shows as a gap in the positions of its group, and is named from the
  group's files and indices that every element carries. Problems raise,
  naming file and record, or with ``skip_corrupt`` are counted in ``stats``
  and logged. Each element comes out as a batch of one if it is a good
  example, else of none, so that unbatch() drops the rest without another
  function call.

  Returns:
    ``(function, stateful)``. Raising needs no state: the first drop is
    seen by the next element as its position running ahead of its rank
    among the group's survivors, and everything before it was fine. So the
    function maps ``(rank, element)``, a cheaper call than a scan's. Skipping
    must see each gap on its own: then it is a scan function over
    ``element`` whose state is the next expected position.
  """
  problems = _Problems(keys, num_classes, files, sizes)
  if skip_corrupt:
    return _no_autograph(_counting_check(problems, stats)), True
  return _no_autograph(_raising_check(problems)), False


def _make_uniform_group_decoder(keys, num_classes, files):
  """A map function: a full group of records -> its examples, batched.

  The fast path, for groups of good images of one size (e.g. a small-image
  data set): one function call parses, checks and decodes the whole group,
  where per-record calls cost more than decoding a small image. It fails,
  before decoding, for anything else (a short group, a problem, images of
  several sizes or formats, large images), and the group is then read
  record by record.
  """
  spec = _feature_spec(keys)
  files = tf.constant(files)

  def decode_group(group):
    features = tf.io.parse_example(group[_RAW], spec)
    encoded = features[keys.image]
    label = features[keys.label] - keys.label_offset
    # Markers have no record: their empty image fails the header check.
    ok = (image_decoding.is_supported_image(encoded) & (label >= 0) &
          (label < num_classes))
    sizes = image_decoding.header_sizes(encoded)
    uniform = (tf.reduce_all(ok) & tf.reduce_all(sizes >= 0) &
               tf.reduce_all(tf.equal(sizes, sizes[:1])) &
               (tf.reduce_prod(sizes[0]) <= _FAST_PATH_MAX_PIXELS))
    # The message is never shown: ignore_errors() drops this failure.
    with tf.control_dependencies([tf.debugging.Assert(uniform, [False])]):
      encoded = tf.identity(encoded)
    images = [
        image_decoding.decode_rgb(e)
        for e in tf.unstack(encoded, num=_GROUP_SIZE)
    ]
    return {
        schema.IMAGE: tf.stack(images), schema.LABEL: tf.cast(label, tf.int32),
        schema.SOURCE: tf.gather(files, group[_FILE])
    }

  return _no_autograph(decode_group)


def _make_group_reader(keys, num_classes, files, sizes, skip_corrupt, stats):
  """An interleave function: a group of records -> its good examples.

  Tries the fast path (``_make_uniform_group_decoder``) and, only if that
  fails, reads the group record by record: a nested dataset of one decoding
  map call and one check call per record, which names every problem.
  """
  decode_uniform = _make_uniform_group_decoder(keys, num_classes, files)
  decode = _make_decoder(keys, num_classes, files)
  check, stateful = _make_checker(keys, num_classes, files, sizes, skip_corrupt,
                                  stats)
  nothing = {
      schema.IMAGE: tf.zeros([0, 0, 0, 3], tf.uint8),
      schema.LABEL: tf.zeros([0], tf.int32), schema.SOURCE: tf.zeros([0],
                                                                     tf.string)
  }

  def record_by_record(group):
    # In parallel but in order (the check needs it): large images decode
    # as fast as in a bare read.
    decoded = tf.data.Dataset.from_tensors(group).map(
        _no_autograph(_spread_group)).unbatch().map(
            decode, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True).ignore_errors()
    if stateful:
      checked = decoded.scan(tf.constant(0, tf.int64), check)
    else:
      checked = decoded.enumerate().map(check)
    return checked.unbatch()

  def read_group(group):
    # Either the fast path's batch or, if it failed, an empty batch.
    first = tf.data.Dataset.from_tensors(group).map(
        decode_uniform).ignore_errors().concatenate(
            tf.data.Dataset.from_tensors(nothing)).take(1)

    def examples(batch):
      failed = tf.equal(tf.size(batch[schema.LABEL]), 0)
      # Datasets are lazy: the slow path runs only if taken.
      slow = record_by_record(group).take(
          tf.where(failed, tf.constant(-1, tf.int64), 0))
      return tf.data.Dataset.from_tensor_slices(batch).concatenate(slow)

    return first.flat_map(_no_autograph(examples))

  return _no_autograph(read_group)


def _encoded_records(files, sizes, *, shuffle, shuffle_buffer, seed,
                     cycle_length, repeat, skip_corrupt):
  """The files' records, still encoded, interleaved one by one (and
  shuffled): the input of ``read_dataset``'s group decoding."""
  file_table = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(files), dtype=tf.int32), tf.constant(files),
       tf.constant(sizes, tf.int64)))
  if shuffle:
    file_table = file_table.shuffle(len(files), seed=seed,
                                    reshuffle_each_iteration=True)
  if repeat:
    file_table = file_table.repeat()
  records = file_table.interleave(
      _make_file_reader(skip_corrupt),
      cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE)
  if shuffle:
    # Shuffling encoded records costs far less memory than decoded images;
    # the checks after decoding do not depend on record order.
    records = records.shuffle(shuffle_buffer,
                              seed=None if seed is None else seed + 1,
                              reshuffle_each_iteration=True)
  return records


def read_dataset(files, *, split=None, record_format=None, num_classes=1000,
                 shuffle=True, shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, seed=None,
                 cycle_length=DEFAULT_CYCLE_LENGTH, repeat=False,
                 skip_corrupt=False, stats=None, input_context=None):
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
  files = input_sharding.shard_files(list_files(files, split), input_context)
  if record_format is None:
    record_format = detect_format(files[0])
  keys = feature_keys(record_format)
  if num_classes < 1:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  if skip_corrupt and stats is None:
    stats = ReadStats()  # The warnings are still logged.

  sizes = file_sizes(files)
  records = _encoded_records(files, sizes, shuffle=shuffle,
                             shuffle_buffer=shuffle_buffer, seed=seed,
                             cycle_length=cycle_length, repeat=repeat,
                             skip_corrupt=skip_corrupt)
  # A seeded shuffle promises a reproducible order; otherwise examples may
  # come out of order, as soon as any group is decoded.
  deterministic = not shuffle or seed is not None
  return records.batch(_GROUP_SIZE).interleave(
      _make_group_reader(keys, num_classes, files, sizes, skip_corrupt, stats),
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
    raw = list(
        tf.data.TFRecordDataset(path).skip(index).take(1).as_numpy_iterator())
  except tf.errors.OpError as e:
    return f"{path}: cannot read up to record {index}: {e.message}"
  if not raw:
    return f"{path} has fewer than {index + 1} records"
  where = f"{path}, record {index}"
  try:
    element = _make_decoder(keys, num_classes, [path])(
        {_FILE: 0, _INDEX: index, _RAW: raw[0], _BYTES_READ: -1})
  except tf.errors.OpError as e:
    return f"{where}: {e.message}"
  if not bool(element[_OK]):
    status = _status(keys, num_classes, element[_ENCODED],
                     element[_STORED_LABEL], -1)
    detail = _make_describer(keys, num_classes)(status, element[_STORED_LABEL],
                                                0, 0)
    return f"{where}: {detail.numpy().decode()}"
  height, width, _ = element[schema.IMAGE].shape
  return (f"{where}: fine, label {int(element[schema.LABEL])}, image "
          f"{height}x{width}")
