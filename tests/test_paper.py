"""Tests of the paper's experiments (nearid_jax.paper) and their configs."""
import importlib
import json
import os

import numpy as np
import pytest
from scipy import stats

from nearid_jax import reproduce
from nearid_jax import train
from nearid_jax.paper import aggregate
from nearid_jax.paper import runs as runs_lib

PAPER_CONFIGS = ("e0_bilipschitz", "table1", "table2")


def test_interval_is_the_student_t_interval():
  v = [0.2, 0.35, 0.1, 0.5, float("nan")]
  r = aggregate.interval(v)
  good = np.array(v[:4])
  lo, hi = stats.t.interval(0.95, 3, loc=good.mean(), scale=stats.sem(good))
  np.testing.assert_allclose([r["lo"], r["hi"]], [lo, hi], rtol=1e-10)
  assert (r["n"], r["n_dropped"], r["values"][-1]) == (4, 1, None)
  one = aggregate.interval([0.3])
  assert one["mean"] == 0.3 and one["half_width"] is None


def test_spearman_matches_scipy_with_ties_and_nans():
  rng = np.random.default_rng(0)
  for _ in range(5):
    x = rng.integers(0, 5, 12).astype(float)
    y = x + rng.normal(size=12)
    y[3] = np.nan
    ok = np.isfinite(y)
    ref = stats.spearmanr(x[ok], y[ok]).statistic
    np.testing.assert_allclose(aggregate.spearman(x, y), ref, rtol=1e-12)
  assert np.isnan(aggregate.spearman([1, 2], [3, 4]))
  with pytest.raises(ValueError, match="one length"):
    aggregate.spearman([1, 2, 3], [1, 2])


def test_reduce_to_rank_keeps_distances_and_drops_dead_columns():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(2, 60, 3))
  z = np.concatenate([base, base[..., :1] * 2.0 - base[..., 1:2],
                      np.ones((2, 60, 1))], axis=-1)  # collinear + constant
  kept, dropped = runs_lib.drop_constant_columns(z)
  assert dropped == [4] and kept.shape[-1] == 4
  red, rank = runs_lib.reduce_to_rank(kept)
  assert rank == 3 and red.shape == (2, 60, 3)
  for r in range(2):
    d_full = np.linalg.norm(kept[r, :, None] - kept[r, None], axis=-1)
    d_red = np.linalg.norm(red[r, :, None] - red[r, None], axis=-1)
    np.testing.assert_allclose(d_red, d_full, rtol=1e-4, atol=1e-4)


def test_write_results_turns_nan_into_null(tmp_path):
  recs = [aggregate.record("t", "a", "x", [1.0, np.nan, 3.0])]
  aggregate.write_results(str(tmp_path), "demo", recs, "# demo",
                          extra=np.array([np.nan, 1.0]))
  with open(tmp_path / "results.json") as f:
    out = json.load(f)
  assert out["records"][0]["values"] == [1.0, None, 3.0]
  assert out["extra"] == [None, 1.0]
  assert "± " in aggregate.fmt(out["records"][0]) or out["records"][0][
      "half_width"] is not None


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_are_documented_and_valid(name):
  module = importlib.import_module(f"experiments.configs.paper.{name}")
  doc = module.__doc__
  assert "Command:" in doc and "estimate, unmeasured" in doc
  assert "paper" in doc.lower()
  for arg in ("smoke", None):
    config = module.get_config(arg)
    assert config.experiment in reproduce.EXPERIMENTS
    for model in config.models.values():
      train.validate_config(model)
      if arg == "smoke":
        assert model.num_steps <= 100 and model.num_seeds <= 3
  full = module.get_config()
  if name == "e0_bilipschitz":
    assert len(full.alphas) >= 5
    assert all(m.num_seeds >= 5 for m in full.models.values())
  if name == "table2":
    assert set(full.model_names) >= {"ae", "beta_vae", "beta_tcvae", "bioae",
                                     "qlae"}
    assert full.models.qlae_shapes3d.optimizer.weight_decay == 0.1
    assert all(m.num_seeds == 7 for m in full.models.values())
  with pytest.raises(ValueError, match="unknown config argument"):
    module.get_config("nonsense")


def _load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_e0_smoke_spearman_over_alpha(tmp_path):
  from experiments.configs.paper import e0_bilipschitz
  config = e0_bilipschitz.get_config("smoke")
  config.datasets = ("synthetic",)  # digits: same code, budgeted out of CI
  out = reproduce.run(config, str(tmp_path))
  recs = out["records"]
  alphas = list(config.alphas)
  eps = [aggregate.find(recs, row=f"α={a:g}", column="eps")
         for a in alphas]
  fac = [aggregate.find(recs, row=f"α={a:g}", column="factor")
         for a in alphas]
  for r in eps + fac:
    assert r["n"] == 2 and r["lo"] <= r["mean"] <= r["hi"]
    assert r["mean"] > 0
  rho = aggregate.find(recs, row="spearman over α")["mean"]
  ref = stats.spearmanr([r["mean"] for r in fac],
                        [r["mean"] for r in eps]).statistic
  np.testing.assert_allclose(rho, ref, rtol=1e-12)
  assert os.path.exists(tmp_path / "e0_bilipschitz.png")
  assert "## synthetic" in (tmp_path / "results.md").read_text()
  # Rerunning resumes: nothing retrains, the numbers are the same.
  again = reproduce.run(config, str(tmp_path))
  assert again["records"] == recs


@pytest.mark.slow
def test_table1_smoke_synthetic_rows(tmp_path):
  from experiments.configs.paper import table1
  config = table1.get_config("smoke")
  keep = ("synthetic_ae", "synthetic_ae_large")
  config.models = {k: config.models[k] for k in keep}
  config.rows = {k: config.rows[k] for k in ("synthetic_ae",
                                             "synthetic_ae_sizes")}
  config.layers = ("enc_0", "latent")
  out = reproduce.run(config, str(tmp_path))
  recs = out["records"]
  for row in ("synthetic_ae", "synthetic_ae_sizes"):
    m = {c: aggregate.find(recs, table="table1", row=row, column=c)["mean"]
         for c in ("perm", "rigid", "linear", "ica", "ica_efficiency")}
    # Nested classes: each larger class fits at least as well (held-out
    # rows, so a small tolerance).
    assert m["perm"] >= m["rigid"] - 0.01 >= m["linear"] - 0.02
    np.testing.assert_allclose(
        m["ica_efficiency"],
        (m["perm"] - m["ica"]) / (m["perm"] - m["rigid"]), rtol=1e-9)
  n_sizes = aggregate.find(recs, row="synthetic_ae_sizes", column="rigid")
  assert n_sizes["n"] == 3  # one value per target (large) run
  assert aggregate.find(recs, table="table1_layers", row="enc_0",
                        column="rigid")["mean"] > 0


@pytest.mark.slow
def test_table2_smoke_selection_and_qlae(tmp_path):
  from experiments.configs.paper import table2
  from nearid_jax import metric_writers
  config = table2.get_config("smoke")
  config.datasets = ("dsprites",)
  config.model_names = ("ae", "qlae")
  config.metrics = ("infomec", "mig")  # DCI: same code path, budgeted out
  config.plan_flops = False
  out = reproduce.run(config, str(tmp_path))
  recs = out["records"]
  for row in ("AE", "AE + ICA", "AE + ICA (label-free wd)", "QLAE"):
    for col in ("infom", "infoe", "infoc", "mig"):
      r = aggregate.find(recs, table="table2", row=row, column=col)
      assert r is not None and r["n"] == 2, (row, col)
      assert 0 <= r["mean"] <= 1
  wds = list(config.weight_decays)
  eps = [aggregate.find(recs, row=f"wd={w:g}", column="eps_ica")["mean"]
         for w in wds]
  infom = [aggregate.find(recs, row=f"wd={w:g}", column="infom_ica")["mean"]
           for w in wds]
  sel = out["selection"]["dsprites"]
  assert wds[sel["label_free"]] == wds[int(np.argmin(eps))]
  assert wds[sel["paper"]] == wds[int(np.argmax(infom))]
  np.testing.assert_allclose(sel["spearman"],
                             stats.spearmanr(eps, infom).statistic)
  # QLAE trained through the multi-seed trainer and its loss went down.
  rows = metric_writers.read_metrics(str(tmp_path / "train" /
                                         "qlae_dsprites"))
  first, last = np.mean(rows[0]["loss"]), np.mean(rows[-1]["loss"])
  assert last < first
  assert out["speed"][0]["steps_per_second"] > 0
