"""The accelerator suite (benchmarks/suite.py) at smoke size on CPU.

Speed is never asserted here (that is the suite's job, on a device); this
checks that every target runs end to end, that the numbers are sane, and
that the JSON document is complete.
"""
import json
import math

import pytest

from benchmarks import suite


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_suite_runs_every_target(tmp_path, capsys):
  out = tmp_path / "cpu.json"
  suite.main(["--smoke", "--out", str(out)])
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
  printed = capsys.readouterr().out
  for name in suite.TARGETS:
    assert f"] {name}" in printed
  with pytest.raises(SystemExit):  # no accelerator here
    suite.main(["--accelerator"])
