"""tools/generate.py refuses to continue a set whose stage weights changed:
a ``unet.keras`` replaced in place (its weights.sha256 left as it was) is
found from the weights actually loaded, and the shards stay untouched."""

import os
import shutil
import subprocess
import sys

import pytest

from cdm_tf import fingerprints
from cdm_tf.models import export
from cdm_tf.synthetic_set import shard_writer
from tests import fashion_mnist_subset
from tests import tiny_cascade

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "generate.py")
GIN = os.path.join(ROOT, "gin", "generation", "fashion_mnist_16_to_32.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _run(bindings, data_dir, output_dir, *flags):
  return subprocess.run([
      sys.executable, TOOL, f"--gin_file={GIN}",
      *[f"--gin_bindings={b}" for b in bindings], f"--real_data_dir={data_dir}",
      "--total=20", f"--output_dir={output_dir}", *flags
  ], capture_output=True, text=True, env=ENV, timeout=300, check=False)


def _directory_bytes(directory):
  # Worker locks (.worker-<i>.lock, empty) are not part of the set.
  return {
      name: open(os.path.join(directory, name), "rb").read()
      for name in sorted(os.listdir(directory))
      if not name.startswith(".worker-")
  }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("weights")
  base_dir, sr_dir = tiny_cascade.export_tiny_cascade(str(root / "exports"))
  data_dir = fashion_mnist_subset.prepared(str(root / "fashion"),
                                           per_class=(2, 1))
  bindings = [
      f"BASE_MODEL_DIR = '{base_dir}'",
      f"SR_MODEL_DIR = '{sr_dir}'",
      "base/cascade.Stage.steps = 2",
      "sr/cascade.Stage.steps = 2",
      "synthetic_dataset.GenerationSettings.examples_per_shard = 10",
      "synthetic_dataset.GenerationSettings.batch_size = 10",
      "synthetic_dataset.GenerationSettings.sheet_per_class = 0",
  ]
  return dict(root=root, base_dir=base_dir, sr_dir=sr_dir, data_dir=data_dir,
              bindings=bindings)


@pytest.mark.parametrize("dtype_policy", [None, "mixed_bfloat16"])
def test_loaded_weights_match_the_export_fingerprint(setup, dtype_policy):
  for directory in (setup["base_dir"], setup["sr_dir"]):
    model = export.load_model(directory, dtype_policy)
    assert (fingerprints.of_arrays(
        model.unet.get_weights()) == export.weights_fingerprint(directory))


def test_replaced_stage_weights_are_refused_for_every_worker(setup):
  output_dir = str(setup["root"] / "set")
  # Worker 0 of 2 writes its shard; the set is not complete.
  first = _run(setup["bindings"], setup["data_dir"], output_dir,
               "--num_workers=2", "--worker_index=0")
  assert first.returncode == 0, first.stderr
  assert len(shard_writer.complete_shards(output_dir, "train")) == 1
  # Restarted with the same weights, it is accepted (nothing left to do).
  again = _run(setup["bindings"], setup["data_dir"], output_dir,
               "--num_workers=2", "--worker_index=0")
  assert again.returncode == 0, again.stderr
  assert "1 already complete, 0 to write" in again.stdout

  # Another unet.keras in the super-resolution export: an export of other
  # weights, its weights.sha256 left as it was.
  other = tiny_cascade.export_tiny_cascade(str(setup["root"] / "other"), seed=1)
  shutil.copyfile(os.path.join(other[1], "unet.keras"),
                  os.path.join(setup["sr_dir"], "unet.keras"))
  before = _directory_bytes(output_dir)

  for worker_index in (0, 1):  # the restart and the joining worker
    result = _run(setup["bindings"], setup["data_dir"], output_dir,
                  "--num_workers=2", f"--worker_index={worker_index}")
    assert result.returncode == 3, result.stderr
    # TensorFlow's native start-up lines go to stderr too: one error line,
    # no traceback.
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("error:")
    ]
    assert len(errors) == 1 and "Traceback" not in result.stderr, (
        result.stderr)
    assert f"stage exported at {setup['sr_dir']} " in errors[0]
    assert "started with other weights" in errors[0]
    assert _directory_bytes(output_dir) == before
