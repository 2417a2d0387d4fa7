"""Sampler sweeps (cdm_tf.sweeps) on the tiny untrained cascade,
scored with a tiny classifier's features against real Fashion-MNIST: the
points, their metrics, the CSV, the plots, resuming after a kill, and the
earlier stages generated once for a super-resolution sweep."""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest

from cdm_tf import settings_record
from cdm_tf.data import class_names
from cdm_tf.data import schema
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import sample_scores
from cdm_tf.sweeps import grid as grid_lib
from cdm_tf.sweeps import records
from cdm_tf.sweeps import scoring
from cdm_tf.sweeps import sweep
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import tiny_cascade

NETWORK = "tiny test classifier features"
NUM_IMAGES = 20  # 2 per class, in 2 shards of 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class KilledForTest(Exception):
  """Stands for a kill in the middle of a sweep."""


def _tiny_classifier():
  """A fixed functional classifier on 32x32: 8-d features, 10 logits."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
  x = keras.layers.GlobalAveragePooling2D(name="features")(x)
  logits = keras.layers.Dense(10, name="logits")(x)
  return keras.Model(inputs, logits, name="tiny_classifier")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  base_dir, sr_dir = tiny_cascade.export_tiny_cascade(str(root / "exports"))
  data_dir = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(3, 2))
  return dict(
      root=root, base_dir=base_dir, sr_dir=sr_dir,
      classes=class_names.load_classes(data_dir),
      extractor=features_lib.ClassifierFeatures(_tiny_classifier(), NETWORK,
                                                feature_layer="features"),
      references=sample_scores.ReferenceSpec(data_dir,
                                             splits=("train", "validation"),
                                             keep_features=30),
      settings=synthetic_dataset.GenerationSettings(batch_size=10,
                                                    examples_per_shard=10,
                                                    image_format="png",
                                                    sheet_per_class=1,
                                                    progress_every_seconds=0))


def _metric_kwargs():
  return dict(num_images=NUM_IMAGES, kid_subsets=5, kid_subset_size=10)


def _run_sweep(out, stages, make_cascade, setup, *, references=None,
               cas_fn=None, cas_name=scoring.DEFAULT_CAS_NAME, stage_names=None,
               print_fn=lambda _: None, **settings):
  """``Sweep(...).run()`` scored with the setup's extractor; ``settings``
  are ``SweepSettings``'."""
  scorer = scoring.PointScorer(setup["extractor"], references or
                               setup["references"], cas_fn=cas_fn,
                               cas_name=cas_name)
  return sweep.Sweep(out, sweep.SweepSettings(**settings), stages, make_cascade,
                     setup["classes"], scorer, setup["settings"],
                     stage_names=stage_names, print_fn=print_fn).run()


class _Recorder:
  """make_cascade that keeps the cascades it built."""

  def __init__(self, allowed=True):
    self.built = []
    self.allowed = allowed

  def __call__(self, stages):
    assert self.allowed, "no point should be generated"
    self.built.append(cascade_lib.Cascade(stages))
    return self.built[-1]


def test_explicit_points_mix_samplers_with_their_own_step_fields():
  points = grid_lib.expand_grid(
      [{"sampler": "ddpm", "timestep_respacing": 250, "steps": None},
       {"sampler": "dpmpp_2m", "timestep_respacing": None, "steps": 15}])
  assert [p.parameters for p in points
         ] == [{"sampler": "ddpm", "timestep_respacing": "250", "steps": None},
               {"sampler": "dpmpp_2m", "timestep_respacing": None, "steps": 15}]
  assert points[1].name == "sampler_dpmpp_2m-timestep_respacing_None-steps_15"
  for bad, message in (([{"sampler": "ddpm"}, {"steps": 3}], "same fields"),
                       ([{"sampler": "ddpm"}, {"sampler": "ddpm"}],
                        "a point twice"), ([{"nope": 1}], "not a Stage field"),
                       ([{}], "non-empty")):
    with pytest.raises(ValueError, match=message):
      grid_lib.expand_grid(bad)


def test_grid_points_names_and_checks():
  points = grid_lib.expand_grid(
      {"guidance_weight": [1, 1.25], "timestep_respacing": [128, "ddim32"]})
  assert [p.parameters for p in points
         ] == [{"guidance_weight": 1.0, "timestep_respacing": "128"},
               {"guidance_weight": 1.0, "timestep_respacing": "ddim32"},
               {"guidance_weight": 1.25, "timestep_respacing": "128"},
               {"guidance_weight": 1.25, "timestep_respacing": "ddim32"}]
  assert points[2].name == "guidance_weight_1.25-timestep_respacing_128"
  for grid, message in (({}, "empty"), ({"model_dir": ["x"]}, "cannot sweep"),
                        ({"aug_level": []},
                         "no values"), ({"aug_level": [0.1, 0.1]}, "twice")):
    with pytest.raises(ValueError, match=message):
      grid_lib.expand_grid(grid)
  assert grid_lib.resolve_stage("sr", 2, ["base", "sr"]) == 1
  assert grid_lib.resolve_stage(0, 2) == 0
  with pytest.raises(ValueError, match="no stage named"):
    grid_lib.resolve_stage("sr256", 2, ["base", "sr"])
  stages = [cascade_lib.Stage("base"), cascade_lib.Stage("sr")]
  with pytest.raises(ValueError, match="logvar_coeff is a DDPM setting"):
    grid_lib.point_stages(stages, 1, {"sampler": "ddim", "logvar_coeff": 0.1})
  truncating = grid_lib.expand_grid({"aug_level": [0.1], "truncated": [True]})
  assert not grid_lib.reuses_earlier_stages(stages, 1, truncating)
  assert grid_lib.reuses_earlier_stages(
      stages, 1, grid_lib.expand_grid({"aug_level": [0.1, 0.2]}))
  assert not grid_lib.reuses_earlier_stages(
      stages, 0, grid_lib.expand_grid({"guidance_weight": [1.0]}))


def test_base_sweep_killed_mid_point_resumes_exactly_the_missing_points(
    setup, tmp_path):
  out = str(tmp_path / "base_sweep")
  stages = [cascade_lib.Stage(setup["base_dir"], timestep_respacing="3")]
  grid = {"guidance_weight": [1.0, 3.0], "timestep_respacing": ["2", "3"]}
  cas_calls = []

  def cas_fn(synthetic_dir):
    # A stand-in for a trained classifier: a deterministic score of the set.
    manifest = split_manifest.read(synthetic_dir, "train")
    cas_calls.append(os.path.basename(synthetic_dir))
    assert manifest.complete and manifest.num_examples == NUM_IMAGES
    return {"top1": 0.1 * len(cas_calls), "top5": 0.5}

  def kill_in_third_point(line):
    # The first batch of point 3's second shard is written, not renamed.
    if line.startswith("[point 3/4") and "shard 2/2" in line:
      raise KilledForTest(line)

  def run(make_cascade, print_fn=lambda _: None, **kwargs):
    return _run_sweep(out, stages, make_cascade, setup, stage=0, grid=grid,
                      cas_fn=cas_fn, cas_name="stand-in CAS", print_fn=print_fn,
                      **dict(_metric_kwargs(), **kwargs))

  with pytest.raises(KilledForTest):
    run(_Recorder(), print_fn=kill_in_third_point)
  names = [p.name for p in grid_lib.expand_grid(grid)]
  assert len(records.read_csv(os.path.join(out, records.CSV_FILE))) == 2
  third = os.path.join(out, sweep.POINTS_DIR, names[2])
  assert not os.path.exists(os.path.join(third, sample_scores.METRICS_FILE))
  assert os.listdir(third).count("train-00000-of-00002") == 1
  assert "train-00001-of-00002" not in os.listdir(third)

  recorder = _Recorder()
  result = run(recorder)
  assert result.skipped == names[:2] and result.computed == names[2:]
  assert [c.stages[0].guidance_weight for c in recorder.built] == [3.0, 3.0]
  summary = json.load(
      open(os.path.join(third, "summary.worker-00000-of-00001.json")))
  assert summary["shards_written_now"] == ["train-00001-of-00002"]
  assert cas_calls == names  # once per point, on its complete set

  rows = records.read_csv(result.csv_path)
  assert [(r["guidance_weight"], r["timestep_respacing"]) for r in rows
         ] == [("1", "2"), ("1", "3"), ("3", "2"), ("3", "3")]
  labels = [
      f"FID@20 vs train ({NETWORK})", f"FID@20 vs validation ({NETWORK})",
      f"KID@20 vs train ({NETWORK})", f"precision@20 vs train ({NETWORK})",
      f"recall@20 vs validation ({NETWORK})", f"IS@20 ({NETWORK})",
      "CAS top-1@20 vs validation (stand-in CAS)"
  ]
  for row in rows:
    for label in labels:
      assert math.isfinite(float(row[label])), (label, row)
    assert row["resolution"] == "8" and row["num_images"] == "20"
  assert rows[0]["network_evaluations_per_image"] == "2"  # unguided, 2 steps
  assert rows[3]["network_evaluations_per_image"] == "6"  # guided, 3 steps
  fids = {r[labels[1]] for r in rows}
  assert len(fids) == 4  # the swept settings change the samples

  plots = {os.path.basename(p.path): p for p in result.plots}
  metric_plot = plots[
      "fid_20_vs_validation_vs_guidance_weight_by_timestep_respacing.png"]
  assert (metric_plot.x_label, metric_plot.y_label) == ("guidance_weight",
                                                        labels[1])
  fid_is = plots["pareto_fid_20_vs_train_vs_is_20_along_guidance_weight_by_"
                 "timestep_respacing.png"]
  assert (fid_is.x_label, fid_is.y_label) == (labels[5], labels[0])
  cas_fid = plots["pareto_fid_20_vs_validation_vs_cas_top_1_20_vs_validation_"
                  "along_guidance_weight_by_timestep_respacing.png"]
  assert (cas_fid.x_label, cas_fid.y_label) == (labels[6], labels[1])
  for info in result.plots:
    assert open(info.path, "rb").read(8) == PNG_MAGIC

  again = run(_Recorder(allowed=False))
  assert again.computed == [] and again.skipped == names
  assert records.read_csv(again.csv_path) == rows
  with pytest.raises(settings_record.SettingsConflictError,
                     match=r"plan\.class_counts\[0\]: 2 -> 3"):
    run(_Recorder(allowed=False), num_images=30)


def test_sweep_of_explicit_points_mixes_ddpm_and_solver_settings(
    setup, tmp_path):
  stages = [cascade_lib.Stage(setup["base_dir"], timestep_respacing="3")]
  grid = [{"sampler": "ddpm", "timestep_respacing": "2", "steps": None},
          {"sampler": "dpmpp_2m", "timestep_respacing": None, "steps": 2}]
  result = _run_sweep(
      str(tmp_path / "points"), stages, _Recorder(), setup,
      references=dataclasses.replace(setup["references"],
                                     splits=("validation",)), stage=0,
      grid=grid, plot_views=[["steps", "sampler"]], **_metric_kwargs())
  rows = records.read_csv(result.csv_path)
  assert [(r["sampler"], r["timestep_respacing"], r["steps"]) for r in rows
         ] == [("ddpm", "2", "None"), ("dpmpp_2m", "None", "2")]
  assert [r["network_evaluations_per_image"] for r in rows] == ["2", "2"]
  label = f"FID@20 vs validation ({NETWORK})"
  assert rows[0][label] != rows[1][label]


def test_super_resolution_sweep_generates_the_earlier_stage_once(
    setup, tmp_path):
  out = str(tmp_path / "sr_sweep")
  stages = [
      cascade_lib.Stage(setup["base_dir"], timestep_respacing="2"),
      cascade_lib.Stage(setup["sr_dir"], timestep_respacing="2", aug_level=0.1)
  ]
  recorder = _Recorder()
  result = _run_sweep(
      out, stages, recorder, setup,
      references=dataclasses.replace(setup["references"],
                                     splits=("validation",)), stage="sr",
      grid={"aug_level": [0.0, 0.3]}, stage_names=["base", "sr"],
      **_metric_kwargs())
  # The base stage alone once, then each point's full cascade (whose base
  # is loaded, for its settings and provenance, but not sampled).
  assert [len(c.stages) for c in recorder.built] == [1, 2, 2]
  earlier = split_manifest.read(os.path.join(out, sweep.EARLIER_STAGES_DIR),
                                "train")
  assert earlier.complete and earlier.num_examples == NUM_IMAGES
  rows = records.read_csv(result.csv_path)
  assert [r["aug_level"] for r in rows] == ["0", "0.3"]
  assert all(r["resolution"] == "16" for r in rows)
  assert {os.path.basename(p.path) for p in result.plots} >= {
      "fid_20_vs_validation_vs_aug_level.png",
      "pareto_fid_20_vs_validation_vs_is_20_along_aug_level.png"
  }

  # The pixels are a full cascade's: the last point's cascade, sampling
  # both stages, makes them again.
  point_dir = os.path.join(out, sweep.POINTS_DIR, "aug_level_0.3")
  manifest = split_manifest.read(point_dir, "train")
  stored = list(
      reader.read(manifest.shard_paths(point_dir)[:1]).as_numpy_iterator())
  labels = np.array([e[schema.LABEL] for e in stored])
  ids = plan_lib.example_id(labels, [e[schema.CLASS_INDEX] for e in stored])
  full = recorder.built[-1]
  assert full.stages[1].aug_level == 0.3
  images = full.sample(np.stack([np.zeros_like(ids), ids], axis=1), labels)
  np.testing.assert_array_equal(images,
                                np.stack([e[schema.IMAGE] for e in stored]))
