"""Tests of the multi-run trainer: batching, sharding, resume, divergence."""
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import jax
import numpy as np
import pytest

from nearid_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = train.default_config()
  c.model.encoder_widths = c.model.decoder_widths = (16,)
  c.data.obs_dim, c.data.latent_dim, c.data.eval_size = 6, 3, 64
  c.num_seeds, c.num_steps, c.batch_size = 3, 40, 32
  c.log_every, c.checkpoint_every = 10, 20
  c.progress = False
  c.update_from_flattened_dict(overrides)
  return c


def _params(state, i):
  return jax.tree.map(lambda x: np.asarray(x[i]), state.params)


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


@pytest.fixture(scope="module")
def trained_three_seeds():
  config = tiny_config()
  return config, jax.jit(train.make_train(config))(jax.random.key(0))


def test_make_train_is_pure_and_reproducible(trained_three_seeds):
  config, (state, metrics) = trained_three_seeds
  state2, metrics2 = jax.jit(train.make_train(config))(jax.random.key(0))
  np.testing.assert_array_equal(metrics["loss"], metrics2["loss"])
  for i in range(3):
    assert (train.param_checksum(_params(state, i))
            == train.param_checksum(_params(state2, i)))
  assert metrics["loss"].shape == (3, 40)
  assert np.asarray(state.step)[0] == 40
  # Different seeds give different runs.
  assert not np.allclose(_params(state, 0)["latent"]["kernel"],
                         _params(state, 1)["latent"]["kernel"])


def test_vmapped_runs_equal_runs_one_by_one(trained_three_seeds):
  _, (state, metrics) = trained_three_seeds
  for i in (0, 2):
    single = tiny_config(num_seeds=1, seed_offset=i, num_devices=1)
    s1, m1 = jax.jit(train.make_train(single))(jax.random.key(0))
    np.testing.assert_allclose(m1["loss"][0], metrics["loss"][i], rtol=1e-5)
    _assert_trees_close(_params(s1, 0), _params(state, i), rtol=1e-4,
                        atol=1e-6)


def test_sharded_over_8_devices_equals_one_device(trained_three_seeds):
  config, (state, metrics) = trained_three_seeds
  assert jax.device_count() == 8
  trainer = train.Trainer(config)
  assert trainer.runs.num_padded == 8  # 3 runs padded to the device count
  assert trainer.init_jit(jax.random.key(0)).step.sharding.num_devices == 8
  one = tiny_config(num_devices=1)
  s1, m1 = jax.jit(train.make_train(one))(jax.random.key(0))
  np.testing.assert_allclose(m1["loss"], metrics["loss"], rtol=1e-5)
  for i in range(3):
    _assert_trees_close(_params(s1, i), _params(state, i), rtol=1e-4,
                        atol=1e-6)


@pytest.mark.parametrize("num_devices,runs_per_group", [(1, 2), (2, 1)])
def test_runs_in_groups_equal_all_vmapped(trained_three_seeds, num_devices,
                                          runs_per_group):
  # Groups of a device's runs go through lax.map, the rest of the batch by
  # vmap: the numbers must not depend on how the runs are grouped.
  _, (state, metrics) = trained_three_seeds
  config = tiny_config(num_devices=num_devices, runs_per_group=runs_per_group)
  assert train.Trainer(config).runs_per_group(3) == runs_per_group
  s1, m1 = jax.jit(train.make_train(config))(jax.random.key(0))
  np.testing.assert_allclose(m1["loss"], metrics["loss"], rtol=1e-5)
  for i in range(3):
    _assert_trees_close(_params(s1, i), _params(state, i), rtol=1e-4,
                        atol=1e-6)


def test_grid_is_a_second_axis_and_divergence_is_isolated():
  # lr = 1e9 blows up; its seeds must be frozen and flagged while the seeds
  # of lr = 1e-3 train exactly as they would alone.
  config = tiny_config(num_seeds=2)
  config.grid.learning_rate = (1e-3, 1e9)
  trainer = train.Trainer(config)
  assert trainer.runs.num_runs == 4
  assert list(trainer.runs.seeds) == [0, 1, 0, 1]
  state, metrics = jax.jit(train.make_train(config))(jax.random.key(0))
  div = np.asarray(state.diverged_step)[:4]
  assert np.all(div[:2] == -1) and np.all(div[2:] >= 0), div
  frozen = jax.tree.map(lambda x: np.asarray(x[2]), state.params)
  assert all(np.isfinite(l).all() for l in jax.tree.leaves(frozen))
  alone = tiny_config(num_seeds=2)
  s_alone, m_alone = jax.jit(train.make_train(alone))(jax.random.key(0))
  np.testing.assert_allclose(metrics["loss"][:2], m_alone["loss"], rtol=1e-5)
  for i in range(2):
    _assert_trees_close(_params(state, i), _params(s_alone, i), rtol=1e-4,
                        atol=1e-6)


def test_run_writes_outputs_and_reports_divergence(tmp_path):
  config = tiny_config(num_seeds=2)
  config.grid.learning_rate = (1e-3, 1e9)
  summary = train.run(config, str(tmp_path))
  final = json.loads((tmp_path / "final.json").read_text())
  assert final == json.loads(json.dumps(summary))
  assert [d["run"] for d in final["diverged_runs"]] == [2, 3]
  assert all(d["step"] is not None and 0 <= d["step"] < 40
             for d in final["diverged_runs"])
  assert len(final["runs"][0]["param_checksum"]) == 64
  reps = np.load(tmp_path / "representations.npz")
  assert reps["z/latent"].shape == (4, 64, 3)
  assert reps["u"].shape == (64, 3) and reps["label"].shape == (64,)
  np.testing.assert_array_equal(reps["valid"], [True, True, False, False])
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text()
          .splitlines()]
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  assert len(rows[-1]["loss"]) == 4 and rows[-1]["diverged"][2] is True
  assert (tmp_path / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
  # The run's evaluation: held-out loss of the healthy runs is small.
  assert all(r["eval_loss"] < 0.5 for r in final["runs"][:2])


def test_rerun_of_finished_workdir_does_not_retrain(tmp_path):
  config = tiny_config(num_seeds=2)
  first = train.run(config, str(tmp_path))
  calls = []
  second = train.run(config, str(tmp_path), on_chunk=calls.append)
  assert calls == [] and second == first


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from test_train import tiny_config
    from nearid_jax import train

    def on_chunk(step):
      if step == 30:  # after the step-20 checkpoint, before the end
        os.kill(os.getpid(), signal.SIGKILL)

    train.run(tiny_config(), sys.argv[1], on_chunk=on_chunk)
""")


@pytest.mark.slow
def test_sigkill_and_resume_gives_bitwise_identical_params(tmp_path):
  script = tmp_path / "kill.py"
  script.write_text(_KILL_SCRIPT.format(repo=REPO,
                                        tests=os.path.join(REPO, "tests")))
  workdir = tmp_path / "killed"
  proc = subprocess.run([sys.executable, str(script), str(workdir)],
                        capture_output=True, text=True, timeout=240,
                        env={**os.environ, "PYTHONPATH": REPO}, check=False)
  assert proc.returncode == -9, proc.stderr[-2000:]
  assert not (workdir / "final.json").exists()
  resumed = train.run(tiny_config(), str(workdir))
  reference = train.run(tiny_config(), str(tmp_path / "uninterrupted"))
  assert ([r["param_checksum"] for r in resumed["runs"]]
          == [r["param_checksum"] for r in reference["runs"]])
  assert ([r["final_loss"] for r in resumed["runs"]]
          == [r["final_loss"] for r in reference["runs"]])
  steps = [json.loads(l)["step"] for l in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [10, 20, 30, 40]  # lines past the restored step replaced


@pytest.mark.parametrize("overrides,match", [
    ({"num_seeds": 0}, "num_seeds"),
    ({"data.obs_dim": 2}, "obs_dim"),
    ({"objective.name": "masked_autoencoder", "objective.mask_ratio": 1.0},
     "mask_ratio"),
    ({"eval.layers": ("latent", "bottleneck")}, "bottleneck.*enc_0"),
    ({"log_every": 7}, "log_every"),
    ({"model.name": "mlp_classifier"}, "objective.name"),
    ({"optimizer.learning_rate": -1.0}, "learning_rate"),
])
def test_invalid_configs_fail_before_compiling(overrides, match):
  config = tiny_config(**overrides)
  with mock.patch.object(jax, "jit", side_effect=AssertionError("compiled")):
    with pytest.raises(ValueError, match=match):
      train.Trainer(config)


def test_grid_over_an_unsupported_field_is_rejected():
  config = tiny_config()
  config.grid.unlock()
  config.grid.batch_size = (16, 32)
  with pytest.raises(ValueError, match="grid-able fields"):
    train.Trainer(config)


def test_workdir_checks(tmp_path):
  config = tiny_config(num_seeds=1, num_steps=20)
  train.run(config, str(tmp_path / "a"))
  other = tiny_config(num_seeds=1, num_steps=20, batch_size=16)
  with pytest.raises(ValueError, match=r"different config \(batch_size: 32 "
                     r"-> 16\).*--overwrite"):
    train.run(other, str(tmp_path / "a"))
  before = (tmp_path / "a" / "final.json").read_text()
  assert before  # untouched by the failed attempt
  train.run(other, str(tmp_path / "a"), overwrite=True)
  assert (tmp_path / "a" / "final.json").read_text() != before
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    train.run(config, str(tmp_path / "file" / "sub"))


@pytest.mark.slow
def test_binary_smoke_config(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=experiments/configs/synthetic_ae.py:smoke",
       f"--workdir={tmp_path}", "--config.num_seeds=2",
       "--config.num_steps=100"],
      cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Trained 2 runs for 100 steps" in proc.stdout
  final = json.loads((tmp_path / "final.json").read_text())
  assert len(final["runs"]) == 2 and not final["diverged_runs"]
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=experiments/configs/synthetic_ae.py:smoke",
       f"--workdir={tmp_path / 'b'}", "--config.data.obs_dim=2"],
      cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
  assert bad.returncode == 1 and "obs_dim" in bad.stderr
