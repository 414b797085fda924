"""Where the trainer's runs live: its layout on the execution layer.

The trainer asks `nearid_jax.parallel` like every other stage: the run axis
(seeds x grid points) is padded to a multiple of the device count with
copies of the last run (`parallel.RunLayout`; `RunTable.num_padded`) and
sharded over the layer's one-axis mesh ("runs"); each device steps its own
runs (no collectives), vmapping up to `runs_per_group` of them together.
The state stays padded between chunks; the driver drops the padding when it
copies results to the host.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from nearid_jax import parallel


class RunPlacement:
  """The devices of one trainer and how its stacked runs map onto them.

  Args:
    num_devices: devices to use; 0 for the execution layer's
      (`parallel.device_count()`, all local devices by default).
    runs_per_group: runs vmapped together on a device (0: auto, see
      `group_size`).

  Attributes:
    mesh: the layer's device mesh (one axis, `parallel.RUNS`).
    sharding: the run axis split over it.
  """

  def __init__(self, num_devices: int = 0, runs_per_group: int = 0):
    n_dev = num_devices or parallel.device_count()
    # The run count comes later (`make_run_table` pads with the same rule);
    # the layout of any multiple of n_dev runs has these devices and mesh.
    self.layout = parallel.run_layout(n_dev, n_dev)
    self.mesh = self.layout.mesh
    self.sharding = self.layout.sharding
    self._runs_per_group = runs_per_group

  @property
  def num_devices(self) -> int:
    return self.layout.num_devices

  def constrain(self, tree: Any) -> Any:
    """Pins the leading (run) axis of every leaf to the mesh (inside jit)."""
    return self.layout.constrain(tree)

  def group_size(self, local_runs: int) -> int:
    """How many of a device's runs are vmapped together.

    The configured `runs_per_group`, or when 0 the policy's
    `train_runs_per_group` (4 on CPU, where a group's weights and
    activations stay in cache; all of them on GPU/TPU).
    """
    group = (self._runs_per_group
             or parallel.policy().train_runs_per_group or local_runs)
    return min(group, local_runs)

  def map_runs(self, one: Callable, *args: Any) -> Any:
    """Applies `one` (a function of one run's leaves) to every stacked run.

    The args are already padded, so each device maps its own runs: groups
    of `group_size` runs are vmapped, the groups run one after another.
    """
    n = jax.tree.leaves(args)[0].shape[0]
    group = self.group_size(n // self.num_devices)
    return parallel.map_runs(one, *args, runs_per_group=group,
                             num_devices=self.num_devices)


def to_host(x) -> np.ndarray:
  """A (sharded) device array as one host array, gathered across hosts."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
