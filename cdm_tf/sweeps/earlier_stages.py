"""The earlier stages' outputs of a later-stage sweep, generated once.

Sweeping a later stage, the earlier stages' outputs do not change from
point to point: ``EarlierStages`` generates them once (a lossless PNG
synthetic set at the earlier resolution) and every point samples only its
own stage and the ones after it from them (``CascadeOnEarlierOutputs``).
The handover is the one ``Cascade.sample`` makes (the previous stage's z_0
on the 8-bit grid, then corrupted by the stage's own augmentation), so the
pixels are the same as a full regeneration's. Generation resumes like any
synthetic set's (its record refuses other settings).
"""

import dataclasses
import os

import numpy as np

from cdm_tf.data import schema
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.synthetic_set import reader


class EarlierStageOutputs:
  """The earlier stages' uint8 output of every example of a plan, read back
  from their synthetic set one shard at a time.

  A point's generation walks the plan shard by shard, and its shards are
  the earlier set's (same plan), so one shard is held at a time.
  """

  def __init__(self, directory, plan, base_seed):
    self.directory = directory
    self.plan = plan
    self.base_seed = int(base_seed)
    self._shard_of = {}
    for index in range(plan.num_shards):
      for example in plan.shard(index).example_ids():
        self._shard_of[int(example)] = index
    self._loaded_shard = None
    self._images = {}

  def _load(self, shard_index):
    path = os.path.join(self.directory, self.plan.shard(shard_index).file_name)
    images = {}
    for element in reader.read([path]).as_numpy_iterator():
      example = int(
          plan_lib.example_id(element[schema.LABEL],
                              element[schema.CLASS_INDEX]))
      images[example] = element[schema.IMAGE]
    self._images = images
    self._loaded_shard = shard_index

  def images(self, seeds):
    """uint8 [B, h, w, 3] of the examples whose seeds are ``seeds`` [B, 2]
    ((base_seed, example id), as ``synthetic_dataset`` makes them)."""
    seeds = np.asarray(seeds, np.int64)
    if (seeds[:, 0] != self.base_seed).any():
      raise ValueError(f"the earlier stages' outputs were made with base seed "
                       f"{self.base_seed}, asked for seeds {seeds[:, 0]}")
    rows = []
    for example in seeds[:, 1]:
      example = int(example)
      if example not in self._shard_of:
        raise ValueError(f"example {example} is not in the sweep's plan")
      shard = self._shard_of[example]
      if shard != self._loaded_shard:
        self._load(shard)
      rows.append(self._images[example])
    return np.stack(rows)


class CascadeOnEarlierOutputs:
  """A point's cascade whose earlier stages' outputs come from disk.

  Everything but sampling (config id, description, resolutions, ...) is the
  point's full cascade's, so the point's set records the same provenance
  as a full regeneration.
  """

  def __init__(self, cascade, first_stage, earlier_outputs):
    self._cascade = cascade
    self._first_stage = first_stage
    self._earlier = earlier_outputs

  def __getattr__(self, name):
    return getattr(self._cascade, name)

  def sample(self, seeds, labels, progress=None):
    del progress  # per-stage progress is not reported for partial cascades
    return self._cascade.sample(seeds, labels, first_stage=self._first_stage,
                                low_res=self._earlier.images(seeds))


class EarlierStages:
  """Stages ``0..stage_index-1`` of a sweep's cascade, generated into
  ``directory`` the first time a point asks for their outputs.

  Args:
    directory: where their synthetic set goes.
    stages: the sweep's ``Stage``s (only the earlier ones are used).
    stage_index: the swept stage.
    make_cascade: ``stages -> Cascade``.
    plan: the sweep's ``GenerationPlan`` (every point's).
    classes: the class table.
    settings: the points' ``GenerationSettings``; the earlier set is
      written as PNG at the earlier stages' own resolution.
    print_fn: where progress lines go.
  """

  def __init__(self, directory, stages, stage_index, make_cascade, plan,
               classes, settings, print_fn=print):
    self.directory = directory
    self.stage_index = stage_index
    self._stages = list(stages)[:stage_index]
    self._make_cascade = make_cascade
    self._plan = plan
    self._classes = classes
    self._settings = settings
    self._print_fn = print_fn
    self._outputs = None

  def outputs(self):
    """``EarlierStageOutputs`` of the plan, generating them on first use."""
    if self._outputs is None:
      self._print_fn(f"earlier stages 0..{self.stage_index - 1}: their "
                     f"outputs are generated once into {self.directory}")
      earlier_settings = dataclasses.replace(self._settings, image_format="png",
                                             output_resolution=None)
      cascade = self._make_cascade(self._stages)
      synthetic_dataset.generate(
          self.directory, cascade, self._plan, self._classes, earlier_settings,
          print_fn=lambda line: self._print_fn(f"[earlier] {line}"))
      del cascade
      self._outputs = EarlierStageOutputs(self.directory, self._plan,
                                          self._settings.base_seed)
    return self._outputs
