"""The report: per grid point, Definition 1 verdict, conventions, end to end.

The first tests build small cases from arrays (`compute.compute`, no
training; every case has 3 runs of n = 400 rows and d = 3 so that they
share compiled programs); the last ones run the main job end to end.
"""
import json
import os
import shutil

import numpy as np
import pytest

from experiments.configs import identifiability as id_config
from nearid_jax import report
from nearid_jax.report import compute
from nearid_jax.report import render
from nearid_jax.report import verdict as verdict_lib

KINDS = ("perm", "rigid", "linear", "ica")
N, K = 400, 3


def _factors():
  return np.random.default_rng(0).laplace(size=(N, K)).astype(np.float32)


def _rotated_runs(noise, seed=0):
  """Runs = factors rotated (a different rotation each) plus noise."""
  u = _factors()
  rng = np.random.default_rng(seed + 1)
  z = []
  for s in noise:
    q, _ = np.linalg.qr(rng.normal(size=(K, K)))
    z.append(u @ q + s * rng.normal(size=(N, K)))
  return np.stack(z).astype(np.float32), u


def _array_config():
  config = report.default_config()
  config.metrics = ()          # the suite is tested end to end below
  config.structural_kinds = ("rigid", "similarity", "linear", "ica")
  return config


GRID = [{"negative_slope": 0.1}] * 3 + [{"negative_slope": 1.0}] * 3


def _grid_runs():
  # Grid point 0.1: two close runs and one noisy one, so its 4 pairs are far,
  # the other 2 near, and the mean over the 6 pairs is below τ. Grid point
  # 1.0: three close runs.
  z1, u = _rotated_runs([0.01, 0.01, 0.5])
  z2, _ = _rotated_runs([0.01, 0.01, 0.01], seed=5)
  return np.concatenate([z1, z2]), u


@pytest.fixture(scope="module")
def grid_report():
  z, u = _grid_runs()
  runs = report.Runs.from_arrays(z, u, grid=GRID, seed=[0, 1, 2] * 2)
  return compute.compute(_array_config(), runs)


def test_verdict_needs_every_pair(grid_report):
  rep = grid_report
  g = rep.groups[0]
  m = g.statistical.epsilon["rigid"]["mean"]
  off = m[~np.eye(3, dtype=bool)]
  tau = rep.threshold
  assert off.mean() <= tau < off.max(), off   # the case this test is about
  p = g.statistical.pairs["rigid"]["mean"]
  assert p.worst == pytest.approx(off.max())
  assert p.exceed == int(np.sum(off > tau)) == 4
  assert p.mean.low <= p.mean.value <= p.mean.high
  # No class passes for every pair: the verdict is not "rigid" although the
  # mean passes, and the text says why.
  lin = g.statistical.epsilon["linear"]["mean"][~np.eye(3, dtype=bool)]
  assert g.verdict.statistical is None and lin.max() > tau
  assert ("Up to rigid maps the mean over pairs passes" in g.verdict.text
          and "4 of 6 pairs exceed τ" in g.verdict.text), g.verdict.text
  assert "**not** statistically near-identifiable" in g.verdict.text
  # Structural: the noisy run is the worst run; no pooled pass either.
  eps = g.structural.epsilon["similarity"]["mean"]
  assert np.argmax(eps) == 2 and g.verdict.structural != "similarity"
  # Three close runs pass up to rigid maps, every pair within τ.
  assert rep.groups[1].verdict.statistical == "rigid"
  assert rep.groups[1].statistical.pairs["rigid"]["mean"].exceed == 0


def test_ica_efficiency_is_a_ratio_of_means(grid_report):
  g = grid_report.groups[0]
  off = ~np.eye(3, dtype=bool)
  p, r, c = (g.statistical.epsilon[k]["mean"][off]
             for k in ("perm", "rigid", "ica"))
  expected = (p.mean() - c.mean()) / (p.mean() - r.mean())
  e = g.efficiency.value
  assert e.value == pytest.approx(expected, rel=1e-9)
  assert e.low <= e.value <= e.high and e.low < e.high
  # The per-pair ratios are kept for reference; their mean is another
  # number (the old, misleading summary).
  np.testing.assert_allclose(g.efficiency.per_pair[off], (p - c) / (p - r),
                             rtol=1e-9)
  assert "it exceeds 100% when ICA aligns" in render.to_markdown(grid_report)
  # JSON is strict (no NaN) and holds the interval.
  js = json.loads(json.dumps(render.to_json(grid_report), allow_nan=False))
  eff = js["groups"][0]["ica_efficiency"]
  assert eff["value"] == pytest.approx(expected)
  assert eff["ci"] == [pytest.approx(e.low), pytest.approx(e.high)]


def test_grid_points_are_separate_groups(grid_report):
  rep = grid_report
  assert [g.grid for g in rep.groups] == GRID[::3]
  assert [g.runs for g in rep.groups] == [[0, 1, 2], [3, 4, 5]]
  # Pairs never cross grid points: 6 ordered pairs per point, not 30.
  for g in rep.groups:
    assert g.statistical.epsilon["rigid"]["mean"].shape == (3, 3)
    assert g.statistical.pairs["rigid"]["mean"].count == 6
  rows = render.summary_rows(rep)
  assert len(rows) == 2 and rows[1]["grid"] == {"negative_slope": 1.0}
  assert rows[1]["epsilon"]["rigid"]["value"] == pytest.approx(
      rep.groups[1].statistical.pairs["rigid"]["mean"].mean.value)
  md = render.to_markdown(rep)
  assert "## Summary across grid points" in md
  assert md.count("| 0.1 | 3 |") == 1 and md.count("| 1 | 3 |") == 1
  assert "## Grid point negative_slope=0.1 (3 runs)" in md
  js = render.to_json(rep)
  assert [g["grid"] for g in js["groups"]] == GRID[::3]
  assert js["groups"][1]["pairs"]["rigid"]["mean"]["worst_pair"][0] >= 3


def test_nan_rows_and_runs_are_dropped_with_notes():
  z, u = _rotated_runs([0.01, 0.01, 0.01])
  z[1, 7] = np.nan    # one bad row in run 1: the row goes, the run stays
  z[2, :50] = np.inf  # many in run 2: the run goes
  runs = report.Runs.from_arrays(z, u).clean()
  assert runs.valid.tolist() == [True, True, False]
  assert runs.z.shape == (3, N - 1, K) and runs.u.shape == (N - 1, K)
  np.testing.assert_array_equal(runs.z[0, 7], z[0, 8])
  assert runs.notes == [
      "run seed2: 50 of 400 rows hold NaN/Inf (first: row 0); run left out.",
      "1 of 400 rows hold NaN/Inf in run(s) seed1 (first: row 7); those "
      "rows are dropped from every run and from the factors."]
  u[3, 0] = np.nan
  with pytest.raises(ValueError, match=r"factors u have 1 row\(s\) with "
                     r"NaN/Inf \(first: row 3\)"):
    report.Runs.from_arrays(z, u).clean()


def test_one_run_per_grid_point(grid_report):
  z, u = _grid_runs()
  grid = [{"beta": float(b)} for b in range(6)]
  rep = compute.compute(_array_config(),
                        report.Runs.from_arrays(z, u, grid=grid))
  assert len(rep.groups) == 6
  pooled = np.concatenate([g.structural.epsilon["similarity"]["mean"]
                           for g in grid_report.groups])
  for i, g in enumerate(rep.groups):
    assert g.runs == [i] and g.statistical is None and g.efficiency is None
    assert any("needs ≥ 2 runs per grid point; this point has 1" in n
               for n in g.notes)
    assert g.verdict.statistical is None
    # The structural section still runs; it never involves pairs, so it
    # equals the grouped computation run by run.
    assert g.structural.epsilon["similarity"]["mean"][0] == pytest.approx(
        pooled[i], rel=1e-6)
  # A rotated copy with little noise is near the factors up to a similarity.
  assert pooled[0] < 0.01 and rep.groups[0].verdict.structural == "similarity"
  assert rep.groups[2].verdict.structural is None
  assert "needs ≥ 2 runs" in render.to_markdown(rep)


def test_near_dead_latent_is_dropped_not_fatal(grid_report):
  z, u = _grid_runs()
  # A fourth latent per run at ~1/3000 of the largest spread (weight decay
  # leaves such units): float32 ranks it deficient, so the old report
  # aborted on 'linear' and 'ica'.
  rng = np.random.default_rng(3)
  tiny = z.std() / 3000 * rng.normal(size=(6, N, 1))
  z4 = np.concatenate([z, tiny], axis=2).astype(np.float32)
  z4 = z4[:, :, [0, 3, 1, 2]]  # the dead unit in column 1
  # align's float32 rank test (eigenvalues above λ_max · d · eps) fails.
  lam = np.linalg.eigvalsh(np.cov(z4[0].T).astype(np.float32))
  assert lam[0] < lam[-1] * 4 * np.finfo(np.float32).eps
  rep = compute.compute(_array_config(), report.Runs.from_arrays(
      z4, u, grid=GRID, seed=[0, 1, 2] * 2))
  for g, ref in zip(rep.groups, grid_report.groups):
    assert g.statistical.dims.tolist() == [3, 3, 3]
    for name in ("seed0", "seed1", "seed2"):
      assert any(n.startswith(f"run {name}: latent(s) [1] near-dead") for n
                 in g.notes), g.notes
    # Dropping it leaves the ε of the runs without it.
    for kind in ("rigid", "linear", "ica"):
      np.testing.assert_allclose(g.statistical.epsilon[kind]["mean"],
                                 ref.statistical.epsilon[kind]["mean"],
                                 rtol=1e-4, atol=1e-6)
  assert rep.groups[1].verdict.statistical == "rigid"


# --- end to end ------------------------------------------------------------


def small_config():
  config = id_config.get_config("smoke")  # 3 AE runs, 300 steps
  config.train.progress = False
  # Sharding is the trainer's tests' business; one device compiles faster.
  config.train.num_devices = 1
  return config


@pytest.fixture(scope="module")
def done(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("identifiability"))
  config = small_config()
  return config, workdir, report.run(config, workdir)


def test_report_files_and_keys(done):
  _, workdir, rep = done
  for name in ("report.json", "report.md", "epsilon_heatmaps.png",
               "epsilon_by_class.png", "mcc.png",
               "epsilon_vs_bilipschitz.png", "disentanglement.png",
               "train/representations.npz"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert not os.path.exists(os.path.join(workdir, "epsilon_vs_grid.png"))
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(render.to_json(rep)))
  (g,) = on_disk["groups"]
  assert g["grid"] == {} and g["runs"] == [0, 1, 2]
  r = 3
  for kind in KINDS:
    for stat in ("mean", "max", "q99"):
      m = np.array(g["epsilon"][kind][stat], float)
      assert m.shape == (r, r) and np.all(np.diag(m) == 0)
      assert np.all(m[~np.eye(r, dtype=bool)] > 0)
    assert g["pairs"][kind]["mean"]["count"] == 6
  assert np.array(g["ica_efficiency"]["per_pair"], float).shape == (r, r)
  assert len(g["diameter"]["q99"]) == r and g["diameter"]["n_rows"] == 512
  assert all(q < m for q, m in zip(g["diameter"]["q99"],
                                   g["diameter"]["value"]))
  s = g["structural"]
  assert s["kinds"] == list(report.default_config().structural_kinds)
  met = g["metrics"]
  assert met["rows"] == 512 and met["ica_components"] == 4
  assert met["dci_estimator"] == "logistic"
  assert set(met["tables"]) == {"raw", "ica"}   # k = d: no PCA controls
  for key in ("mcc_pearson", "mcc_spearman", "r2"):
    assert all(0 <= v <= 1 for v in met["tables"]["raw"][key])
  bl = on_disk["bi_lipschitz"]
  assert len(bl["one_plus_l"]) == r and all(v >= 1 for v in bl["one_plus_l"])
  assert all(c >= 1 for c in bl["condition"])
  assert bl["data_bound"] == 2.0  # slope 0.5, two layers
  assert bl["output"] == "decoder output"
  assert on_disk["config"]["train"]["num_seeds"] == 3
  md = open(os.path.join(workdir, "report.md")).read()
  assert "| ε | perm | rigid | linear | ICA (4 comp.) |" in md
  assert "### Verdict" in md and "ordered pair" in md
  assert "DCI uses the logistic estimator" in md and "n = 512 rows" in md
  for col in ("infom", "infoc", "infoe", "infoe_converged",
              "dci_disentanglement", "mig", "sap", "modularity", "udr"):
    for side in ("raw", "ica"):
      v = met["tables"][side][col]
      assert len(v) == r and all(0 <= x <= 1 + 1e-6 for x in v), (col, v)
  # The synthetic factors are continuous: one merged note says so.
  assert len(met["notes"]) == 1
  assert met["notes"][0].startswith("factors[:, 0, 1, 2, 3] looks continuous")
  assert "| infom |" in md and "Note: factors[:, 0, 1, 2, 3]" in md


def test_expected_science_on_the_synthetic_autoencoder(done):
  _, _, rep = done
  (g,) = rep.groups
  mean = {k: g.statistical.pairs[k]["mean"].mean.value for k in KINDS}
  assert mean["linear"] < mean["rigid"] < mean["perm"], mean
  assert mean["ica"] < 0.6 * mean["perm"], mean
  t = g.metrics.tables
  mcc_raw, mcc_ica = np.mean(t["raw"]["mcc_pearson"]), np.mean(
      t["ica"]["mcc_pearson"])
  assert mcc_ica > mcc_raw + 0.1, (mcc_raw, mcc_ica)
  assert mcc_ica > 0.9
  # The verdict follows from its own table: the strictest class whose worst
  # pair is within τ.
  worst = {k: g.statistical.epsilon[k]["mean"][~np.eye(3, dtype=bool)].max()
           for k in KINDS}
  expected = next((k for k in verdict_lib.ORDER if k in worst
                   and worst[k] <= rep.threshold), None)
  assert g.verdict.statistical == expected
  # ICA on the AE latents disentangles by the field's metrics too.
  for col in ("infom", "infoc", "dci_disentanglement", "mig", "udr"):
    raw, ica = np.mean(t["raw"][col]), np.mean(t["ica"][col])
    assert ica > raw + 0.1, (col, raw, ica)
  # ICA with k = d is invertible: a converged InfoE does not move.
  np.testing.assert_allclose(np.mean(t["ica"]["infoe_converged"]),
                             np.mean(t["raw"]["infoe_converged"]), atol=0.02)


def test_existing_workdir_diverged_runs_and_bad_files(done, tmp_path):
  config, workdir, rep = done
  # A training workdir from elsewhere, with run 1 marked diverged and no
  # checkpoints (so no decoder to differentiate).
  train_dir = tmp_path / "train"
  train_dir.mkdir()
  with np.load(os.path.join(workdir, "train", "representations.npz")) as f:
    data = {k: f[k] for k in f.files}
  data["valid"] = np.array([True, False, True])
  np.savez(train_dir / "representations.npz", **data)
  shutil.copy(os.path.join(workdir, "train", "final.json"), train_dir)
  config.train_workdir = str(train_dir)
  config.metrics = ()  # the suite's batching is tested in test_metrics
  out = report.run(config, str(tmp_path / "report"))
  (g,) = out.groups
  assert g.runs == [0, 2] and g.left_out == [1]
  m = g.statistical.epsilon["rigid"]["mean"]
  np.testing.assert_allclose(
      m[0, 1], rep.groups[0].statistical.epsilon["rigid"]["mean"][0, 2],
      rtol=1e-5)  # same split, same rows
  assert out.bi_lipschitz.note.startswith("not computed")
  assert "Diverged runs, left out: seed1" in open(
      tmp_path / "report" / "report.md").read()
  # Different settings into the same report workdir need --overwrite.
  config.threshold = 0.1
  with pytest.raises(ValueError, match=r"different settings.*threshold"):
    report.run(config, str(tmp_path / "report"))
  assert report.run(config, str(tmp_path / "report"),
                    overwrite=True).threshold == 0.1
  # A representation file with unexpected keys.
  data["z_latent"] = data.pop("z/latent")
  np.savez(train_dir / "representations.npz", **data)
  with pytest.raises(ValueError, match=r"unexpected key\(s\) \['z_latent'\]"
                     r".*missing key\(s\) \['z/latent'\].*found \["):
    report.load_representations(str(train_dir / "representations.npz"),
                                "latent")


def test_invalid_config_fails_before_training(tmp_path):
  for field, value, match in (
      ("kinds", ("perm", "affine"), r"config.kinds: unknown kind"),
      ("layer", "enc_0", r"config.layer: 'enc_0' is not among"),
      ("metrics", ("infomec", "betavae"),
       r"config.metrics: unknown metric\(s\) \['betavae'\]"),
      ("metrics_rows", "some", r"config.metrics_rows: must be one of")):
    config = small_config()
    config[field] = value
    with pytest.raises(ValueError, match=match):
      report.run(config, str(tmp_path))
  config = small_config()
  config.ica.components = "three"
  with pytest.raises(ValueError, match=r"config.ica.components: must be"):
    report.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "train")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_on_image_runs_with_categorical_factors(tmp_path):
  # A conv autoencoder on dSprites, trained by the image config, analysed
  # through --config.train_workdir as the README shows.
  from experiments.configs import conv_ae  # pylint: disable=g-import-not-at-top
  from nearid_jax import train  # pylint: disable=g-import-not-at-top
  tc = conv_ae.get_config("dsprites,smoke")
  tc.data.eval_size, tc.eval.batch_size = 256, 128
  tc.num_devices, tc.progress = 1, False
  train.run(tc, str(tmp_path / "train"))
  config = small_config()
  config.train_workdir = str(tmp_path / "train")
  config.kinds = ("rigid", "linear", "ica")
  config.metrics = ("infomec", "mig")
  config.bi_lipschitz_points = 8
  rep = report.run(config, str(tmp_path / "report"))
  assert rep.settings["dim"] == 10 and rep.settings["num_factors"] == 5
  (g,) = rep.groups
  m = g.statistical.epsilon["linear"]["mean"]
  assert m.shape == (2, 2) and np.all(m[~np.eye(2, dtype=bool)] > 0)
  met = g.metrics
  # Grid-valued factors are classes, not binned continuous values.
  assert not any("continuous" in n for n in met.notes), met.notes
  # 5 ICA components for 10 latents: the PCA controls stand beside ICA.
  assert met.ica_components == 5
  assert set(met.tables) == {"raw", "ica", "pca", "pca_rotated"}
  for side in met.tables:
    assert {"infom", "infoe", "infoc", "infoe_converged",
            "mig"} <= set(met.tables[side])
    assert all(0 <= v <= 1 + 1e-6 for v in met.tables[side]["infom"])
  md = open(tmp_path / "report" / "report.md").read()
  assert "| metric | raw | ICA (5 comp.) | PCA (whitened) (5 comp.) |" in md
  # The conv decoder's Jacobian (of its mean output) gives 1 + L >= 1.
  bl = rep.bi_lipschitz
  assert all(v >= 1 for v in bl.one_plus_l)
  assert bl.output.startswith("decoder mean")
  assert os.path.exists(tmp_path / "report" / "disentanglement.png")
