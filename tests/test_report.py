"""The main job end to end on a small config: files, keys and the science."""
import json
import os
import shutil

import numpy as np
import pytest

from experiments.configs import identifiability as id_config
from nearid_jax import report

KINDS = ("perm", "rigid", "linear", "ica")


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
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)
  assert on_disk["epsilon"] == rep["epsilon"]
  for key in ("epsilon", "ica_efficiency", "structural", "bi_lipschitz",
              "config"):
    assert key in on_disk
  r = 3
  for kind in KINDS:
    for stat in ("mean", "max", "q99"):
      m = np.array(on_disk["epsilon"][kind][stat], float)
      assert m.shape == (r, r) and np.all(np.diag(m) == 0)
      assert np.all(m[~np.eye(r, dtype=bool)] > 0)
  assert np.array(on_disk["ica_efficiency"]["matrix"], float).shape == (r, r)
  s = on_disk["structural"]
  for key in ("mcc_raw", "mcc_ica", "r2"):
    assert len(s[key]) == r and all(0 <= v <= 1 for v in s[key])
  assert set(s["epsilon"]) == set(KINDS)
  bl = on_disk["bi_lipschitz"]
  assert len(bl["one_plus_l"]) == r and all(v >= 1 for v in bl["one_plus_l"])
  assert bl["data_bound"] == 2.0  # slope 0.5, two layers
  assert on_disk["config"]["train"]["num_seeds"] == 3
  md = open(os.path.join(workdir, "report.md")).read()
  assert "| ε | perm | rigid | linear | ICA (eff.) |" in md
  assert "## Verdict" in md and "near-identifiable up to" in md
  dis = on_disk["disentanglement"]
  assert dis["metrics"] == list(report.default_config().metrics)
  for col in ("infom", "infoc", "infoe", "dci_disentanglement", "mig", "sap",
              "modularity", "udr"):
    for side in ("raw", "ica"):
      v = dis[side][col]
      assert len(v) == r and all(0 <= x <= 1 + 1e-6 for x in v), (col, v)
  # The synthetic factors are continuous: one merged note says so.
  assert len(dis["notes"]) == 1
  assert dis["notes"][0].startswith("factors[:, 0, 1, 2, 3] looks continuous")
  assert "| infom |" in md and "Note: factors[:, 0, 1, 2, 3]" in md


def test_expected_science_on_the_synthetic_autoencoder(done):
  _, _, rep = done
  mean = {k: rep["pairs"][k]["mean"]["mean"] for k in KINDS}
  assert mean["linear"] < mean["rigid"] < mean["perm"], mean
  assert mean["ica"] < 0.6 * mean["perm"], mean
  mcc_raw = np.mean(rep["structural"]["mcc_raw"])
  mcc_ica = np.mean(rep["structural"]["mcc_ica"])
  assert mcc_ica > mcc_raw + 0.1, (mcc_raw, mcc_ica)
  assert mcc_ica > 0.9
  assert rep["verdict"]["statistical"] in ("rigid", "linear")
  # ICA on the AE latents disentangles by the field's metrics too.
  dis = rep["disentanglement"]
  for col in ("infom", "infoc", "dci_disentanglement", "mig", "udr"):
    raw, ica = np.mean(dis["raw"][col]), np.mean(dis["ica"][col])
    assert ica > raw + 0.1, (col, raw, ica)
  # ICA is invertible: the information about the factors stays.
  np.testing.assert_allclose(np.mean(dis["ica"]["infoe"]),
                             np.mean(dis["raw"]["infoe"]), atol=0.05)


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
  m = out["epsilon"]["rigid"]["mean"]
  assert m[1] == [None] * 3 and m[0][1] is None and m[0][2] is not None
  np.testing.assert_allclose(m[0][2], rep["epsilon"]["rigid"]["mean"][0][2],
                             rtol=1e-5)  # same split, same rows
  assert out["structural"]["mcc_raw"][1] is None
  assert out["bi_lipschitz"]["note"].startswith("not computed")
  assert "disentanglement" not in out
  assert "Diverged runs, left out: seed1" in open(
      tmp_path / "report" / "report.md").read()
  # Different settings into the same report workdir need --overwrite.
  config.threshold = 0.1
  with pytest.raises(ValueError, match=r"different settings.*threshold"):
    report.run(config, str(tmp_path / "report"))
  assert report.run(config, str(tmp_path / "report"),
                    overwrite=True)["threshold"] == 0.1
  # A representation file with unexpected keys.
  data["z_latent"] = data.pop("z/latent")
  np.savez(train_dir / "representations.npz", **data)
  with pytest.raises(ValueError, match=r"unexpected key\(s\) \['z_latent'\]"
                     r".*missing key\(s\) \['z/latent'\].*found \["):
    report.load_representations(str(train_dir / "representations.npz"),
                                "latent")


def test_invalid_config_fails_before_training(tmp_path):
  config = small_config()
  config.kinds = ("perm", "affine")
  with pytest.raises(ValueError, match=r"config.kinds: unknown kind"):
    report.run(config, str(tmp_path))
  config = small_config()
  config.layer = "enc_0"
  with pytest.raises(ValueError, match=r"config.layer: 'enc_0' is not among"):
    report.run(config, str(tmp_path))
  config = small_config()
  config.metrics = ("infomec", "betavae")
  with pytest.raises(ValueError, match=r"config.metrics: unknown metric\(s\) "
                     r"\['betavae'\]"):
    report.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "train")


@pytest.mark.timeout(300)
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
  assert rep["settings"]["dim"] == 10 and rep["settings"]["num_factors"] == 5
  m = np.array(rep["epsilon"]["linear"]["mean"], float)
  assert m.shape == (2, 2) and np.all(m[~np.eye(2, dtype=bool)] > 0)
  dis = rep["disentanglement"]
  # Grid-valued factors are classes, not binned continuous values.
  assert not any("continuous" in n for n in dis["notes"]), dis["notes"]
  for side in ("raw", "ica"):
    assert set(dis[side]) == {"infom", "infoe", "infoc", "mig"}
    assert all(0 <= v <= 1 + 1e-6 for v in dis[side]["infom"])
  # The conv decoder's Jacobian (flattened image output) gives 1 + L >= 1.
  assert all(v >= 1 for v in rep["bi_lipschitz"]["one_plus_l"])
  assert os.path.exists(tmp_path / "report" / "disentanglement.png")
