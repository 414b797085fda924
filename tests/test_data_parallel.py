"""The second mesh axis: one run's batch split over devices (config.mesh)."""
import jax
import numpy as np
import pytest

from nearid_jax import train
from test_train import tiny_config  # pylint: disable=g-bad-import-order


def _host_params(state, n):
  return jax.tree.map(lambda x: np.asarray(x)[:n], state.params)


@pytest.fixture(scope="module")
def one_device():
  config = tiny_config(num_devices=1)
  return jax.jit(train.make_train(config))(jax.random.key(0))


def test_runs_x_data_mesh_equals_one_device(one_device):
  state1, metrics1 = one_device
  config = tiny_config(**{"mesh.runs": 2, "mesh.data": 4})
  trainer = train.get_trainer(config)
  assert dict(trainer.mesh.shape) == {"runs": 2, "data": 4}
  assert trainer.runs.num_padded == 4  # 3 runs padded to the 2 run shards
  compiled = jax.jit(train.make_train(config)).lower(
      jax.random.key(0)).compile()
  state, metrics = compiled(jax.random.key(0))
  np.testing.assert_allclose(metrics["loss"], metrics1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               _host_params(state, 3), _host_params(state1, 3))
  # Each device steps 2 runs x 8 of the 32 rows (data parallel), and the
  # shards' gradients meet in an all-reduce.
  hlo = compiled.as_text()
  assert "f32[2,8,16]" in hlo and "f32[2,32,16]" not in hlo
  assert "all-reduce(" in hlo


class _Stop(Exception):
  pass


def test_checkpoint_of_one_mesh_resumes_on_another(one_device, tmp_path):
  state1, metrics1 = one_device

  def stop(step):
    if step == 30:  # after the step-20 checkpoint
      raise _Stop

  first = tiny_config(**{"mesh.runs": 2, "mesh.data": 4})
  with pytest.raises(_Stop):
    train.run(first, str(tmp_path), on_chunk=stop)
  second = tiny_config(**{"mesh.runs": 1, "mesh.data": 8})
  assert train.workdir_config_diff(str(tmp_path), second) == []
  calls = []
  summary = train.run(second, str(tmp_path), on_chunk=calls.append)
  assert calls == [30, 40]  # resumed from step 20
  final = [r["final_loss"] for r in summary["runs"]]
  np.testing.assert_allclose(final, metrics1["loss"][:, -1], rtol=1e-5)
  _, state = train.load_trained(str(tmp_path))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               _host_params(state, 3), _host_params(state1, 3))


@pytest.mark.parametrize("overrides,match", [
    ({"mesh.runs": 3, "mesh.data": 3}, r"config\.mesh: runs x data = 3 x 3"),
    ({"mesh.data": 16}, r"config\.mesh"),
    ({"num_devices": 2, "mesh.data": 4}, r"num_devices = 2"),
    ({"mesh.data": 4, "batch_size": 30}, r"config\.batch_size: = 30 .*4 data "
     r"shards \(config\.mesh\.data\)"),
    ({"mesh.runs": -1}, r"config\.mesh: runs = -1"),
])
def test_bad_mesh_is_rejected_naming_the_fields(overrides, match):
  with pytest.raises(ValueError, match=match):
    train.Trainer(tiny_config(**overrides))
