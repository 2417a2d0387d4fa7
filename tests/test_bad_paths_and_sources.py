"""Bad user input and awkward paths: errors name the input and what to do,
before anything is written; directories with glob characters in their
names are read like any other; killed writers' temporaries are cleaned;
a worker runs once per output directory."""

import gzip
import os
import re
import signal
import subprocess
import sys
import time
import types
import uuid

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import configuration
from cdm_tf import files
from cdm_tf import settings_record
from cdm_tf.data import class_names
from cdm_tf.data import imagenet_reader
from cdm_tf.data import inspection
from cdm_tf.data_preparation import fashion_mnist
from cdm_tf.diffusion_training import trainer
from cdm_tf.generation import plan as plan_lib
from cdm_tf.generation import synthetic_dataset
from cdm_tf.models import diffusion_model
from cdm_tf.models import export
from cdm_tf.pipeline import run_outputs
from cdm_tf.synthetic_set import shard_writer
from cdm_tf.synthetic_set import split_manifest
from cdm_tf.training import loop
from tests import fashion_mnist_subset
from tests import tiny_cascade

# Names with every glob metacharacter, the escape character included.
AWKWARD_NAMES = ["data[1]", "a*b?", "x]y", "back\\slash", "[ab]"]

# --------------------------------------------------- Fashion-MNIST sources


def _tiny_source(directory, sizes=(20, 10)):
  """Random IDX files with ``sizes`` train / validation images: what the
  converter reads, without the real data."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for (images_file, labels_file), n in zip(fashion_mnist.SPLIT_FILES.values(),
                                           sizes):
    fashion_mnist_subset.write_idx(os.path.join(directory, images_file),
                                   rng.integers(0, 256, (n, 28, 28)), 0x803)
    fashion_mnist_subset.write_idx(os.path.join(directory, labels_file),
                                   np.arange(n) % 10, 0x801)
  return directory


@pytest.fixture
def source(tmp_path):
  return _tiny_source(str(tmp_path / "source"))


@pytest.mark.parametrize("pad_to,problem", [(27, "smaller than the 28x28"),
                                            (0, "smaller"), (-32, "smaller"),
                                            (257, "larger than 256"),
                                            ("32", "not an integer"),
                                            (32.0, "not an integer"),
                                            (True, "not an integer")])
def test_bad_pad_to_is_refused_before_writing(tmp_path, source, pad_to,
                                              problem):
  out = str(tmp_path / "out")
  with pytest.raises(
      ValueError,
      match=(f"pad_to={pad_to!r}.* {problem}.*--pad_to.*from 28 to 256")):
    fashion_mnist.convert(out, source_dir=source, pad_to=pad_to)
  assert not os.path.exists(out)


def test_bad_image_format_is_refused_before_writing(tmp_path, source):
  out = str(tmp_path / "out")
  with pytest.raises(ValueError, match="'gif' is not one of png, jpeg"):
    fashion_mnist.convert(out, source_dir=source, image_format="gif")
  assert not os.path.exists(out)


def test_unusable_source_dir_is_named(tmp_path, source):
  out = str(tmp_path / "out")
  missing = str(tmp_path / "nowhere")
  with pytest.raises(
      FileNotFoundError,
      match=(f"{re.escape(missing)} does not exist .--source_dir.; give the "
             "directory that holds t10k-images")):
    fashion_mnist.convert(out, source_dir=missing)
  a_file = os.path.join(source, "train-images-idx3-ubyte.gz")
  with pytest.raises(
      NotADirectoryError,
      match=(f"{re.escape(a_file)} is not a directory .--source_dir")):
    fashion_mnist.convert(out, source_dir=a_file)
  os.remove(os.path.join(source, "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(
      FileNotFoundError,
      match=(f"t10k-labels-idx1-ubyte.gz missing from the Fashion-MNIST source "
             f"directory {re.escape(source)} .--source_dir")):
    fashion_mnist.convert(out, source_dir=source)
  assert not os.path.exists(out)


def _cut(path, keep):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:keep] if keep >= 0 else data[:len(data) + keep])


def _damage_truncated(path):
  _cut(path, -20)


def _damage_not_gzip(path):
  with open(path, "wb") as f:
    f.write(b"<html>404 not found</html>")


def _damage_flipped_bytes(path):
  with open(path, "rb") as f:
    data = bytearray(f.read())
  for i in range(20, len(data) - 8, 7):
    data[i] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(data))


def _damage_magic(path):
  with gzip.open(path, "wb") as f:
    f.write(b"\0\0\x0d\x03" + b"\0" * 12)


def _damage_size(path):
  fashion_mnist_subset.write_idx(path, np.zeros((3, 28, 28)), 0x803)
  with gzip.open(path, "rb") as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(data[:-100])


@pytest.mark.parametrize(
    "damage,problem",
    [(_damage_truncated, "corrupt or truncated gzip data"),
     (_damage_not_gzip, "corrupt or truncated gzip data"),
     (_damage_flipped_bytes, "corrupt or truncated gzip data"),
     (_damage_magic, "not an unsigned-byte IDX file .magic number 0x00000d03"),
     (_damage_size, "header promises .* bytes but the file holds 2252")])
def test_damaged_source_file_is_named_before_writing(tmp_path, source, damage,
                                                     problem):
  # The validation split is read after train: nothing of train may be
  # written before the damage is found.
  path = os.path.join(source, "t10k-images-idx3-ubyte.gz")
  damage(path)
  out = str(tmp_path / "out")
  with pytest.raises(
      ValueError, match=(
          f"{problem}.* in {re.escape(path)} .--source_dir.; replace it with "
          "an intact copy")):
    fashion_mnist.convert(out, source_dir=source)
  assert not os.path.exists(out)


def test_labels_that_do_not_fit_the_images_are_named(tmp_path, source):
  labels = os.path.join(source, "train-labels-idx1-ubyte.gz")
  fashion_mnist_subset.write_idx(labels, np.full(20, 10), 0x801)
  with pytest.raises(
      ValueError, match=f"label 10 is outside 0..9, in "
      f"{re.escape(labels)} .--source_dir"):
    fashion_mnist.convert(str(tmp_path / "out"), source_dir=source)
  fashion_mnist_subset.write_idx(labels, np.zeros(7), 0x801)
  with pytest.raises(
      ValueError, match=r"images \(20, 28, 28\) and labels "
      r"\(7,\) are not N 28x28 images with N labels"):
    fashion_mnist.convert(str(tmp_path / "out"), source_dir=source)
  assert not os.path.exists(tmp_path / "out")


def test_failure_mid_conversion_leaves_no_partial_shard(tmp_path, source,
                                                        monkeypatch):
  out = str(tmp_path / "out")
  encode = shard_writer.encode_example
  calls = []

  def failing_encode(*args, **kwargs):
    calls.append(1)
    if len(calls) == 8:  # inside the third train shard
      raise OSError("disk full")
    return encode(*args, **kwargs)

  monkeypatch.setattr(shard_writer, "encode_example", failing_encode)
  with pytest.raises(OSError, match="disk full"):
    fashion_mnist.convert(out, source_dir=source)
  names = sorted(os.listdir(out))
  assert not [n for n in names if files.TMP_MARKER in n], names
  assert not [n for n in names if n.startswith("manifest-")], names
  # Readers refuse the incomplete set rather than reading part of it.
  with pytest.raises(ValueError, match="6 of the 8 train shards are missing"):
    imagenet_reader.list_files(out, split="train")
  monkeypatch.setattr(shard_writer, "encode_example", encode)
  manifests = fashion_mnist.convert(out, source_dir=source)
  assert manifests["train"].num_examples == 20
  assert manifests["validation"].num_examples == 10


def test_other_settings_on_a_complete_conversion_are_a_conflict(
    tmp_path, source):
  out = str(tmp_path / "out")
  fashion_mnist.convert(out, source_dir=source)
  before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
  manifest = re.escape(split_manifest.file_path(out, "train"))
  for kwargs, differing in (({"pad_to": 36}, "pad_to: 32 -> 36"),
                            ({"seed": 1}, "shuffle_seed: 0 -> 1"),
                            ({"image_format": "jpeg"},
                             "image_format: 'png' -> 'jpeg'")):
    with pytest.raises(
        settings_record.SettingsConflictError, match=(
            f"^the complete train split in {re.escape(out)} was converted with "
            f"other settings \\({differing}; see {manifest}\\); use a new "
            "--output_dir, or the same settings$")):
      fashion_mnist.convert(out, source_dir=source, **kwargs)
  assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)
         } == before
  fashion_mnist.convert(out, source_dir=source)  # same settings: kept
  assert issubclass(settings_record.SettingsConflictError,
                    configuration.ConflictError)


# ------------------------------------------------------------ inspection


@pytest.mark.parametrize(
    "values,problem", [(["abc"], "resolution 'abc' is not an integer"),
                       (["16", "3.5"], "resolution '3.5' is not an integer"),
                       (["0"], "resolution 0 is outside 1..1024"),
                       (["-16", "32"], "resolution -16 is outside 1..1024"),
                       (["16", "4096"], "resolution 4096 is outside 1..1024"),
                       (["16", " 16"], "resolution 16 is given twice"),
                       ([], "no resolutions given")])
def test_bad_resolutions_are_named(values, problem):
  given = ",".join(values)
  with pytest.raises(
      ValueError, match=(
          f"^{problem} \\(--resolutions={given}\\); give distinct image sides "
          "from 1 to 1024")):
    inspection.parse_resolutions(values)


def test_resolutions_parse_in_order():
  assert inspection.parse_resolutions([" 32", "16"]) == [32, 16]
  assert inspection.parse_resolutions((8, np.int64(16))) == [8, 16]


def test_inspect_split_checks_resolutions_before_reading(tmp_path):
  with pytest.raises(
      ValueError, match=r"resolution 0 is outside .*"
      r"\(resolutions=16,0\)"):
    inspection.inspect_split(str(tmp_path / "absent"), "train", [16, 0])


# ------------------------------------------ glob characters in directories


def _write_shards(directory, split, num_shards, per_shard=2):
  classes = [
      class_names.ClassInfo(synset=f"c{i}", name=f"c{i}") for i in range(2)
  ]
  infos = []
  for index in range(num_shards):
    path = os.path.join(directory,
                        shard_writer.shard_file_name(split, index, num_shards))
    with shard_writer.ShardWriter(path, 2) as writer:
      for i in range(per_shard):
        image = np.full((4, 4, 3), 10 * index + i, np.uint8)
        writer.write(
            shard_writer.encode_example(image, i % 2, classes,
                                        image_format="png"), i % 2)
    infos.append(writer.info)
  split_manifest.write(directory, split, infos, 2, "png")
  return sorted(os.path.join(directory, i.file_name) for i in infos)


def test_glob_escape_matches_awkward_directories_literally(tmp_path):
  for name in AWKWARD_NAMES:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "f.txt").write_text("x")
  # A decoy that the unescaped name "data[1]" would match as a pattern.
  (tmp_path / "data1").mkdir()
  (tmp_path / "data1" / "f.txt").write_text("decoy")
  for name in AWKWARD_NAMES:
    directory = str(tmp_path / name)
    assert files.glob_in(directory,
                         "*.txt") == [os.path.join(directory, "f.txt")], name
    assert tf.io.gfile.glob(files.glob_escape(directory)) == [directory]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_data_directories_with_glob_characters_are_read(tmp_path, name):
  directory = str(tmp_path / name)
  paths = _write_shards(directory, "train", 2)
  # Decoys: shards a pattern reading of the name would find instead.
  _write_shards(str(tmp_path / "data1"), "train", 3)
  _write_shards(str(tmp_path / "a"), "train", 3)
  _write_shards(str(tmp_path / "axbz"), "train", 3)
  assert imagenet_reader.list_files(directory, split="train") == paths
  assert shard_writer.complete_shards(directory, "train") == paths
  assert split_manifest.splits(directory) == ["train"]
  # A file, and a file pattern inside the directory.
  assert imagenet_reader.list_files(paths[0]) == paths[:1]
  assert imagenet_reader.list_files(os.path.join(directory, "train-*")) == paths
  # Stale temporaries are found and removed, of every shard or of one.
  stale = [
      os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{n}")
      for n in ("train-00000-of-00002", "train-00001-of-00002")
  ]
  manifest_tmp = split_manifest.file_path(
      directory, "train") + (f".tmp-{uuid.uuid4().hex}")
  for path in stale + [manifest_tmp]:
    open(path, "wb").close()
  assert shard_writer.remove_stale_temporaries(
      directory, shard_names=["train-00001-of-00002"]) == stale[1:]
  assert shard_writer.remove_stale_temporaries(directory) == sorted(
      [stale[0], manifest_tmp])
  assert not [n for n in os.listdir(directory) if ".tmp-" in n]


def test_glob_patterns_keep_working(tmp_path):
  paths = (_write_shards(str(tmp_path / "data1"), "train", 1) +
           _write_shards(str(tmp_path / "data2"), "train", 1))
  assert imagenet_reader.list_files(str(tmp_path / "data[12]" /
                                        "train-*")) == paths
  assert imagenet_reader.list_files(str(tmp_path / "data?" /
                                        "train-*")) == (paths)
  with pytest.raises(FileNotFoundError, match="no files match"):
    imagenet_reader.list_files(str(tmp_path / "data[34]" / "train-*"))


def test_run_outputs_read_a_model_dir_with_glob_characters(tmp_path):
  model_dir = str(tmp_path / "runs[1]" / "base")
  writer = tf.summary.create_file_writer(
      os.path.join(model_dir, loop.TENSORBOARD_DIR))
  with writer.as_default():
    for step in (1, 2):
      tf.summary.scalar(run_outputs.LOSS_TAG, 0.5 / step, step=step)
  writer.close()
  sheet = os.path.join(model_dir, trainer.SAMPLES_DIR, "step_2.png")
  os.makedirs(os.path.dirname(sheet))
  open(sheet, "wb").close()
  run = run_outputs.read_diffusion_run("base", model_dir)
  assert list(run.loss.steps) == [1, 2]
  assert (run.last_sheet, run.last_sheet_step) == (sheet, 2)


# ------------------------------------------------- killed writers' temps


def test_atomic_write_removes_only_old_temporaries_of_its_path(tmp_path):
  directory = tmp_path / "out[1]"
  directory.mkdir()
  path = str(directory / "summary.json")
  old = f"{path}.tmp-{uuid.uuid4().hex}"
  recent = f"{path}.tmp-{uuid.uuid4().hex}"  # maybe a concurrent writer's
  other = str(directory / f"summary.json2.tmp-{uuid.uuid4().hex}")
  for p in (old, recent, other):
    open(p, "wb").close()
  long_ago = time.time() - 2 * files.STALE_WRITE_SECONDS
  os.utime(old, (long_ago, long_ago))
  os.utime(other, (long_ago, long_ago))
  files.atomic_write_json(path, {"a": 1})
  assert sorted(os.listdir(directory)) == sorted(
      os.path.basename(p) for p in (path, recent, other))


def test_export_removes_temporaries_of_killed_exports(tmp_path):
  directory = str(tmp_path / "model[1]" / "export")
  stale = f"{directory}.tmp-{uuid.uuid4().hex}"
  os.makedirs(stale)
  open(os.path.join(stale, export.UNET_FILE), "wb").close()
  # Not this export's: another path's, and a name export never writes.
  others = [
      str(tmp_path / "model[1]" / f"export2.tmp-{uuid.uuid4().hex}"),
      f"{directory}.tmp-notahexname"
  ]
  for other in others:
    os.makedirs(other)
  unet = tiny_cascade._unet(8)  # pylint: disable=protected-access
  model = diffusion_model.DiffusionModel(unet, schedule="cosine",
                                         num_timesteps=10)
  model.unet.build()
  model.build_all()
  export.export_model(model, directory)
  assert not os.path.exists(stale)
  assert all(os.path.isdir(other) for other in others)
  assert sorted(os.listdir(directory)) == sorted(
      [export.UNET_FILE, export.CONFIG_FILE, export.FINGERPRINT_FILE])

  # A failing export leaves no temporary behind.
  def fail(*args, **kwargs):
    raise OSError("disk full")

  model.unet.save = fail
  with pytest.raises(OSError, match="disk full"):
    export.export_model(model, directory)
  assert files.temporaries_of(directory) == []


# -------------------------------------------------------- worker locks


def test_a_worker_index_runs_once_per_directory(tmp_path):
  out = str(tmp_path / "synthetic[1]")
  os.makedirs(out)
  with synthetic_dataset.worker_lock(out, 3):
    with pytest.raises(
        synthetic_dataset.WorkerRunningError, match=(
            f"^worker 3 is already running on {re.escape(out)} .it holds "
            f"{re.escape(synthetic_dataset.worker_lock_path(out, 3))}.; wait "
            "for it to finish or stop it, or give this process another "
            "--worker_index$")):
      with synthetic_dataset.worker_lock(out, 3):
        pass
    with synthetic_dataset.worker_lock(out, 4):  # another worker: fine
      pass
  with synthetic_dataset.worker_lock(out, 3):  # released
    pass
  assert issubclass(synthetic_dataset.WorkerRunningError,
                    configuration.ConflictError)


def test_a_killed_worker_does_not_block_its_restart(tmp_path):
  out = str(tmp_path / "out")
  os.makedirs(out)
  holder = subprocess.Popen([
      sys.executable, "-c", "import fcntl, sys, time\n"
      "f = open(sys.argv[1], 'a')\n"
      "fcntl.flock(f, fcntl.LOCK_EX)\n"
      "print('locked', flush=True)\n"
      "time.sleep(600)\n",
      synthetic_dataset.worker_lock_path(out, 0)
  ], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(synthetic_dataset.WorkerRunningError,
                       match="worker 0 is already running"):
      with synthetic_dataset.worker_lock(out, 0):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with synthetic_dataset.worker_lock(out, 0):
    pass


def test_generate_refuses_a_second_copy_of_a_live_worker(tmp_path):
  out = str(tmp_path / "out")
  plan = plan_lib.GenerationPlan(np.full(10, 2), examples_per_shard=4)
  classes = [
      class_names.ClassInfo(synset=f"c{i}", name=f"c{i}") for i in range(10)
  ]
  # generate stops before it touches the cascade.
  cascade = types.SimpleNamespace(num_classes=10, num_replicas=1)
  os.makedirs(out)
  live_tmp = os.path.join(out,
                          f".tmp-{uuid.uuid4().hex}-{plan.shard(2).file_name}")
  open(live_tmp, "wb").close()
  with synthetic_dataset.worker_lock(out, 0):
    with pytest.raises(synthetic_dataset.WorkerRunningError,
                       match="worker 0 is already running"):
      synthetic_dataset.generate(
          out, cascade, plan, classes,
          synthetic_dataset.GenerationSettings(batch_size=2), num_workers=2,
          worker_index=0, print_fn=lambda _: None)
  assert os.path.exists(live_tmp)
  assert sorted(os.listdir(out)) == sorted(
      [os.path.basename(live_tmp), ".worker-0.lock"])


def test_buckets_are_not_locked():
  with synthetic_dataset.worker_lock("gs://bucket/synthetic", 0):
    pass
