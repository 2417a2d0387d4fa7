"""MultiWorkerMirroredStrategy as two processes on the loopback interface.

tools/train.py and tools/train_classifier.py with --strategy=
multi_worker_mirrored: both workers finish, hold bit-identical weights equal
to the chief's checkpoint and, within float rounding, to a one-process run
on the same global batches; only the chief writes, into the --model_dir both
are given; after a SIGKILL of one worker both restart from the chief's
checkpoint.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf import fingerprints
from tests import fashion_mnist_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
TRAIN_CLASSIFIER = os.path.join(ROOT, "tools", "train_classifier.py")
GIN = os.path.join(ROOT, "gin", "models", "fashion_mnist_16_base.gin")
CLASSIFIER_GIN = os.path.join(ROOT, "gin", "classifiers", "fashion_mnist",
                              "resnet_tiny.gin")
# One thread each: two workers (and a reference run) share two cores.
ENV = {
    **{
        k: v for k, v in os.environ.items() if k != "TF_CONFIG"
    }, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
    "OMP_NUM_THREADS": "1"
}
TIMEOUT = 240  # seconds, for any one launch of the workers
# gRPC could not bind a port picked free (another process took it since).
_PORT_TAKEN = re.compile(
    r"address already in use|failed to add port|"
    r"could not start grpc server", re.IGNORECASE)
_DIGEST = re.compile(r"^worker (\d) weights sha256 (\w+)$", re.MULTILINE)

if "pytest_timeout" in sys.modules:  # only when pytest-timeout is installed
  pytestmark = pytest.mark.timeout(3 * TIMEOUT)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  # 8 training shards: each worker reads its own 4.
  return fashion_mnist_subset.prepared(str(tmp_path_factory.mktemp("fashion")),
                                       per_class=(4, 1))


def _free_ports(count):
  """Ports free on 127.0.0.1 now (all held open at once, so distinct)."""
  sockets = [
      socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)
  ]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


class _Process:
  """A subprocess whose output goes to files (no pipe can fill up)."""

  def __init__(self, command, env, directory, name):
    os.makedirs(directory, exist_ok=True)
    self.stdout_path = os.path.join(directory, f"{name}.stdout")
    self.stderr_path = os.path.join(directory, f"{name}.stderr")
    with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
      self.popen = subprocess.Popen(command, stdout=out, stderr=err, env=env,
                                    cwd=directory)

  @property
  def stdout(self):
    with open(self.stdout_path) as f:
      return f.read()

  @property
  def stderr(self):
    with open(self.stderr_path) as f:
      return f.read()

  def kill(self):
    if self.popen.poll() is None:
      self.popen.send_signal(signal.SIGKILL)
    self.popen.wait()

  def report(self):
    return (f"exit {self.popen.returncode}\n--- stdout\n{self.stdout[-2000:]}"
            f"\n--- stderr\n{self.stderr[-4000:]}")


def _wait(processes, timeout=TIMEOUT, grace=20):
  """Waits for every process to exit; none is left running.

  Once one has failed, the others get ``grace`` seconds: a worker whose peer
  is gone fails, or waits forever, in its next collective operation. Past
  ``timeout`` the test fails.
  """
  deadline = time.time() + timeout
  failed = False
  while any(p.popen.poll() is None for p in processes):
    if not failed and any(p.popen.returncode for p in processes):
      failed = True
      deadline = min(deadline, time.time() + grace)
    if time.time() > deadline:
      for process in processes:
        process.kill()
      if not failed:
        pytest.fail("timed out:\n" + "\n".join(p.report() for p in processes))
      return
    time.sleep(0.2)


def _start_workers(command, work_dir, attempt):
  """Starts worker 0 (the chief) and worker 1 of ``command``.

  Each worker runs in, and has TMPDIR set to, a directory of its own under
  ``work_dir``, so the test sees any file a worker leaves outside
  --model_dir.
  """
  cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
  workers = []
  for index in range(2):
    directory = os.path.join(work_dir, f"attempt{attempt}", f"worker{index}")
    scratch = os.path.join(directory, "tmp")
    os.makedirs(scratch)
    env = dict(
        ENV, TMPDIR=scratch, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(_Process(command, env, directory, "log"))
  return workers


def _run_workers(command, work_dir, others=()):
  """Runs two workers to the end (and ``others`` alongside); retries with
  new ports when gRPC could not bind one (the workers then stopped before
  writing anything)."""
  for attempt in range(3):
    workers = _start_workers(command, work_dir, attempt)
    _wait(workers + list(others))
    if not any(
        p.popen.returncode and _PORT_TAKEN.search(p.stderr) for p in workers):
      return workers
  pytest.fail("no free ports:\n" + workers[0].report())


def _digests(workers):
  """The ``weights sha256`` line each worker printed, by worker index."""
  found = {}
  for index, worker in enumerate(workers):
    matches = _DIGEST.findall(worker.stdout)
    assert [int(m[0]) for m in matches] == [index], worker.report()
    found[index] = matches[0][1]
  return found


def _checkpoint_arrays(path, prefix):
  """``<prefix>/0``, ``<prefix>/1``... of a checkpoint, in order."""
  reader = tf.train.load_checkpoint(path)
  names = reader.get_variable_to_shape_map()
  count = sum(
      re.fullmatch(rf"{prefix}/\d+/\.ATTRIBUTES/VARIABLE_VALUE", n) is not None
      for n in names)
  assert count > 10, sorted(names)[:20]
  return [
      reader.get_tensor(f"{prefix}/{i}/.ATTRIBUTES/VARIABLE_VALUE")
      for i in range(count)
  ]


def _max_diff(a, b):
  assert len(a) == len(b)
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _files(directory):
  """Every file under ``directory``, relative, event files by their tag."""
  found = set()
  for parent, _, names in os.walk(directory):
    for name in names:
      if name.startswith("events.out.tfevents."):
        name = "events"
      found.add(os.path.relpath(os.path.join(parent, name), directory))
  return found


def _check_only_the_chief_wrote(workers, model_dir, reference_dir):
  """--model_dir holds what a one-process run writes, one TensorBoard
  writer's (the chief's) events, and the non-chief left no file anywhere
  the test can see (its working and temporary directories)."""
  assert _files(model_dir) == _files(reference_dir)
  events = os.listdir(os.path.join(model_dir, "tensorboard"))
  # Event file names end with the writer's host, pid and a counter.
  assert [int(name.split(".")[-3]) for name in events
         ] == [workers[0].popen.pid], events
  for worker in workers:
    directory = os.path.dirname(worker.stdout_path)
    assert sorted(os.listdir(directory)) == ["log.stderr", "log.stdout", "tmp"]
    assert not os.listdir(os.path.join(directory, "tmp"))


def _reference(script, args, work_dir):
  """A one-process run (default strategy) of ``script``, started now."""
  return _Process([sys.executable, "-c", script, *args],
                  dict(ENV, TF_NUM_INTRAOP_THREADS="2"),
                  os.path.join(work_dir, "reference"), "log")


# The one-process reference runs see the two workers' global batches. A
# worker's input pipeline reads its own half of the shards, shuffled with
# its own seed, and gives its examples seeds from (pipeline id, index)
# (training/input_pipeline.py, classifiers/input_pipeline.py): a one-process
# run's single pipeline reads other examples in another order with other
# seeds, so its weights differ by more than a training step's change (for
# the diffusion run below, 5e-3 after 3 steps of about 1e-3 each), not by
# rounding, and cannot be compared. Built here from the same two pipelines,
# concatenated as the workers' replicas split them, the batches are the
# same; what remains is the order of float additions (the all-reduce, and
# batch-norm statistics of the global batch).
_TWO_PIPELINES = textwrap.dedent("""
    import tensorflow as tf

    def two_pipelines(make, *args, **kwargs):
      kwargs.pop("input_context", None)
      halves = [make(*args, input_context=tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=i,
          num_replicas_in_sync=2), **kwargs) for i in range(2)]
      return tf.data.Dataset.zip(tuple(halves)).map(
          lambda a, b: tf.nest.map_structure(
              lambda x, y: tf.concat([x, y], 0), a, b))
""")

DIFFUSION_REFERENCE = _TWO_PIPELINES + textwrap.dedent("""
    import sys
    import gin
    from cdm_tf import configuration
    from cdm_tf.diffusion_training import input_pipeline, trainer

    model_dir, gin_file = sys.argv[1:3]
    configuration.parse_gin([gin_file], sys.argv[3:])
    make = gin.get_configurable(input_pipeline.diffusion_dataset)
    trainer.train(model_dir, tf.distribute.get_strategy(),
                  dataset_factory=lambda **kw: two_pipelines(make, **kw),
                  print_fn=print)
""")

CLASSIFIER_REFERENCE = _TWO_PIPELINES + textwrap.dedent("""
    import functools
    import sys
    from cdm_tf import configuration
    from cdm_tf.classifiers import cas, input_pipeline, trainer

    model_dir, gin_file, real_dir, batch = sys.argv[1:5]
    configuration.parse_gin([gin_file], sys.argv[5:])
    recipe, model_factory, optimizer_factory = cas.configured_classifier()
    input_pipeline.training_dataset = functools.partial(
        two_pipelines, input_pipeline.training_dataset)
    training_set = input_pipeline.resolve_training_set(
        input_pipeline.TrainingData(data="real", real_data_dir=real_dir))
    trainer.train_classifier(
        model_dir, tf.distribute.get_strategy(), training_set, recipe,
        model_factory, optimizer_factory=optimizer_factory,
        global_batch_size=int(batch), print_fn=print)
""")


def _diffusion_bindings(data_dir, **overrides):
  values = {
      "input_pipeline.diffusion_dataset.data_dir": f"'{data_dir}'",
      "input_pipeline.diffusion_dataset.shuffle_buffer": 100,
      "trainer.train.global_batch_size": 8,
      "trainer.train.num_steps": 3,
      "trainer.train.checkpoint_every": 2,
      "trainer.train.log_every": 1,
      "trainer.train.sample_every": 0,
      "trainer.train.num_samples": 2,
      "trainer.train.sample_respacing": "'2'",
      "unet.UNet.base_channels": 16,
      "unet.UNet.group_norm_groups": 4,
      "unet.UNet.channel_mult": (1,),
      "unet.UNet.attention_resolutions": (16,),
      "unet.UNet.dropout": 0.0,
      "optimizers.create_optimizer.warmup_steps": 0,
  }
  values.update(overrides)
  return [f"{k} = {v}" for k, v in values.items()]


def _classifier_bindings(**overrides):
  values = {
      "trainer.train_classifier.num_steps": 3,
      "trainer.train_classifier.checkpoint_every": 2,
      "trainer.train_classifier.log_every": 1,
      "trainer.train_classifier.eval_every_epochs": 0,
      # Global-batch statistics, as one process computes them.
      "trainer.train_classifier.synchronized_batch_norm": True,
      "input_pipeline.training_dataset.shuffle_buffer": 100,
  }
  values.update(overrides)
  return [f"{k} = {v}" for k, v in values.items()]


def _losses(stdout):
  return re.findall(r"^step \d+/\d+ .*?loss ([\d.]+)", stdout, re.MULTILINE)


def test_diffusion_training_on_two_workers(tmp_path, data_dir):
  model_dir = str(tmp_path / "run")
  bindings = _diffusion_bindings(data_dir)
  reference_dir = str(tmp_path / "reference_run")
  reference = _reference(DIFFUSION_REFERENCE, [reference_dir, GIN, *bindings],
                         str(tmp_path))
  workers = _run_workers([
      sys.executable, TRAIN, f"--gin_file={GIN}", f"--model_dir={model_dir}",
      "--strategy=multi_worker_mirrored",
      *[f"--gin_bindings={b}" for b in bindings]
  ], str(tmp_path), others=[reference])
  for process in workers + [reference]:
    assert process.popen.returncode == 0, process.report()
  assert "with 2 replica(s)" in workers[1].stdout
  assert "exported the EMA model" in workers[0].stdout
  assert "exported" not in workers[1].stdout

  chief = os.path.join(model_dir, "checkpoints", "ckpt-3")
  unet = _checkpoint_arrays(chief, "unet_weights")
  ema = _checkpoint_arrays(chief, "ema_weights")
  digests = _digests(workers)
  # Bit-identical on both workers, and what the chief saved.
  assert digests[0] == digests[1] == fingerprints.of_arrays(unet + ema)

  reference_ckpt = os.path.join(reference_dir, "checkpoints", "ckpt-3")
  assert _max_diff(unet, _checkpoint_arrays(reference_ckpt,
                                            "unet_weights")) < 1e-5
  # The EMA (decay 0.995) moves 200 times less per step than the weights.
  assert _max_diff(ema, _checkpoint_arrays(reference_ckpt,
                                           "ema_weights")) < 1e-6
  # One step moves the weights far more than that tolerance.
  before = _checkpoint_arrays(os.path.join(model_dir, "checkpoints", "ckpt-2"),
                              "unet_weights")
  assert _max_diff(unet, before) > 1e-4
  assert _losses(workers[0].stdout) == _losses(workers[1].stdout) == (_losses(
      reference.stdout)), (workers[0].stdout, reference.stdout)
  assert len(_losses(reference.stdout)) == 3

  _check_only_the_chief_wrote(workers, model_dir, reference_dir)


def _classifier_command(model_dir, data_dir, bindings):
  return [
      sys.executable, TRAIN_CLASSIFIER, f"--gin_file={CLASSIFIER_GIN}",
      f"--model_dir={model_dir}", f"--real_data_dir={data_dir}",
      "--strategy=multi_worker_mirrored", "--global_batch_size=8",
      *[f"--gin_bindings={b}" for b in bindings]
  ]


def test_classifier_training_on_two_workers(tmp_path, data_dir):
  model_dir = str(tmp_path / "run")
  bindings = _classifier_bindings()
  reference_dir = str(tmp_path / "reference_run")
  reference = _reference(
      CLASSIFIER_REFERENCE,
      [reference_dir, CLASSIFIER_GIN, data_dir, "8", *bindings], str(tmp_path))
  workers = _run_workers(_classifier_command(model_dir, data_dir, bindings),
                         str(tmp_path), others=[reference])
  for process in workers + [reference]:
    assert process.popen.returncode == 0, process.report()
  assert "with 2 replica(s)" in workers[1].stdout
  assert "wrote" not in workers[1].stdout

  weights = _checkpoint_arrays(os.path.join(model_dir, "checkpoints", "ckpt-3"),
                               "model_weights")
  digests = _digests(workers)
  assert digests[0] == digests[1] == fingerprints.of_arrays(weights)
  reference_weights = _checkpoint_arrays(
      os.path.join(reference_dir, "checkpoints", "ckpt-3"), "model_weights")
  assert _max_diff(weights, reference_weights) < 1e-5
  before = _checkpoint_arrays(os.path.join(model_dir, "checkpoints", "ckpt-2"),
                              "model_weights")
  assert _max_diff(weights, before) > 1e-4
  assert _losses(workers[0].stdout) == _losses(workers[1].stdout) == (_losses(
      reference.stdout))
  # Both evaluated on the same 10 validation images, together.
  evaluated = json.loads(
      open(os.path.join(model_dir, "eval", "eval.json")).read())
  assert evaluated["examples"] == 10 and evaluated["step"] == 3
  assert f"top1 {evaluated['top1']:.4f}" in workers[1].stdout

  _check_only_the_chief_wrote(workers, model_dir, reference_dir)


def _latest_step(model_dir):
  state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
  return int(state.model_checkpoint_path.rsplit("-", 1)[1])


def test_sigkill_of_a_worker_then_both_resume_from_the_chiefs_checkpoint(
    tmp_path, data_dir):
  model_dir = str(tmp_path / "run")
  command = _classifier_command(
      model_dir, data_dir,
      _classifier_bindings(**{"trainer.train_classifier.num_steps": 10_000}))
  index = os.path.join(model_dir, "checkpoints", "ckpt-4.index")
  for attempt in range(3):
    workers = _start_workers(command, str(tmp_path / "first"), attempt)
    deadline = time.time() + TIMEOUT
    while not os.path.exists(index) and time.time() < deadline and all(
        w.popen.poll() is None for w in workers):
      time.sleep(0.2)
    if os.path.exists(index) or not any(
        _PORT_TAKEN.search(w.stderr) for w in workers):
      break
    for worker in workers:
      worker.kill()
  try:
    assert os.path.exists(index), "\n".join(w.report() for w in workers)
    workers[1].kill()
    # Its peer is gone: the chief fails or waits forever in an all-reduce.
    # Either way it stops here, within seconds.
    try:
      workers[0].popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
      pass
  finally:
    for worker in workers:
      worker.kill()
  saved = _latest_step(model_dir)
  assert saved >= 4

  restarted = _run_workers(
      _classifier_command(
          model_dir, data_dir,
          _classifier_bindings(
              **{"trainer.train_classifier.num_steps": saved + 3})),
      str(tmp_path / "second"))
  for worker in restarted:
    assert worker.popen.returncode == 0, worker.report()
    assert f"ckpt-{saved} at step {saved}" in worker.stdout, worker.report()
    assert f"trained steps {saved}..{saved + 3}" in worker.stdout
  assert _latest_step(model_dir) == saved + 3
  digests = _digests(restarted)
  assert digests[0] == digests[1] == fingerprints.of_arrays(
      _checkpoint_arrays(
          os.path.join(model_dir, "checkpoints", f"ckpt-{saved + 3}"),
          "model_weights"))
  # The chief's checkpoints only: no other worker's anywhere in model_dir.
  assert all(
      re.fullmatch(r"checkpoint|ckpt-\d+\.(index|data-\d+-of-\d+)", name)
      for name in os.listdir(os.path.join(model_dir, "checkpoints")))
  for worker in restarted:
    assert not os.listdir(
        os.path.join(os.path.dirname(worker.stdout_path), "tmp"))
