"""The sampler-check binary end to end, as a user runs it."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOOL = str(ROOT / "tools" / "verify_sampler.py")
GIN = str(ROOT / "gin" / "verify_sampler.gin")
# Two quick settings instead of the gin file's full list.
QUICK = ('analytic.moment_report.settings = ['
         '{"schedule": "cosine", "num_timesteps": 200, "sampler": "ddpm"},'
         '{"schedule": "cosine", "num_timesteps": 200, "sampler": "ddim",'
         ' "timestep_respacing": "ddim50"}]')


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True,
                        text=True, env=env, timeout=300, check=False)


def test_tool_reports_and_writes_json(tmp_path):
  result = _run(f"--gin_file={GIN}", f"--gin_bindings={QUICK}",
                f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert "2 of 2 sampler settings reproduce" in result.stdout
  assert "3 of 3 solvers converge at their order" in result.stdout
  report = json.loads((tmp_path / "report.json").read_text())
  rows = report["moments"]
  assert [r["steps"] for r in rows] == [200, 50]
  assert all(r["ok"] for r in rows)
  convergence = {(r["sampler"], r["order"]): r for r in report["convergence"]}
  assert set(convergence) == {("dpmpp_2m", 1), ("dpmpp_2m", 2), ("dpmpp_3m", 3)}
  for (_, order), row in convergence.items():
    assert row["ok"] and row["orders"][-1] > order - 0.3
    assert row["errors"] == sorted(row["errors"], reverse=True)


def test_tool_fails_when_a_setting_is_off(tmp_path):
  # 4 deterministic DDIM steps cannot reproduce the data's spread.
  bad = ('analytic.moment_report.settings = [{"schedule": "cosine", '
         '"num_timesteps": 200, "sampler": "ddim", '
         '"timestep_respacing": "4"}]')
  result = _run(f"--gin_file={GIN}", f"--gin_bindings={bad}")
  assert result.returncode == 1
  assert "FAIL" in result.stdout


def test_tool_fails_when_a_solver_is_below_its_order(tmp_path):
  # DDIM (order 1) cannot pass as a second-order method.
  bad = ('analytic.convergence_report.solvers = [{"sampler": "dpmpp_2m", '
         '"solver_order": 1, "order": 2}]')
  result = _run(f"--gin_file={GIN}", f"--gin_bindings={QUICK}",
                f"--gin_bindings={bad}")
  assert result.returncode == 1
  assert "FAIL dpmpp_2m (order 1)" in result.stdout
  assert "0 of 1 solvers converge" in result.stdout


def test_bad_binding_gives_a_clear_error():
  result = _run(f"--gin_file={GIN}",
                "--gin_bindings=analytic.moment_report.nope = 1")
  assert result.returncode == 2
  assert "doesn't have a parameter named 'nope'" in result.stderr
  assert "Traceback" not in result.stderr
