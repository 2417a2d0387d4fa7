"""The job runner: markers, resumption, conflicts, failures, signals."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cdm_tf.pipeline import runner

# A stand-in binary: appends its name to a log, then writes its product
# unless told to fail, to exit early, or to wait for SIGTERM.
FAKE_TOOL = """
import os, signal, sys, time
log, product, mode = sys.argv[1], sys.argv[2], sys.argv[3]
with open(log, "a") as f:
  f.write(os.path.basename(product) + "\\n")
print("working on", product, flush=True)
print("I0000 00:00:1 noise.cc:1] C++ chatter", flush=True)
if mode == "fail":
  sys.exit(7)
if mode == "no_product":
  sys.exit(0)
if mode == "wait":
  stopped = []
  signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
  open(product + ".started", "w").close()
  while not stopped:
    time.sleep(0.05)
  open(product + ".stopped", "w").close()
  print("saved a checkpoint, stopping", flush=True)
  sys.exit(0)
with open(product, "w") as f:
  f.write("done")
"""


@pytest.fixture
def tool(tmp_path):
  path = tmp_path / "fake_tool.py"
  path.write_text(FAKE_TOOL)
  return str(path)


def _step(tool, tmp_path, name, mode="ok"):
  product = str(tmp_path / f"{name}.out")
  # An absolute tool path stays as it is in Step.command().
  return runner.Step(name, tool, (str(tmp_path / "calls.log"), product, mode),
                     product=product, description=f"fake {name}")


def _calls(tmp_path):
  path = tmp_path / "calls.log"
  return path.read_text().split() if path.exists() else []


def test_runs_in_order_writes_markers_and_logs_and_skips_finished_steps(
    tool, tmp_path):
  out = str(tmp_path / "job")
  steps = [_step(tool, tmp_path, "a"), _step(tool, tmp_path, "b")]
  lines = []
  seconds = runner.run(out, steps, print_fn=lines.append)
  assert _calls(tmp_path) == ["a.out", "b.out"]
  assert set(seconds) == {"a", "b"}
  marker = json.loads(open(runner.marker_path(out, "a")).read())
  assert marker["args"] == list(steps[0].args) and marker["tool"] == tool
  assert "[a] working on" in "\n".join(lines)
  # C++ log lines go to the step's log only.
  assert not any("C++ chatter" in line for line in lines)
  log = open(os.path.join(out, runner.LOGS_DIR, "a.log")).read()
  assert "C++ chatter" in log and "working on" in log

  lines = []
  again = runner.run(out, steps, print_fn=lines.append)
  assert _calls(tmp_path) == ["a.out", "b.out"]  # nothing ran again
  assert again == seconds
  assert sum("skipped" in line for line in lines) == 2
  assert runner.recorded_seconds(out, steps) == seconds


def test_a_step_whose_product_was_deleted_runs_again(tool, tmp_path):
  out = str(tmp_path / "job")
  steps = [_step(tool, tmp_path, "a"), _step(tool, tmp_path, "b")]
  runner.run(out, steps, print_fn=lambda _: None)
  os.remove(steps[1].product)
  runner.run(out, steps, print_fn=lambda _: None)
  assert _calls(tmp_path) == ["a.out", "b.out", "b.out"]


def test_other_settings_are_refused_before_anything_runs(tool, tmp_path):
  out = str(tmp_path / "job")
  runner.run(out, [_step(tool, tmp_path, "a"),
                   _step(tool, tmp_path, "b")], print_fn=lambda _: None)
  changed = [
      _step(tool, tmp_path, "a"),
      _step(tool, tmp_path, "b", mode="other")
  ]
  with pytest.raises(runner.StepConflictError, match=r"step 'b'.*other"):
    runner.run(out, changed, print_fn=lambda _: None)
  assert _calls(tmp_path) == ["a.out", "b.out"]


def test_failed_step_stops_the_job_and_a_rerun_resumes_there(tool, tmp_path):
  out = str(tmp_path / "job")
  failing = [
      _step(tool, tmp_path, "a"),
      _step(tool, tmp_path, "b", "fail"),
      _step(tool, tmp_path, "c")
  ]
  with pytest.raises(runner.StepFailedError, match="exit status 7") as e:
    runner.run(out, failing, print_fn=lambda _: None)
  assert e.value.exit_status == 7
  assert not os.path.exists(runner.marker_path(out, "b"))
  assert _calls(tmp_path) == ["a.out", "b.out"]
  fixed = [failing[0], _step(tool, tmp_path, "b"), failing[2]]
  runner.run(out, fixed, print_fn=lambda _: None)
  assert _calls(tmp_path) == ["a.out", "b.out", "b.out", "c.out"]


def test_exit_zero_without_product_is_not_finished(tool, tmp_path):
  out = str(tmp_path / "job")
  with pytest.raises(runner.StepFailedError, match="without writing"):
    runner.run(out, [_step(tool, tmp_path, "a", "no_product")],
               print_fn=lambda _: None)
  assert not os.path.exists(runner.marker_path(out, "a"))


def test_sigterm_reaches_the_running_step_and_leaves_no_marker(tool, tmp_path):
  out = str(tmp_path / "job")
  step = _step(tool, tmp_path, "a", "wait")

  def stop_when_started():
    deadline = time.time() + 60
    while (not os.path.exists(step.product + ".started") and
           time.time() < deadline):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=stop_when_started, daemon=True).start()
  handler = signal.getsignal(signal.SIGTERM)
  lines = []
  with pytest.raises(runner.StepFailedError, match="stopped by signal") as e:
    runner.run(out, [step], print_fn=lines.append)
  assert e.value.exit_status == 128 + signal.SIGTERM
  assert "[a] saved a checkpoint, stopping" in lines
  assert not os.path.exists(runner.marker_path(out, "a"))
  # The runner put the previous handler back.
  assert signal.getsignal(signal.SIGTERM) == handler


# A job whose runner is killed outright (SIGKILL: no handler runs).
RUNNER = """
import sys
from cdm_tf.pipeline import runner
tool, calls, product, out = sys.argv[1:]
runner.run(out, [runner.Step("a", tool, (calls, product, "wait"), product)],
           print_fn=lambda _: None)
"""


def test_a_killed_runner_takes_its_step_down_with_it(tool, tmp_path):
  script = tmp_path / "runner.py"
  script.write_text(RUNNER)
  product = str(tmp_path / "a.out")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  job = subprocess.Popen([
      sys.executable,
      str(script), tool,
      str(tmp_path / "calls.log"), product,
      str(tmp_path / "job")
  ], env=dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3"))
  deadline = time.time() + 120
  while not os.path.exists(product + ".started") and time.time() < deadline:
    time.sleep(0.05)
  assert os.path.exists(product + ".started")
  job.kill()
  job.wait()
  # The step got SIGTERM (time to save a checkpoint) and ended.
  while not os.path.exists(product + ".stopped") and time.time() < deadline:
    time.sleep(0.05)
  assert os.path.exists(product + ".stopped")


def test_tool_paths_resolve_in_the_tools_directory():
  step = runner.Step("x", "train.py", ("--a=1",), product="p")
  assert step.command() == [os.path.join(runner.TOOLS_DIR, "train.py"), "--a=1"]
  assert os.path.exists(os.path.join(runner.TOOLS_DIR, "train.py"))
