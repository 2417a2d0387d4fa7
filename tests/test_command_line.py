"""The binaries' shared error handling: which failures are expected (and
their exit statuses), the one-line messages made from TensorFlow's graph
errors, and what a resumed run's settings record says differs."""

import errno

import pytest
import tensorflow as tf

from cdm_tf import command_line
from cdm_tf import configuration
from cdm_tf import settings_record
from cdm_tf.pipeline import runner
from cdm_tf.training import loop
from cdm_tf.training import run_settings


@pytest.mark.parametrize(
    "error,status",
    [
        (configuration.ConfigError("x"), 2),
        (ValueError("x"), 2),
        (FileNotFoundError("x"), 2),
        (OSError(errno.ENOSPC, "No space left on device"), 2),
        (tf.errors.DataLossError(None, None, "x"), 2),
        (tf.errors.InvalidArgumentError(None, None, "x"), 2),
        (configuration.ConflictError("x"), 3),
        (loop.NonFiniteLossError("x"), 3),
        (runner.StepFailedError("x", 7), 7),
        # Bugs keep their traceback.
        (TypeError("x"), None),
        (KeyError("x"), None),
        (RuntimeError("x"), None),
    ])
def test_exit_status(error, status):
  assert command_line.exit_status(error) == status


def test_graph_error_becomes_the_assertion_message():
  # As tf.function reports a failed tf.debugging.Assert in a tf.data map.
  message = (
      "Graph execution error:\n\nDetected at node cond/Assert/Assert "
      "defined at (most recent call last):\n  File \"x.py\", line 3, in f\n"
      "<stack traces unavailable>\nassertion failed: [bad ImageNet record: "
      "/d/train-00000-of-00008, record 12: reading stopped]\n\t "
      "[[{{node cond/Assert/Assert}}]]\n\t [[IteratorGetNext]] "
      "[Op:__inference_train_step_9783]\n  In call to configurable 'train' "
      "(<function train at 0x7f>)")
  error = tf.errors.InvalidArgumentError(None, None, message)
  assert command_line.error_message(error) == (
      "bad ImageNet record: /d/train-00000-of-00008, record 12: reading "
      "stopped")


def test_graph_error_without_an_assertion_keeps_its_text_only():
  message = ("Graph execution error:\n\nDetected at node Decode defined at "
             "(most recent call last):\n  File \"x.py\", line 3, in f\n\n"
             "Input is empty.\n\t [[{{node DecodePng}}]] [Op:__inference_f_1]")
  error = tf.errors.InvalidArgumentError(None, None, message)
  assert command_line.error_message(error) == "Input is empty."


def test_full_disk_message_says_what_to_do():
  error = OSError(errno.ENOSPC, "No space left on device", "/out/a.json")
  line = command_line.error_message(error)
  assert "/out/a.json" in line and "make room, then run again" in line


def test_gin_call_lines_are_dropped():
  error = ValueError("num_steps must be positive\n  In call to configurable "
                     "'train' (<function train at 0x7f>)")
  assert command_line.error_message(error) == "num_steps must be positive"


class _Optimizer:

  def __init__(self, **config):
    self.config = config

  def get_config(self):
    return dict(self.config, name="adam")


class _Variable:

  def __init__(self, *shape):
    self.shape = shape


def test_run_settings_resume_with_the_same_settings(tmp_path):
  settings = run_settings.describe({"width": 32, "dtype": "float32"},
                                   _Optimizer(learning_rate=1e-3),
                                   [_Variable(3, 32)])
  run_settings.check_or_record(str(tmp_path), settings, resuming=False)
  # Another dtype policy is not another model.
  again = run_settings.describe({"width": 32, "dtype": "mixed_bfloat16"},
                                _Optimizer(learning_rate=1e-3),
                                [_Variable(3, 32)])
  run_settings.check_or_record(str(tmp_path), again, resuming=True)


def test_run_settings_say_what_differs(tmp_path):
  run_settings.check_or_record(
      str(tmp_path),
      run_settings.describe({"width": 32}, _Optimizer(learning_rate=1e-3),
                            [_Variable(3, 32), _Variable(32)]), resuming=False)
  changed = run_settings.describe(
      {"width": 16}, _Optimizer(learning_rate=3e-4),
      [_Variable(3, 16), _Variable(16)])
  with pytest.raises(settings_record.SettingsConflictError) as raised:
    run_settings.check_or_record(str(tmp_path), changed, resuming=True)
  message = str(raised.value)
  assert ("optimizer.learning_rate: 0.001 -> 0.0003; model.width: 32 -> 16; "
          "2 of 2 variables change shape") in message
  assert isinstance(raised.value, configuration.ConflictError)  # exit 3
  # A new run in the directory (no checkpoint yet) records its own.
  run_settings.check_or_record(str(tmp_path), changed, resuming=False)
  run_settings.check_or_record(str(tmp_path), changed, resuming=True)


def test_nested_differences():
  assert settings_record.differences({"a": {"b": [1, 2], "c": 1}, "d": 1},
                                     {"a": {"b": [1, 3]}, "e": 2}) == [
                                         "a.b[1]: 2 -> 3", "a.c: 1 -> not set",
                                         "d: 1 -> not set", "e: not set -> 2"
                                     ]
