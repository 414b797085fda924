"""Where the trainer's runs live: its mesh, sharding and host transfers.

All of the trainer's device code sits here so that it can move to the
library's execution layer (`nearid_jax.parallel`) in one piece. The run
axis is sharded over a one-axis mesh ("seed"); each device steps its own
runs (no collectives), vmapping up to `runs_per_group` of them together.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


class RunPlacement:
  """The mesh of one trainer and how its stacked runs map onto it.

  Args:
    num_devices: devices to use; 0 for all of them.
    runs_per_group: runs vmapped together on a device (0: auto, see
      `group_size`).

  Attributes:
    mesh: the device mesh with one axis "seed".
    sharding: `NamedSharding(mesh, P("seed"))`, the run axis sharded.
  """

  def __init__(self, num_devices: int = 0, runs_per_group: int = 0):
    n_dev = num_devices or jax.device_count()
    self.mesh = jax.make_mesh((n_dev,), ("seed",),
                              axis_types=(jax.sharding.AxisType.Auto,),
                              devices=jax.devices()[:n_dev])
    self.sharding = NamedSharding(self.mesh, P("seed"))
    self._runs_per_group = runs_per_group

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def constrain(self, tree: Any) -> Any:
    """Pins the leading (run) axis of every leaf to the mesh (inside jit)."""
    if self.mesh.size == 1:
      return tree
    return jax.lax.with_sharding_constraint(tree, self.sharding)

  def group_size(self, local_runs: int) -> int:
    """How many of a device's runs are vmapped together.

    The configured `runs_per_group`, or when 0: 4 on CPU (where a group's
    weights and activations stay in cache), all of them on GPU/TPU.
    """
    group = self._runs_per_group
    if not group:
      group = 4 if jax.default_backend() == "cpu" else local_runs
    return min(group, local_runs)

  def map_runs(self, one: Callable, *args: Any) -> Any:
    """Applies `one` (a function of one run's leaves) to every stacked run.

    Each device maps its own runs: groups of `group_size` runs are vmapped,
    the groups run one after another (`jax.lax.map`).
    """
    def local(*a):  # the runs of one device
      n = jax.tree.leaves(a)[0].shape[0]
      group = self.group_size(n)
      if group == n:
        return jax.vmap(one)(*a)
      return jax.lax.map(lambda b: one(*b), a, batch_size=group)

    if self.mesh.size == 1:
      return local(*args)
    # Runs are independent (no collectives), so each device steps its own.
    return jax.shard_map(local, mesh=self.mesh, in_specs=P("seed"),
                         out_specs=P("seed"), check_vma=False)(*args)


def to_host(x) -> np.ndarray:
  """A (sharded) device array as one host array, gathered across hosts."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
