"""Writes a class-balanced synthetic split with a cascade, surviving restarts.

One call is one worker's share of a ``GenerationPlan``:

1. ``generation-<split>.json`` records what the set is (plan, cascade
   config id, seed, image settings, the sha256 of each stage's loaded
   weights), a ``settings_record``: a worker restarted, or another worker
   joining, with different settings or weights stops with an error
   (saying what differs) instead of mixing two sets in one directory.
2. Temporaries left by a killed run of this worker's shards are removed;
   shards already complete (renamed to their final name) are skipped. A
   worker holds a lock (``.worker-<index>.lock``) while it runs, so a second
   process started as the same worker stops instead of removing the
   temporaries of the live one.
3. Each remaining shard is sampled batch by batch and written to a
   temporary name, renamed when complete. Example (class c, index i) has id
   c * 2^32 + i and seed (base_seed, id), so whoever generates it, in
   whatever batch, gets the same pixels.
4. The worker writes a contact sheet of its samples and a summary JSON;
   the worker that finds every shard of the plan complete writes the
   split's manifest (counts from the plan, which the shards hold exactly).
"""

import contextlib
import dataclasses
import fcntl
import os
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf import settings_record
from cdm_tf.data import contact_sheet
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import schema
from cdm_tf.generation import plan as plan_lib
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest


class WorkerRunningError(configuration.ConflictError):
  """Another live process is the same worker of the same output directory."""


def worker_lock_path(output_dir, worker_index):
  return os.path.join(output_dir, f".worker-{worker_index}.lock")


@contextlib.contextmanager
def worker_lock(output_dir, worker_index):
  """Holds worker ``worker_index``'s exclusive lock of ``output_dir``.

  A second process started as the same worker would remove the first one's
  temporary shard files; it is refused instead. The lock is an flock on
  ``.worker-<index>.lock``: the kernel releases it when its holder dies, so
  a killed worker never blocks its restart. The lock file stays (removing
  it could race with a new holder).

  Raises:
    WorkerRunningError: a live process holds the lock.
  """
  if "://" in output_dir:
    # Buckets (gs://) cannot flock: nothing stops a second worker there.
    logging.warning(
        "%s is not on a local file system: worker %d is not "
        "locked against a second copy of itself", output_dir, worker_index)
    yield
    return
  path = worker_lock_path(output_dir, worker_index)
  with open(path, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkerRunningError(
          f"worker {worker_index} is already running on {output_dir} (it "
          f"holds {path}); wait for it to finish or stop it, or give this "
          "process another --worker_index") from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """How a set is generated and stored (bound in the generation gin files).

  Attributes:
    batch_size: global batch of one cascade call (a multiple of the
      replicas); the last batch of a shard is padded to it.
    examples_per_shard: shard size, also the unit of restart after a kill.
    image_format: ``jpeg`` (what ImageNet readers expect) or ``png``.
    jpeg_quality: JPEG quality 1..100.
    output_resolution: resize the last stage's images to this side before
      encoding (anti-aliased); None keeps the cascade's resolution.
    base_seed: run-wide seed; every example's seed is (base_seed, id).
    sheet_per_class: images per class on the contact sheet (0: none).
    progress_every_seconds: how often progress is printed (0: every batch).
  """
  batch_size: int = 64
  examples_per_shard: int = 1024
  image_format: str = "jpeg"
  jpeg_quality: int = 95
  output_resolution: int | None = None
  base_seed: int = 0
  sheet_per_class: int = 8
  progress_every_seconds: float = 30.0

  def __post_init__(self):
    if self.batch_size <= 0 or self.examples_per_shard <= 0:
      raise ValueError("batch_size and examples_per_shard must be positive")
    if self.image_format not in shard_writer.IMAGE_FORMATS:
      raise ValueError(f"image_format must be one of "
                       f"{shard_writer.IMAGE_FORMATS}, got "
                       f"{self.image_format!r}")

  def stored(self):
    """The settings that change the files (recorded and compared)."""
    return {
        "image_format": self.image_format, "jpeg_quality": self.jpeg_quality,
        "output_resolution": self.output_resolution, "base_seed": self.base_seed
    }


# The generation record's per-stage sha256 of the weights loaded.
STAGE_WEIGHTS_KEY = "stage_weights_sha256"


def record_path(output_dir, split):
  return os.path.join(output_dir, f"generation-{split}.json")


def _check_stage_weights(output_dir, split, cascade):
  """Refuses a set started with other weights in one of the stages.

  Compared stage by stage with what the record holds, so the message names
  the export whose weights changed (e.g. a ``unet.keras`` replaced in
  place); records written before stage weights were recorded hold none.
  """
  path = record_path(output_dir, split)

  def compare(recorded, current):
    return [
        f"the stage exported at {stage.model_dir} (sha256 "
        f"{before[:12]}..., loaded {loaded[:12]}..."
        for stage, before, loaded in zip(cascade.stages,
                                         recorded.get(STAGE_WEIGHTS_KEY, []),
                                         current[STAGE_WEIGHTS_KEY])
        if before != loaded
    ]

  settings_record.check(
      path, {STAGE_WEIGHTS_KEY: cascade.weights_fingerprints()}, lambda found:
      (f"the {split!r} set in {output_dir} was started with other "
       f"weights in {found[0]}; see {path}); restore those weights or "
       "use a new output directory"), compare=compare)


def _check_or_write_record(output_dir, split, record):
  """Writes the set's record, or refuses ``record`` if it differs from
  the one there (stage weights aside: ``_check_stage_weights`` compares
  them, and records from before they were recorded hold none)."""
  path = record_path(output_dir, split)
  settings_record.check_or_write(
      path, record, lambda found:
      (f"{output_dir} already holds a {split!r} set generated with other "
       f"settings ({settings_record.summary(found)}; see {path}); use a "
       "new output directory or the same settings"),
      ignore=(STAGE_WEIGHTS_KEY,))


class Progress:
  """Prints images done, images/s and ETA every ``every_seconds``."""

  def __init__(self, total_images, label, every_seconds=30.0, print_fn=print):
    self.total = total_images
    self.label = label
    self.every_seconds = every_seconds
    self.print_fn = print_fn
    self.done = 0
    self.start = time.monotonic()
    self._last = -float("inf")

  def update(self, images, shard_text, force=False):
    self.done += images
    now = time.monotonic()
    if not force and now - self._last < self.every_seconds:
      return
    self._last = now
    elapsed = now - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    self.print_fn(f"{self.label} {shard_text} | {self.done}/{self.total} "
                  f"images | {rate:.2f} img/s | ETA {_duration(eta)}")

  @property
  def images_per_second(self):
    elapsed = time.monotonic() - self.start
    return self.done / elapsed if elapsed > 0 else 0.0


def _duration(seconds):
  if seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _batches(shard, batch_size):
  for start in range(0, len(shard), batch_size):
    yield (shard.labels[start:start + batch_size],
           shard.class_indices[start:start + batch_size])


def _pad(array, size):
  """Repeats the last row up to ``size`` rows (keeps compiled shapes)."""
  if len(array) == size:
    return array
  return np.concatenate([array, np.repeat(array[-1:], size - len(array), 0)])


def _write_shard(path, shard, cascade, classes, provenance_base, settings,
                 batch_size, progress, shard_text):
  with shard_writer.ShardWriter(path, len(classes)) as writer:
    for labels, indices in _batches(shard, batch_size):
      count = len(labels)
      ids = plan_lib.example_id(labels, indices)
      seeds = np.stack([np.full_like(ids, settings.base_seed), ids], axis=1)
      images = cascade.sample(_pad(seeds, batch_size), _pad(labels,
                                                            batch_size))[:count]
      if settings.output_resolution:
        images = diffusion_preprocessing.resize_square(
            images, settings.output_resolution).numpy().astype(np.uint8)
      for image, label, index, seed in zip(images, labels, indices, seeds):
        provenance = dataclasses.replace(
            provenance_base,
            example_id=plan_lib.example_id_string(label, index),
            class_index=int(index), seed=(int(seed[0]), int(seed[1])))
        writer.write(
            shard_writer.encode_example(image, int(label), classes,
                                        image_format=settings.image_format,
                                        jpeg_quality=settings.jpeg_quality,
                                        provenance=provenance), int(label))
      progress.update(count, shard_text)
  return writer.info


def read_examples_per_class(paths, per_class, num_classes):
  """Up to ``per_class`` decoded images of each class from shards, in order.

  Stops reading once every class has enough (the plan's ordering puts all
  classes in the first shards).
  """
  rows = [[] for _ in range(num_classes)]
  wanted = per_class * num_classes
  found = 0
  for element in reader.read(paths, num_parallel_calls=1):
    label = int(element[schema.LABEL])
    if len(rows[label]) < per_class:
      rows[label].append(element[schema.IMAGE].numpy())
      found += 1
      if found == wanted:
        break
  return rows


def generate(output_dir, cascade, plan, classes, settings=None, num_workers=1,
             worker_index=0, print_fn=print):
  """Generates this worker's shards of ``plan`` into ``output_dir``.

  Args:
    output_dir: where shards, manifest, contact sheet and summary go.
    cascade: a loaded ``cascade.Cascade``.
    plan: the ``GenerationPlan``.
    classes: the class table (``class_names``), one entry per plan class.
    settings: ``GenerationSettings``; None: ``GenerationSettings()``.
    num_workers, worker_index: this worker's share (shard s is worker
      ``s % num_workers``'s).
    print_fn: where progress lines go.

  Returns:
    The summary dict (also written as JSON).

  Raises:
    WorkerRunningError: another live process is this worker (on a local
      output directory).
    settings_record.SettingsConflictError: the directory holds a set made
      with other settings or weights.
  """
  if settings is None:
    settings = GenerationSettings()
  if len(classes) != plan.num_classes:
    raise ValueError(f"the plan has {plan.num_classes} classes but the class "
                     f"table {len(classes)}")
  if cascade.num_classes and cascade.num_classes != plan.num_classes:
    raise ValueError(f"the cascade knows {cascade.num_classes} classes but "
                     f"the plan has {plan.num_classes}")
  batch_size = settings.batch_size
  if batch_size % cascade.num_replicas:
    raise ValueError(f"batch_size {batch_size} must be a multiple of the "
                     f"{cascade.num_replicas} replicas")
  plan.worker_shards(num_workers, worker_index)  # checks them
  started = time.time()
  tf.io.gfile.makedirs(output_dir)
  # Locked before anything is written or removed (temporaries included).
  with worker_lock(output_dir, worker_index):
    return _generate(output_dir, cascade, plan, classes, settings, num_workers,
                     worker_index, print_fn, started)


def _generate(output_dir, cascade, plan, classes, settings, num_workers,
              worker_index, print_fn, started):
  """``generate`` once the worker holds its lock."""
  config_id = cascade.config_id()
  _check_stage_weights(output_dir, plan.split, cascade)
  _check_or_write_record(
      output_dir, plan.split, {
          "plan": plan.to_json(), "generator_config_id": config_id,
          "settings": settings.stored(), "classes": [c.synset for c in classes],
          STAGE_WEIGHTS_KEY: cascade.weights_fingerprints()
      })

  shards = [
      plan.shard(s) for s in plan.worker_shards(num_workers, worker_index)
  ]
  label = f"[worker {worker_index}/{num_workers}]"
  pending = _pending_shards(output_dir, shards, label, print_fn)
  provenance_base = _provenance_base(cascade, config_id)
  progress = Progress(sum(map(len, pending)), label,
                      settings.progress_every_seconds, print_fn)
  for number, shard in enumerate(pending, 1):
    _write_shard(os.path.join(output_dir, shard.file_name), shard, cascade,
                 classes, provenance_base, settings, settings.batch_size,
                 progress, f"shard {number}/{len(pending)} ({shard.file_name})")
  if pending:
    progress.update(0, "done", force=True)

  suffix = f"worker-{worker_index:05d}-of-{num_workers:05d}"
  if settings.sheet_per_class and shards:
    _write_contact_sheet(
        os.path.join(output_dir, f"contact_sheet.{suffix}.png"),
        [os.path.join(output_dir, s.file_name) for s in shards],
        settings.sheet_per_class, plan.num_classes, cascade)
  manifest = _write_manifest_if_complete(output_dir, plan, cascade, settings,
                                         config_id, print_fn)
  summary = {
      "worker_index": worker_index,
      "num_workers": num_workers,
      "split": plan.split,
      "generator_config_id": config_id,
      "shards": [s.file_name for s in shards],
      "shards_written_now": [s.file_name for s in pending],
      "images_written_now": progress.done,
      "images_per_second": progress.images_per_second,
      "network_evaluations_per_image":
          (cascade.network_evaluations_per_example()),
      "class_counts": np.sum(
          [np.bincount(s.labels, minlength=plan.num_classes) for s in shards],
          axis=0).tolist(),
      "wall_time_seconds": time.time() - started,
      "num_replicas": cascade.num_replicas,
      "batch_size": settings.batch_size,
      "cascade": cascade.description(),
      "settings": dataclasses.asdict(settings),
      "split_complete": manifest is not None,
  }
  files.atomic_write_json(os.path.join(output_dir, f"summary.{suffix}.json"),
                          summary)
  return summary


def _pending_shards(output_dir, shards, label, print_fn):
  """This worker's shards still to write, once the temporaries a killed
  run left of them are removed."""
  removed = shard_writer.remove_stale_temporaries(
      output_dir, shard_names=[s.file_name for s in shards])
  for path in removed:
    print_fn(f"removed the incomplete shard "
             f"{shard_writer.temporary_shard_target(path)} "
             f"({os.path.basename(path)}); it is written again")
  pending = [
      s for s in shards
      if not tf.io.gfile.exists(os.path.join(output_dir, s.file_name))
  ]
  print_fn(f"{label} {len(shards)} shards ({sum(map(len, shards))} images); "
           f"{len(shards) - len(pending)} already complete, {len(pending)} to "
           f"write")
  return pending


def _provenance_base(cascade, config_id):
  """The provenance every example of ``cascade`` shares (the per-example
  fields are placeholders)."""
  return shard_writer.Provenance(
      generator_config_id=config_id, example_id="-", class_index=0, seed=(0, 0),
      stage_resolutions=tuple(cascade.resolutions),
      guidance=tuple(float(s.guidance_weight) for s in cascade.stages),
      sampler=tuple(cascade.sampler_names()),
      logvar_coeff=tuple(float(s.logvar_coeff or 0.0) for s in cascade.stages),
      noise_augmentation=tuple(float(s.aug_level) for s in cascade.stages[1:]))


def _write_contact_sheet(path, shard_paths, per_class, num_classes, cascade):
  rows = read_examples_per_class(shard_paths, per_class, num_classes)
  side = max(cascade.resolutions[-1], 32)
  contact_sheet.write_png(path,
                          contact_sheet.grid(rows, cell_size=min(side, 128)))


def _write_manifest_if_complete(output_dir, plan, cascade, settings, config_id,
                                print_fn):
  """Writes the split's manifest if every shard of the plan is complete
  (counts from the plan, which the shards hold exactly); returns it, or
  None."""
  complete = [
      plan.shard(s)
      for s in range(plan.num_shards)
      if tf.io.gfile.exists(os.path.join(output_dir,
                                         plan.shard(s).file_name))
  ]
  if len(complete) != plan.num_shards:
    return None
  manifest = split_manifest.write(
      output_dir, plan.split, [s.info(plan.num_classes) for s in complete],
      plan.num_classes, settings.image_format, settings={
          "generator_config_id": config_id, "cascade": cascade.description(),
          "output": settings.stored()
      })
  print_fn(f"all {plan.num_shards} shards complete: wrote "
           f"{split_manifest.file_path(output_dir, plan.split)}")
  return manifest


def describe_plan(plan, cascade_evaluations_per_image=None, num_workers=1,
                  worker_index=0, max_classes=10):
  """The ``--dry_run`` text: shards, per-class counts, model evaluations."""
  mine = plan.worker_shards(num_workers, worker_index)
  mine_images = sum(len(plan.shard(s)) for s in mine)
  counts = plan.class_counts
  lines = [
      f"split {plan.split!r}: {plan.num_examples} images of "
      f"{plan.num_classes} classes in {plan.num_shards} shards of up to "
      f"{plan.examples_per_shard}",
      f"per class: min {counts.min()}, max {counts.max()}, mean "
      f"{counts.mean():.1f}",
  ]
  shown = ", ".join(f"{c}: {n}" for c, n in enumerate(counts[:max_classes]))
  more = " ..." if len(counts) > max_classes else ""
  lines.append(f"counts by class: {shown}{more}")
  lines.append(f"worker {worker_index} of {num_workers}: {len(mine)} shards, "
               f"{mine_images} images (shards {_ranges(mine)})")
  if cascade_evaluations_per_image is not None:
    lines.append(
        f"network evaluations: {cascade_evaluations_per_image} per image, "
        f"{cascade_evaluations_per_image * mine_images:,} for this worker, "
        f"{cascade_evaluations_per_image * plan.num_examples:,} in total")
  return "\n".join(lines)


def _ranges(indices, limit=8):
  text = ", ".join(str(i) for i in indices[:limit])
  return text + (f", ... ({len(indices)} in all)"
                 if len(indices) > limit else "")
