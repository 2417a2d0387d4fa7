"""tools/generate.py: a killed worker restarts into exactly the planned set;
two workers, or two replicas, write the same files as one."""

import json
import os
import re
import signal
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import settings_record
from cdm_tf.data import class_names
from cdm_tf.data import schema
from cdm_tf.generation import cascade as cascade_lib
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import tiny_cascade

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "generate.py")
GIN = os.path.join(ROOT, "gin", "generation", "fashion_mnist_16_to_32.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
REAL_PER_CLASS = 5
MULTIPLIER = 0.6  # 3 images per class, 30 in all
EXAMPLES_PER_SHARD = 8  # 4 shards: 8, 8, 8, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("generate")
  base_dir, sr_dir = tiny_cascade.export_tiny_cascade(str(root / "exports"))
  data_dir = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(REAL_PER_CLASS, 1))
  bindings = [
      f"BASE_MODEL_DIR = '{base_dir}'",
      f"SR_MODEL_DIR = '{sr_dir}'",
      "base/cascade.Stage.steps = 4",
      "sr/cascade.Stage.steps = 3",
      f"synthetic_dataset.GenerationSettings.examples_per_shard = "
      f"{EXAMPLES_PER_SHARD}",
      "synthetic_dataset.GenerationSettings.batch_size = 2",
      "synthetic_dataset.GenerationSettings.progress_every_seconds = 0",
      "synthetic_dataset.GenerationSettings.sheet_per_class = 2",
  ]
  gin.clear_config()
  configuration.parse_gin([GIN], bindings)
  settings = synthetic_dataset.GenerationSettings()
  cascade = cascade_lib.Cascade()
  gin.clear_config()
  classes = class_names.load_classes(data_dir)
  plan = plan_lib.GenerationPlan(np.full(10, int(REAL_PER_CLASS * MULTIPLIER)),
                                 EXAMPLES_PER_SHARD)
  reference = str(root / "reference")
  synthetic_dataset.generate(reference, cascade, plan, classes, settings,
                             print_fn=lambda _: None)
  return dict(root=root, data_dir=data_dir, bindings=bindings,
              settings=settings, cascade=cascade, classes=classes, plan=plan,
              reference=reference)


def _command(setup, output_dir, *flags):
  return [
      sys.executable, TOOL, f"--gin_file={GIN}",
      *[f"--gin_bindings={b}" for b in setup["bindings"]],
      f"--real_data_dir={setup['data_dir']}", f"--multiplier={MULTIPLIER}",
      f"--output_dir={output_dir}", *flags
  ]


def _shard_bytes(directory):
  return {
      os.path.basename(p): open(p, "rb").read()
      for p in shard_writer.complete_shards(directory, "train")
  }


def _records(directory):
  """Every record, parsed independently of the package's readers."""
  records = []
  for path in shard_writer.complete_shards(directory, "train"):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      features = tf.train.Example.FromString(raw).features.feature
      image = tf.io.decode_png(
          features[schema.TPU_IMAGE].bytes_list.value[0]).numpy()
      records.append({
          "label": features[schema.TPU_LABEL].int64_list.value[0] - 1,
          "id": features[schema.EXAMPLE_ID].bytes_list.value[0].decode(),
          "class_index": features[schema.CLASS_INDEX].int64_list.value[0],
          "seed": list(features[schema.SEED].int64_list.value),
          "shape": image.shape, "pixels": image.astype(np.int32)
      })
  return records


def _check_complete_set(directory, plan):
  records = _records(directory)
  assert len(records) == plan.num_examples
  assert len({r["id"] for r in records}) == plan.num_examples
  counts = np.bincount([r["label"] for r in records], minlength=10)
  np.testing.assert_array_equal(counts, plan.class_counts)
  for r in records:
    assert r["shape"] == (16, 16, 3)
    assert r["id"] == plan_lib.example_id_string(r["label"], r["class_index"])
    assert r["seed"] == [
        0, int(plan_lib.example_id(r["label"], r["class_index"]))
    ]
  manifest = split_manifest.read(directory, "train")
  assert manifest.complete and manifest.num_examples == plan.num_examples
  assert list(manifest.class_counts) == plan.class_counts.tolist()
  assert not [n for n in os.listdir(directory) if n.startswith(".tmp-")]


def test_reference_set_is_the_plan(setup):
  _check_complete_set(setup["reference"], setup["plan"])
  summary = json.load(
      open(
          os.path.join(setup["reference"],
                       "summary.worker-00000-of-00001.json")))
  assert summary["images_written_now"] == 30 and summary["split_complete"]
  # Base: 4 steps x 2 (guidance 1.25); super-resolution: 3 steps.
  assert summary["network_evaluations_per_image"] == 11
  sheet = tf.io.decode_png(
      open(
          os.path.join(setup["reference"],
                       "contact_sheet.worker-00000-of-00001.png"), "rb").read())
  assert sheet.shape[0] > 10 * 32  # one row per class


def test_two_workers_write_the_single_worker_set(setup, tmp_path):
  out = str(tmp_path / "two")
  kwargs = dict(settings=setup["settings"], num_workers=2,
                print_fn=lambda _: None)
  first = synthetic_dataset.generate(out, setup["cascade"], setup["plan"],
                                     setup["classes"], worker_index=1, **kwargs)
  assert first["shards"] == ["train-00001-of-00004", "train-00003-of-00004"]
  assert not first["split_complete"]
  assert not tf.io.gfile.exists(split_manifest.file_path(out, "train"))
  second = synthetic_dataset.generate(out, setup["cascade"], setup["plan"],
                                      setup["classes"], worker_index=0,
                                      **kwargs)
  assert second["split_complete"]
  assert _shard_bytes(out) == _shard_bytes(setup["reference"])
  _check_complete_set(out, setup["plan"])


def test_resized_jpeg_output_and_a_worker_without_shards(setup, tmp_path):
  out = str(tmp_path / "jpeg")
  plan = plan_lib.GenerationPlan(plan_lib.explicit_counts([4], 3, 10),
                                 examples_per_shard=3)
  settings = synthetic_dataset.GenerationSettings(batch_size=2,
                                                  examples_per_shard=3,
                                                  image_format="jpeg",
                                                  output_resolution=24,
                                                  sheet_per_class=1)
  idle = synthetic_dataset.generate(out, setup["cascade"], plan,
                                    setup["classes"], settings, num_workers=2,
                                    worker_index=1, print_fn=lambda _: None)
  assert idle["shards"] == [] and not idle["split_complete"]
  summary = synthetic_dataset.generate(out, setup["cascade"], plan,
                                       setup["classes"], settings,
                                       num_workers=2, worker_index=0,
                                       print_fn=lambda _: None)
  assert summary["split_complete"]
  manifest = split_manifest.read(out, "train")
  assert manifest.image_format == "jpeg" and manifest.class_counts[4] == 3
  for raw in tf.data.TFRecordDataset(
      manifest.shard_paths(out)).as_numpy_iterator():
    features = tf.train.Example.FromString(raw).features.feature
    encoded = features[schema.TPU_IMAGE].bytes_list.value[0]
    assert encoded[:2] == b"\xff\xd8"  # JPEG
    assert tf.io.decode_jpeg(encoded).shape == (24, 24, 3)
    assert features[schema.TPU_FORMAT].bytes_list.value[0] == b"JPEG"


def test_other_settings_in_the_same_directory_are_refused(setup):
  settings = synthetic_dataset.GenerationSettings(
      **{**vars(setup["settings"]), "base_seed": 1})
  record = re.escape(synthetic_dataset.record_path(setup["reference"], "train"))
  with pytest.raises(
      settings_record.SettingsConflictError, match=(
          "already holds a 'train' set generated with other settings "
          f"\\(settings.base_seed: 0 -> 1; see {record}\\); use a new output "
          "directory or the same settings$")):
    synthetic_dataset.generate(setup["reference"], setup["cascade"],
                               setup["plan"], setup["classes"], settings,
                               print_fn=lambda _: None)


def test_sigkill_mid_shard_then_restart_completes_the_plan(setup, tmp_path):
  out = str(tmp_path / "killed")
  process = subprocess.Popen(_command(setup, out), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=ENV)
  seen = []
  for line in process.stdout:
    seen.append(line)
    if "shard 2/4" in line:  # the first batch of the second shard is done
      process.send_signal(signal.SIGKILL)
      break
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL, "".join(seen)
  names = os.listdir(out)
  assert "train-00000-of-00004" in names
  assert "train-00001-of-00004" not in names
  assert [n for n in names if n.startswith(".tmp-")]  # the cut shard
  assert "manifest-train.json" not in names

  result = subprocess.run(_command(setup, out), capture_output=True, text=True,
                          env=ENV, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "removed the incomplete shard train-00001-of-00004" in result.stdout
  assert "1 already complete, 3 to write" in result.stdout
  assert _shard_bytes(out) == _shard_bytes(setup["reference"])
  _check_complete_set(out, setup["plan"])


def test_two_cpu_replicas_write_the_same_pixels(setup, tmp_path):
  out = str(tmp_path / "mirrored")
  result = subprocess.run(
      _command(setup, out, "--strategy=mirrored", "--cpu_replicas=2"),
      capture_output=True, text=True, env=ENV, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "on 2 replica(s)" in result.stdout
  # Each replica runs the U-Net on half the batch, and oneDNN's kernels for
  # another batch size round differently in the last bits (about 1e-6 here),
  # so a pixel at a rounding boundary may move by one level; nothing more.
  mirrored, reference = [{r["id"]: r["pixels"]
                          for r in _records(d)}
                         for d in (out, setup["reference"])]
  assert sorted(mirrored) == sorted(reference)
  differences = np.stack(
      [np.abs(mirrored[k] - reference[k]) for k in sorted(reference)])
  assert differences.max() <= 1
  assert np.count_nonzero(differences) <= 1e-3 * differences.size


def test_first_stage_alone_makes_what_the_next_stage_upsamples(setup, tmp_path):
  out = str(tmp_path / "base_only")
  result = subprocess.run(_command(setup, out,
                                   "--num_stages=1"), capture_output=True,
                          text=True, env=ENV, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  base = {r["id"]: r for r in _records(out)}
  reference = {r["id"]: r for r in _records(setup["reference"])}
  assert base.keys() == reference.keys()
  assert {r["shape"] for r in base.values()} == {(8, 8, 3)}
  # The second stage upsamples them into the two-stage set's images.
  ids = sorted(base)[:4]
  upsampled = setup["cascade"].sample(
      np.array([base[i]["seed"] for i in ids]),
      np.array([base[i]["label"] for i in ids]), first_stage=1,
      low_res=np.stack([base[i]["pixels"] for i in ids]).astype(np.uint8))
  # Batches of another size may round differently in the last bit.
  difference = np.abs(
      upsampled.astype(np.int32) -
      np.stack([reference[i]["pixels"] for i in ids]))
  assert difference.max() <= 1 and difference.mean() < 0.01


def test_dry_run_and_bad_flags(setup, tmp_path):
  out = str(tmp_path / "dry")
  result = subprocess.run(
      _command(setup, out, "--dry_run", "--num_workers=3", "--worker_index=2"),
      capture_output=True, text=True, env=ENV, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "30 images of 10 classes in 4 shards of up to 8" in result.stdout
  assert "worker 2 of 3: 1 shards, 8 images (shards 2)" in result.stdout
  assert "11 per image, 88 for this worker, 330 in total" in result.stdout
  assert not os.path.exists(out)
  for flags, message in ((["--total=10"], "exactly one of"), ([
      "--worker_index=3", "--num_workers=3"
  ], "worker_index must be in"), (["--gin_bindings=cascade.Cascade.nope = 1"],
                                  "bad gin configuration"),
                         (["--num_stages=3"], "num_stages must be in 1..2")):
    result = subprocess.run(_command(setup, out, *flags), capture_output=True,
                            text=True, env=ENV, timeout=300, check=False)
    assert result.returncode == 2, (flags, result.stderr[-2000:])
    assert message in result.stderr, (flags, result.stderr[-2000:])
