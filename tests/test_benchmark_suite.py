"""The accelerator suite (benchmarks/suite.py) at smoke size on CPU.

Speed is never asserted here (that is the suite's job, on a device); this
checks that every target runs end to end, that the numbers are sane, and
that the JSON document is complete.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import suite

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _suite(*args, timeout):
  # In a fresh default process (one CPU device, as a user runs it): late in
  # a long test process XLA:CPU crashed compiling the trainer step here
  # (SIGSEGV in backend_compile_and_load, jax 0.10.2), as in
  # test_parallel's trainer test.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "benchmarks.suite", *args],
                        cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_suite_runs_every_target(tmp_path):
  out = tmp_path / "cpu.json"
  run = _suite("--smoke", "--out", str(out), timeout=1100)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
  doc = json.loads(out.read_text())
  assert doc["smoke"] and doc["backend"] == "cpu"
  results = {r["name"]: r for r in doc["results"]}
  assert list(results) == list(suite.TARGETS)
  ica = results["ica"]
  assert ica["value"] > 0 and math.isfinite(ica["value"])
  # Same data, same w_init: as accurate as scikit-learn.
  assert ica["details"]["ours_amari"] <= (
      ica["details"]["sklearn_svd_amari"] + 1e-3)
  for name in ("epsilon", "metrics"):
    assert 0 < results[name]["value"] <= results[name]["details"][
        "first_call_s"] + 1.0
  train = results["train"]
  if train["value"] is None:  # PyTorch is an optional extra
    assert "PyTorch not installed" in train["note"]
  else:
    assert train["value"] > 0
  mfu = results["mfu"]["details"]
  assert mfu["gflop_per_image"] > 0 and 0 < mfu["of_matmul"]
  for name in suite.TARGETS:
    assert f"] {name}" in run.stdout
  with pytest.raises(SystemExit):  # no accelerator here
    suite.main(["--accelerator"])
