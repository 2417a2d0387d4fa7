"""What the pipeline's steps left on disk, read for the report.

Every reader accepts a step that never ran, stopped early or is still
running: it returns a summary whose ``status`` says so instead of raising,
because the report is written after a failed step too. Files that exist but
cannot be parsed still raise (``READ_ERRORS``); the report shows the error
in place of that part.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from cdm_tf import files
from cdm_tf.classifiers import cas
from cdm_tf.classifiers import evaluation
from cdm_tf.classifiers import trainer as classifier_trainer
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.diffusion_training import trainer
from cdm_tf.generation import synthetic_dataset
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from cdm_tf.training import loop

NOT_RUN = "not run"
NO_RESULT = "no result yet (stopped or still running)"
PERIODIC = "stopped or still running: last periodic evaluation"
FINISHED = "finished"
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError,
               tf.errors.OpError)

LOSS_TAG = "train/loss"
_SHEET_RE = re.compile(rf"^{re.escape(trainer.SAMPLE_SHEET_PREFIX)}(\d+)"
                       rf"{re.escape(trainer.SAMPLE_SHEET_SUFFIX)}$")


@dataclasses.dataclass(frozen=True)
class Scalars:
  """One scalar tag of a run: steps (int64) and values (float64), by step."""
  steps: np.ndarray
  values: np.ndarray

  def __len__(self):
    return len(self.steps)


def _empty_scalars():
  return Scalars(np.zeros([0], np.int64), np.zeros([0], np.float64))


def _exists(path):
  return bool(path) and tf.io.gfile.exists(path)


def read_json(path):
  """The JSON object at ``path``, or None if there is no such file."""
  if not _exists(path):
    return None
  return files.read_json(path)


def _value_of(value):
  # TF2 summaries carry a tensor; TF1-style ones a simple_value.
  if value.HasField("tensor"):
    return float(np.asarray(tf.make_ndarray(value.tensor)).reshape(()))
  return float(value.simple_value)


def read_scalars(log_dir, tag):
  """The values of ``tag`` in every event file of ``log_dir``.

  A resumed run logs again the steps after its last checkpoint: a step's
  value is the last one written (files are read in name order, which is
  creation time order). A file cut short by a killed run gives the events
  before the cut.

  Returns:
    ``Scalars`` sorted by step (empty without event files or the tag).
  """
  if not _exists(log_dir):
    return _empty_scalars()
  by_step = {}
  for path in sorted(files.glob_in(log_dir, "events.out.tfevents.*")):
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = tf.compat.v1.Event.FromString(record)
        for value in event.summary.value:
          if value.tag == tag:
            by_step[int(event.step)] = _value_of(value)
    except tf.errors.DataLossError:
      pass  # a truncated last record: keep what came before it
  steps = np.array(sorted(by_step), np.int64)
  return Scalars(steps, np.array([by_step[s] for s in steps], np.float64))


# ------------------------------------------------------------ diffusion


@dataclasses.dataclass(frozen=True)
class DiffusionRun:
  """A diffusion training run (``cdm_tf/diffusion_training/trainer.py``).

  Attributes:
    label: the report's name of the run.
    model_dir: its directory (None: not part of this job).
    status: ``NOT_RUN``, ``NO_RESULT`` (no export yet) or ``FINISHED``.
    loss: ``train/loss`` by step.
    last_sheet: path of the latest ``samples/step_*.png`` or None.
    last_sheet_step: its step.
  """
  label: str
  model_dir: str | None
  status: str
  loss: Scalars
  last_sheet: str | None = None
  last_sheet_step: int | None = None


def read_diffusion_run(label, model_dir):
  if not _exists(model_dir):
    return DiffusionRun(label, model_dir, NOT_RUN, _empty_scalars())
  loss = read_scalars(os.path.join(model_dir, loop.TENSORBOARD_DIR), LOSS_TAG)
  sheets = []
  for path in files.glob_in(
      os.path.join(model_dir, trainer.SAMPLES_DIR),
      f"{trainer.SAMPLE_SHEET_PREFIX}*{trainer.SAMPLE_SHEET_SUFFIX}"):
    match = _SHEET_RE.match(os.path.basename(path))
    if match:
      sheets.append((int(match[1]), path))
  last_step, last_sheet = max(sheets) if sheets else (None, None)
  # The export is written last, after the final sample sheet.
  exported = tf.io.gfile.isdir(os.path.join(model_dir, trainer.EXPORT_DIR))
  return DiffusionRun(label, model_dir, FINISHED if exported else NO_RESULT,
                      loss, last_sheet, last_step)


# ----------------------------------------------------------- classifier


@dataclasses.dataclass(frozen=True)
class ClassifierRun:
  """A classifier run (``cdm_tf/classifiers/trainer.py``).

  Attributes:
    label: the report's name of the run.
    model_dir: its directory (None: not part of this job).
    status: ``NOT_RUN``, ``NO_RESULT``, ``PERIODIC`` or ``FINISHED``.
    loss: ``train/loss`` by step.
    run: run.json (model, parameters, num_steps, training_data), or {}.
    top1, top5: accuracy on the real validation split, or None.
    step: the step evaluated.
    eval_examples: validation images evaluated (eval.json only).
    is_cas: trained on synthetic images only (the CAS protocol).
    is_cas_reference: the CAS protocol trained on real images (the CAS's
      reference when as many per class as the synthetic set).
    per_class_png: the run's per-class accuracy plot, if written.
  """
  label: str
  model_dir: str | None
  status: str
  loss: Scalars
  run: dict = dataclasses.field(default_factory=dict)
  top1: float | None = None
  top5: float | None = None
  step: int | None = None
  eval_examples: int | None = None
  is_cas: bool = False
  is_cas_reference: bool = False
  per_class_png: str | None = None

  @property
  def real_images(self):
    return self.run.get("training_data", {}).get("real_examples_per_epoch")

  @property
  def synthetic_images(self):
    return self.run.get("training_data", {}).get("synthetic_examples_per_epoch")


def read_classifier_run(label, model_dir):
  """The run's summary; accuracy from eval.json (written when training
  finished), else the last ``eval/top1`` / ``eval/top5`` events."""
  if not _exists(model_dir):
    return ClassifierRun(label, model_dir, NOT_RUN, _empty_scalars())
  tensorboard = os.path.join(model_dir, loop.TENSORBOARD_DIR)
  run = read_json(os.path.join(model_dir, classifier_trainer.RUN_FILE)) or {}
  eval_dir = os.path.join(model_dir, classifier_trainer.EVAL_DIR)
  png = os.path.join(eval_dir, evaluation.PER_CLASS_PNG)
  data = run.get("training_data", {}).get("data")
  cas_protocol = _exists(os.path.join(model_dir, cas.REPORT_FILE))
  common = dict(label=label, model_dir=model_dir,
                loss=read_scalars(tensorboard, LOSS_TAG), run=run,
                is_cas=data == "synthetic" or (cas_protocol and data is None),
                is_cas_reference=cas_protocol and data == "real",
                per_class_png=png if _exists(png) else None)
  result = read_json(os.path.join(eval_dir, evaluation.RESULTS_FILE))
  if result is not None:
    return ClassifierRun(status=FINISHED, top1=float(result["top1"]),
                         top5=float(result["top5"]), step=int(result["step"]),
                         eval_examples=int(result["examples"]), **common)
  top1 = read_scalars(tensorboard, "eval/top1")
  top5 = read_scalars(tensorboard, "eval/top5")
  if not len(top1):
    return ClassifierRun(status=NO_RESULT, **common)
  last_top5 = (float(top5.values[-1])
               if len(top5) and top5.steps[-1] == top1.steps[-1] else None)
  return ClassifierRun(status=PERIODIC, top1=float(top1.values[-1]),
                       top5=last_top5, step=int(top1.steps[-1]), **common)


# -------------------------------------------------------- synthetic set


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
  """A generated split (``synthetic_dataset.generate``).

  Attributes:
    directory: the set's directory.
    split: its split name.
    status: ``NOT_RUN``, ``NO_RESULT`` (shards but no manifest yet) or
      ``FINISHED``.
    manifest: the ``split_manifest.Manifest`` or None.
    record: generation-<split>.json (plan, config id, settings) or None.
    shard_paths: the complete shards, in manifest (record) order.
  """
  directory: str | None
  split: str
  status: str
  manifest: split_manifest.Manifest | None = None
  record: dict | None = None
  shard_paths: tuple = ()


def read_synthetic_set(directory, split):
  if not _exists(directory):
    return SyntheticSet(directory, split, NOT_RUN)
  record = read_json(synthetic_dataset.record_path(directory, split))
  if _exists(split_manifest.file_path(directory, split)):
    manifest = split_manifest.read(directory, split)
    return SyntheticSet(directory, split, FINISHED, manifest, record,
                        tuple(manifest.shard_paths(directory)))
  shards = tuple(shard_writer.complete_shards(directory, split))
  status = NO_RESULT if shards or record else NOT_RUN
  return SyntheticSet(directory, split, status, None, record, shards)


# ------------------------------------------------------------- images


def load_class_names(real_data_dir, num_classes=None):
  """Names in label order: the data's classes.json, ImageNet's table for
  1000-class data without one, else "class <i>"."""
  path = (os.path.join(real_data_dir, class_names.CLASSES_FILE)
          if real_data_dir else None)
  try:
    if _exists(path):
      return [c.name for c in class_names.load_classes(real_data_dir)]
    if num_classes == class_names.IMAGENET_NUM_CLASSES:
      return [c.name for c in class_names.imagenet_classes()]
  except (ImportError, RuntimeError):
    pass  # keras-hub's table missing: numbered classes below
  return [f"class {i}" for i in range(num_classes or 0)]


def first_per_class(dataset, class_ids, per_class):
  """{class: [uint8 images]}: the first ``per_class`` images of each class
  in ``class_ids``, in dataset order; stops once every class has them."""
  rows = {int(c): [] for c in class_ids}
  missing = len(rows) * per_class
  if not missing:
    return rows
  for element in dataset.as_numpy_iterator():
    row = rows.get(int(element[schema.LABEL]))
    if row is not None and len(row) < per_class:
      row.append(element[schema.IMAGE])
      missing -= 1
      if not missing:
        break
  return rows


def synthetic_per_class(shard_paths, class_ids, per_class):
  """``first_per_class`` of a synthetic set, in record order; images of
  other classes are skipped before decoding."""
  ids = tf.constant(sorted(int(c) for c in class_ids), tf.int32)
  dataset = reader.read(shard_paths, decode=False, num_parallel_calls=1)
  dataset = dataset.filter(
      lambda e: tf.reduce_any(tf.equal(e[schema.LABEL], ids)))
  return first_per_class(reader.decode_images(dataset), class_ids, per_class)


def real_per_class(real_data_dir, split, num_classes, class_ids, per_class):
  """``first_per_class`` of a real split, read unshuffled (the reader's
  deterministic interleaving of the split's files)."""
  dataset = imagenet_reader.read_dataset(real_data_dir, split=split,
                                         num_classes=num_classes, shuffle=False)
  return first_per_class(dataset, class_ids, per_class)


def read_metrics(path):
  """The metric dicts of a ``MetricsReport`` JSON, or None without it."""
  obj = read_json(path)
  return None if obj is None else list(obj["metrics"])


def read_metrics_notes(path):
  """The notes of a ``MetricsReport`` JSON (metrics left out and why)."""
  obj = read_json(path)
  return [] if obj is None else list(obj.get("notes", []))
