"""Bad input through the binaries, one row per kind: each exits with its
documented status (cdm_tf/command_line.py: 2 bad input, 3 conflict), prints
exactly one ``error:`` line naming the problem and no traceback, and leaves
every file written before as it was."""

import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from typing import Callable

import pytest
import tensorflow as tf

from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import synthetic_records
from tests import tiny_cascade

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("check_fid_inception", "evaluate", "generate", "inspect_data",
         "make_minilm_reference", "pipeline", "prepare_captions",
         "prepare_data", "subset_data", "sweep", "train", "train_classifier",
         "verify_sampler")
BASE_GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin")
CLASSIFIER_GIN = os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                              "resnet_tiny.gin")
GENERATION_GIN = os.path.join(ROOT, "gin", "generation",
                              "fashion_mnist_16_to_32.gin")
TIMEOUT = 300


def _tool(name):
  return [sys.executable, os.path.join(ROOT, "tools", f"{name}.py")]


class World:
  """Good inputs the rows damage copies of: real data, a synthetic set and
  a cascade export; made on first use, a diffusion run and a classifier run
  with checkpoints, and half a generated set (worker 0 of 2)."""

  def __init__(self, root):
    self._items = {"root": root}
    self._items["data"] = fashion_mnist_subset.prepared(
        os.path.join(root, "fashion"), per_class=(4, 1))
    self._items["synthetic"] = os.path.join(root, "synthetic")
    synthetic_records.write(self["data"], self["synthetic"], per_class=2)
    self._items["base"], self._items["sr"] = (tiny_cascade.export_tiny_cascade(
        os.path.join(root, "cascade")))

  def __getitem__(self, key):
    if key not in self._items:
      self._items[key] = getattr(self, f"_make_{key}")(os.path.join(
          self["root"], key))
    return self._items[key]

  def _make_diffusion_run(self, path):
    _check_runs(_train(self, path))
    return path

  def _make_classifier_run(self, path):
    _check_runs(_train_classifier(self, path))
    return path

  def _make_half_set(self, path):
    """Worker 0 of 2 of a set, by a cascade whose super-resolution stage
    (``half_set_sr``) the row may change."""
    sr = os.path.join(self["root"], "half_set_sr")
    shutil.copytree(self["sr"], sr)
    self._items["half_set_sr"] = sr
    _check_runs(
        _generate(self, path, "--num_workers=2", "--worker_index=0", sr=sr))
    return path


def _check_runs(command):
  result = subprocess.run(command, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  return World(str(tmp_path_factory.mktemp("world")))


def _train(world, model_dir, *bindings, data=None):
  return [
      *_tool("train"), f"--gin_file={BASE_GIN}", f"--model_dir={model_dir}", *[
          f"--gin_bindings={b}"
          for b in ("input_pipeline.diffusion_dataset.data_dir = "
                    f"'{data or world['data']}'", "trainer.train.num_steps = 2",
                    "trainer.train.sample_every = 0",
                    "trainer.train.global_batch_size = 8",
                    "unet.UNet.channel_mult = (1,)",
                    "unet.UNet.attention_resolutions = ()", *bindings)
      ]
  ]


def _train_classifier(world, model_dir, *flags, bindings=(), data=None):
  return [
      *_tool("train_classifier"), f"--gin_file={CLASSIFIER_GIN}",
      f"--model_dir={model_dir}", f"--real_data_dir={data or world['data']}",
      *flags, *[
          f"--gin_bindings={b}"
          for b in ("trainer.train_classifier.num_steps = 2",
                    "trainer.train_classifier.eval_every_epochs = 0",
                    "recipes.ClassifierRecipe.batch_size = 8", *bindings)
      ]
  ]


def _generate(world, output_dir, *flags, bindings=(), data=None, base=None,
              sr=None):
  return [
      *_tool("generate"), f"--gin_file={GENERATION_GIN}",
      f"--real_data_dir={data or world['data']}", "--total=20",
      f"--output_dir={output_dir}", *flags, *[
          f"--gin_bindings={b}" for b in (
              f"BASE_MODEL_DIR = '{base or world['base']}'",
              f"SR_MODEL_DIR = '{sr or world['sr']}'",
              "base/cascade.Stage.steps = 2", "sr/cascade.Stage.steps = 2",
              "synthetic_dataset.GenerationSettings.examples_per_shard = 10",
              "synthetic_dataset.GenerationSettings.batch_size = 10",
              "synthetic_dataset.GenerationSettings.sheet_per_class = 0",
              *bindings)
      ]
  ]


def _copy(source, tmp, name):
  target = os.path.join(tmp, name)
  shutil.copytree(source, target)
  return target


def _rewrite_records(data_dir, change):
  """Rewrites every training record with ``change`` applied (to its
  tf.train.Example's features). Every record: training reads a sample of
  them in two steps, and checks the records it reads."""
  for path in imagenet_reader.list_files(data_dir, "train"):
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        example = tf.train.Example.FromString(record)
        change(example.features.feature)
        writer.write(example.SerializeToString())


def _cut_shard(data_dir):
  path = imagenet_reader.list_files(data_dir, "train")[0]
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2 + 37)


def _out_of_range_label(feature):
  feature[schema.TPU_LABEL].int64_list.value[:] = [11]  # 1-based, 10 classes


def _not_an_image(feature):
  feature[schema.TPU_IMAGE].bytes_list.value[:] = [
      b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
  ]


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)


@dataclasses.dataclass
class Row:
  """One kind of bad input: ``setup(world, tmp)`` returns the command and
  the paths whose files must not change."""
  name: str
  setup: Callable
  status: int
  message: str


def _data_row(name, damage, command, message):
  """A copy of the real data, damaged, given to a binary."""

  def setup(world, tmp):
    data = _copy(world["data"], tmp, "data")
    damage(data)
    return command(world, tmp, data), [data]

  return Row(name, setup, 2, message)


def _train_on(world, tmp, data):
  return _train(world, os.path.join(tmp, "run"), data=data)


def _classify_on(world, tmp, data):
  return _train_classifier(world, os.path.join(tmp, "run"), data=data)


def _inspect(world, tmp, data):
  del world
  return [
      *_tool("inspect_data"), f"--data_dir={data}",
      f"--output_dir={os.path.join(tmp, 'out')}"
  ]


def _generate_with(world, tmp, data):
  return _generate(world, os.path.join(tmp, "set"), data=data)


def _remove_shard(data):
  os.remove(imagenet_reader.list_files(data, "train")[1])


def _resume_row(name, run_key, command, message):
  """A copy of a finished run, resumed with other settings: status 3."""

  def setup(world, tmp):
    run = _copy(world[run_key], tmp, "run")
    return command(world, run), [run]

  return Row(name, setup, 3, message)


def _export_row(name, damage, message):
  """A copy of the super-resolution export, damaged, used to generate."""

  def setup(world, tmp):
    sr = _copy(world["sr"], tmp, "sr")
    damage(sr)
    output = os.path.join(tmp, "set")
    return _generate(world, output, sr=sr), [sr]

  return Row(name, setup, 2, message)


def _truncate_file(path, keep=0.5):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * keep))


def _synthetic_row(name, damage, message):
  """A copy of the synthetic set, damaged, trained on (CAS)."""

  def setup(world, tmp):
    synthetic = _copy(world["synthetic"], tmp, "synthetic")
    damage(synthetic)
    return _train_classifier(world, os.path.join(tmp,
                                                 "run"), "--data=synthetic",
                             f"--synthetic_dir={synthetic}"), [synthetic]

  return Row(name, setup, 2, message)


def _manifest_path(synthetic):
  return split_manifest.file_path(synthetic, "train")


def _edit_manifest(synthetic, edit):
  path = _manifest_path(synthetic)
  with open(path) as f:
    text = f.read()
  _write(path, edit(text).encode())


def _move_one_example_in_manifest(synthetic):
  """Class 0 gains an example class 1 loses, in the manifest only (its
  totals still add up)."""
  path = _manifest_path(synthetic)
  with open(path) as f:
    manifest = json.load(f)
  for counts in [
      manifest["class_counts"], manifest["shards"][0]["class_counts"]
  ]:
    counts[0] += 1
    counts[1] -= 1
  _write(path, json.dumps(manifest).encode())


def _first_shard_name(synthetic):
  return sorted(n for n in os.listdir(synthetic) if n.startswith("train-"))[0]


def _source_row(name, damage, flags, message):
  """prepare_data on a copy of tiny IDX sources, damaged."""

  def setup(world, tmp):
    del world
    source = fashion_mnist_subset.write_source(os.path.join(tmp, "source"),
                                               (2, 1))
    damage(source)
    output = os.path.join(tmp, "out")
    return [
        *_tool("prepare_data"), f"--source_dir={source}",
        f"--output_dir={output}", *flags
    ], [source]

  return Row(name, setup, 2, message)


def _truncate_gz(source):
  path = os.path.join(source, "train-images-idx3-ubyte.gz")
  _truncate_file(path, 0.6)


def _wrong_idx_magic(source):
  path = os.path.join(source, "train-labels-idx1-ubyte.gz")
  with gzip.open(path, "rb") as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x09\x09" + data[4:])


def _replace_stage_weights(world, tmp):
  """Half a set made; then the super-resolution export gets other weights
  (its unet.keras replaced in place) and worker 1 joins."""
  half_set = world["half_set"]
  other = tiny_cascade.export_tiny_cascade(os.path.join(tmp, "other"), seed=1)
  shutil.copyfile(os.path.join(other[1], "unet.keras"),
                  os.path.join(world["half_set_sr"], "unet.keras"))
  return _generate(world, half_set, "--num_workers=2", "--worker_index=1",
                   sr=world["half_set_sr"]), [half_set]


_HELD_LOCKS = []


def _hold_worker_lock(world, tmp):
  """Worker 0's lock held by a live process (this one)."""
  output = os.path.join(tmp, "set")
  os.makedirs(output)
  lock = open(os.path.join(output, ".worker-0.lock"), "w")  # pylint: disable=consider-using-with
  fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  _HELD_LOCKS.append(lock)
  temporary = os.path.join(output, ".tmp-" + "0" * 32 + "-train-00000-of-00002")
  _write(temporary, b"a live worker's shard")
  return _generate(world, output), [output]


def _convert_again(world, tmp):
  del world
  source = fashion_mnist_subset.write_source(os.path.join(tmp, "source"),
                                             (2, 1))
  output = os.path.join(tmp, "out")
  _check_runs([
      *_tool("prepare_data"), f"--source_dir={source}", f"--output_dir={output}"
  ])
  return [
      *_tool("prepare_data"), f"--source_dir={source}",
      f"--output_dir={output}", "--pad_to=36"
  ], [output]


def _command_row(name, command, message, status=2):
  """A command that is bad by its flags alone."""
  return Row(name, lambda world, tmp: (command(world, tmp), []), status,
             message)


ROWS = [
    # Flags: every binary refuses unknown ones with status 2.
    *[
        _command_row(
            f"unknown_flag_{tool}",
            lambda world, tmp, tool=tool: [*_tool(tool), "--no_such_flag=1"],
            "Unknown command line flag 'no_such_flag'") for tool in TOOLS
    ],
    _command_row(
        "malformed_integer_flag", lambda world, tmp:
        [*_train(world, os.path.join(tmp, "r")), "--cpu_replicas=two"],
        "--cpu_replicas"),
    _command_row("missing_required_flag",
                 lambda world, tmp: [*_tool("train"), f"--gin_file={BASE_GIN}"],
                 "--model_dir"),
    _command_row(
        "unexpected_argument",
        lambda world, tmp: [*_train(world, os.path.join(tmp, "r")), "extra"],
        "unexpected arguments ['extra']"),
    # Gin.
    _command_row(
        "missing_gin_file", lambda world, tmp:
        [*_tool("train"), "--gin_file=nope.gin", f"--model_dir={tmp}/r"],
        "gin file not found: nope.gin"),
    _command_row(
        "unknown_gin_configurable", lambda world, tmp: _train(
            world, os.path.join(tmp, "r"), "trainer.no_such.x = 1"), "no_such"),
    _command_row(
        "wrong_type_gin_binding", lambda world, tmp: _train(
            world, os.path.join(tmp, "r"), "trainer.train.num_steps = 'ten'"),
        "num_steps = 'ten' is a string, but the parameter takes a "
        "number"),
    _command_row(
        "wrong_type_gin_binding_classifier",
        lambda world, tmp: _train_classifier(
            world, os.path.join(tmp, "r"), bindings=
            ["recipes.ClassifierRecipe.batch_size = "
             "[8]"]), "batch_size = [8] is a sequence"),
    # Steps and batches that cannot train (tools/train.py).
    _command_row(
        "negative_steps", lambda world, tmp: _train(
            world, os.path.join(tmp, "r"), "trainer.train.num_steps = -5"),
        "num_steps must be positive"),
    _command_row(
        "zero_batch",
        lambda world, tmp: _train(world, os.path.join(tmp, "r"),
                                  "trainer.train.global_batch_size = 0"),
        "global_batch_size 0"),
    _command_row(
        "batch_not_divisible_by_replicas", lambda world, tmp: [
            *_train(world, os.path.join(tmp, "r"),
                    "trainer.train.global_batch_size = 3"),
            "--strategy=mirrored", "--cpu_replicas=2"
        ], "multiple of the 2 replica"),
    # Damaged real data reaching each reader.
    _data_row("cut_shard_train", _cut_shard, _train_on, "bad ImageNet record"),
    # The class-count scan before training finds it first.
    _data_row("cut_shard_train_classifier", _cut_shard, _classify_on,
              "reading stopped at record"),
    _data_row("cut_shard_inspect_data", _cut_shard, _inspect,
              "reading stopped"),
    _data_row("label_out_of_range",
              lambda d: _rewrite_records(d, _out_of_range_label), _train_on,
              "is outside 1..10"),
    _data_row("corrupt_image", lambda d: _rewrite_records(d, _not_an_image),
              _classify_on, "bad ImageNet record"),
    _data_row("missing_shard", _remove_shard, _train_on, "train-00001-of-"),
    _data_row("malformed_classes_json",
              lambda d: _write(os.path.join(d, "classes.json"), b"[{\"syn"),
              _generate_with, "classes.json is not valid JSON"),
    _command_row(
        "nonexistent_real_data_dir", lambda world, tmp: _train_classifier(
            world, os.path.join(tmp, "r"), data=os.path.join(
                tmp, "no_such_dir")), "no_such_dir: no such data directory"),
    _command_row(
        "nonexistent_real_data_dir_generate",
        lambda world, tmp: _generate(world, os.path.join(tmp, "set"), data=os.
                                     path.join(tmp, "no_such_dir")),
        "no_such_dir: no such data directory"),
    _command_row(
        "nonexistent_data_dir_inspect", lambda world, tmp: [
            *_tool("inspect_data"), f"--data_dir={tmp}/no_such_dir",
            f"--output_dir={tmp}/out"
        ], "no_such_dir"),
    # Synthetic sets and their manifests.
    _synthetic_row("malformed_manifest",
                   lambda s: _write(_manifest_path(s), b"{\"split\": "),
                   "is not valid JSON"),
    _synthetic_row(
        "manifest_shard_outside_the_set", lambda s: _edit_manifest(
            s, lambda t: t.replace(_first_shard_name(s), "../" +
                                   _first_shard_name(s))),
        "is not a file of split 'train'"),
    _synthetic_row(
        "manifest_counts_do_not_add_up", lambda s: _edit_manifest(
            s, lambda t: t.replace('"num_examples": 10', '"num_examples": 11', 1
                                  )), "class counts do not add up"),
    _synthetic_row("manifest_counts_disagree_with_shards",
                   _move_one_example_in_manifest,
                   "disagrees with its shards: class 0 has 3 examples"),
    _command_row(
        "split_outside_the_output_dir", lambda world, tmp: _generate(
            world, os.path.join(tmp, "set"), "--split=a/../../x"), "split"),
    # Exported models.
    _export_row("truncated_unet_keras",
                lambda sr: _truncate_file(os.path.join(sr, "unet.keras")),
                "unet.keras cannot be loaded"),
    _export_row(
        "corrupt_unet_keras", lambda sr: _write(os.path.join(sr, "unet.keras"),
                                                b"not a zip file" * 100),
        "unet.keras cannot be loaded"),
    _export_row(
        "malformed_diffusion_json", lambda sr: _write(
            os.path.join(sr, "diffusion.json"), b"{\"schedule\": "),
        "diffusion.json is not valid JSON"),
    _export_row(
        "unknown_diffusion_json_setting", lambda sr: _write(
            os.path.join(sr, "diffusion.json"), b"{\"no_such_setting\": 1}"),
        "diffusion.json holds settings"),
    _command_row(
        "missing_export", lambda world, tmp: _generate(
            world, os.path.join(tmp, "set"), sr=os.path.join(tmp, "none")),
        "is not an exported model"),
    # Resuming a run with another model or optimizer: status 3.
    _resume_row(
        "resume_with_another_model", "diffusion_run",
        lambda world, run: _train(world, run, "trainer.train.num_steps = 4",
                                  "unet.UNet.base_channels = 16"),
        "base_channels: 32 -> 16"),
    _resume_row(
        "resume_with_another_optimizer", "diffusion_run",
        lambda world, run: _train(world, run, "trainer.train.num_steps = 4",
                                  "optimizers.create_optimizer.name = 'sgd'"),
        "optimizer: Adam -> SGD"),
    _resume_row(
        "resume_classifier_with_another_optimizer", "classifier_run",
        lambda world, run: _train_classifier(
            world, run, bindings=[
                "trainer.train_classifier.num_steps = 4",
                "recipes.ClassifierRecipe.weight_decay = 0.5"
            ]), "another model or optimizer"),
    # Conflicts with earlier work or a live process: status 3.
    Row("stage_weights_replaced_after_generation_started",
        _replace_stage_weights, 3, "started with other weights"),
    Row("second_worker_with_the_same_index", _hold_worker_lock, 3,
        "worker 0 is already running"),
    Row("prepare_data_again_with_other_settings", _convert_again, 3,
        "converted with other settings"),
    # prepare_data's sources and flags.
    _source_row("pad_to_below_28", lambda s: None, ["--pad_to=20"],
                "pad_to=20 is smaller than the 28x28"),
    _source_row("pad_to_above_256", lambda s: None, ["--pad_to=300"],
                "pad_to=300 is larger than 256"),
    _source_row("truncated_gz", _truncate_gz, [], "train-images-idx3-ubyte.gz"),
    _source_row("wrong_idx_magic", _wrong_idx_magic, [],
                "train-labels-idx1-ubyte.gz"),
    _command_row(
        "missing_source_dir", lambda world, tmp: [
            *_tool("prepare_data"), f"--source_dir={tmp}/no_such_dir",
            f"--output_dir={tmp}/out"
        ], "no_such_dir"),
    _command_row(
        "bad_resolutions", lambda world, tmp: [
            *_tool("inspect_data"), f"--data_dir={world['data']}",
            "--resolutions=16,abc", f"--output_dir={tmp}/out"
        ], "--resolutions"),
    _command_row(
        "zero_resolution", lambda world, tmp: [
            *_tool("inspect_data"), f"--data_dir={world['data']}",
            "--resolutions=0", f"--output_dir={tmp}/out"
        ], "--resolutions"),
    # Outputs that cannot be written.
    _command_row(
        "output_dir_is_a_file", lambda world, tmp: [
            *_tool("evaluate"), f"--generated_dir={world['synthetic']}",
            f"--real_data_dir={world['data']}", f"--output_dir={world['data']}/"
            "classes.json"
        ], "classes.json"),
]


def _snapshot(paths):
  found = {}
  for path in paths:
    for directory, _, names in os.walk(path):
      for name in names:
        full = os.path.join(directory, name)
        with open(full, "rb") as f:
          found[full] = hashlib.sha256(f.read()).hexdigest()
  return found


def _check_one_error_line(result, status, message):
  assert result.returncode == status, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [
      line for line in result.stderr.splitlines() if line.startswith("error:")
  ]
  assert len(errors) == 1, result.stderr[-3000:]
  assert message in errors[0], errors[0]
  return errors[0]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_gets_one_error_line(world, tmp_path, row):
  command, protected = row.setup(world, str(tmp_path))
  before = _snapshot(protected)
  result = subprocess.run(command, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
  _check_one_error_line(result, row.status, row.message)
  after = _snapshot(protected)
  assert {p: after.get(p) for p in before} == before


def test_disk_full_while_writing_leaves_no_partial_file(tmp_path):
  # A file-size limit stands in for a full disk: writes past it fail (the
  # process ignores SIGXFSZ, as Python does).
  source = fashion_mnist_subset.write_source(str(tmp_path / "source"), (40, 4))
  output = str(tmp_path / "out")

  def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

  result = subprocess.run([
      *_tool("prepare_data"), f"--source_dir={source}", f"--output_dir={output}"
  ], capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          preexec_fn=limit_file_size)
  line = _check_one_error_line(result, 2, "")
  assert "File too large" in line or "No space" in line, line
  # Whatever was written is whole: no temporary or cut shard is left.
  for name in os.listdir(output) if os.path.isdir(output) else ():
    assert ".tmp-" not in name, name


def test_verbosity_shows_the_traceback(world, tmp_path):
  result = subprocess.run([
      *_train(world, str(tmp_path / "r"), "trainer.train.num_steps = -5"),
      "--verbosity=1"
  ], capture_output=True, text=True, timeout=TIMEOUT, check=False)
  assert result.returncode == 2
  assert "Traceback" in result.stderr
  assert result.stderr.count("\nerror: ") + result.stderr.startswith(
      "error: ") == 1


def test_tensorflow_start_up_lines_stay_out_of_the_terminal(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run([*_tool("train"), "--no_such_flag"],
                          capture_output=True, text=True, env=env,
                          timeout=TIMEOUT, check=False)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: Unknown command line flag 'no_such_flag' (see --helpfull)"
  ], (result.stderr)
