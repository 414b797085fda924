"""Where the trainer's runs live: its layout on the execution layer.

The trainer asks `nearid_jax.parallel` like every other stage: the run axis
(seeds x grid points) is padded to a multiple of the device count with
copies of the last run (`parallel.RunLayout`; `RunTable.num_padded`) and
sharded over the layer's mesh ("runs"); each device steps its own runs (no
collectives), vmapping up to `runs_per_group` of them together. The state
stays padded between chunks; the driver drops the padding when it copies
results to the host.

With `config.mesh.data` = S > 1 the mesh is runs x data: each run lives on
S devices that split its batch rows (`batch_sharding`, P(RUNS, DATA) for a
per-run batch). The runs are then vmapped (`jax.vmap(spmd_axis_name=RUNS)`)
under sharding constraints instead of shard_map: the per-run code is the
same, and the compiler inserts the all-reduce of the loss and gradients
over the data shards. The parameters stay replicated over the data shards
(no FSDP-style parameter sharding).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from nearid_jax import parallel


class RunPlacement:
  """The devices of one trainer and how its stacked runs map onto them.

  Args:
    num_devices: devices along the run axis; 0 for the execution layer's
      (`parallel.device_count()`, all local devices by default).
    runs_per_group: runs vmapped together on a device (0: auto, see
      `group_size`).
    data_shards: devices each run's batch rows are split over.

  Attributes:
    mesh: the layer's device mesh (`parallel.RUNS`, and `parallel.DATA`
      when data_shards > 1).
    sharding: the run axis split over it.
  """

  def __init__(self, num_devices: int = 0, runs_per_group: int = 0,
               data_shards: int = 1):
    n_dev = num_devices or parallel.device_count()
    # The run count comes later (`make_run_table` pads with the same rule);
    # the layout of any multiple of n_dev runs has these devices and mesh.
    self.layout = dataclasses.replace(parallel.run_layout(n_dev, n_dev),
                                      data_shards=int(data_shards))
    self.mesh = self.layout.mesh
    self.sharding = self.layout.sharding
    self._runs_per_group = runs_per_group

  @property
  def num_devices(self) -> int:
    """Devices along the run axis."""
    return self.layout.num_devices

  @property
  def data_shards(self) -> int:
    return self.layout.data_shards

  def batch_sharding(self, batch_axis: int = 0):
    """Sharding of a batch shared by all runs, rows on axis `batch_axis`."""
    return self.layout.batch_sharding(batch_axis)

  def constrain_rows(self, tree: Any) -> Any:
    """Inside one run's code: leading (row) axis split over the data shards
    (a no-op without them)."""
    if self.data_shards == 1:
      return tree
    return jax.lax.with_sharding_constraint(tree, self.batch_sharding())

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

  def map_runs(self, one: Callable, *args: Any, shared: Any = None) -> Any:
    """Applies `one` (a function of one run's leaves) to every stacked run.

    The args are already padded, so each device maps its own runs: groups
    of `group_size` runs are vmapped, the groups run one after another.
    With data shards all runs are vmapped together (the run axis sharded
    over RUNS by `spmd_axis_name`) and `runs_per_group` does not apply.

    Args:
      one: `one(*per_run_args)`, or `one(*per_run_args, shared)` when
        `shared` is given.
      *args: pytrees with the leading run axis.
      shared: a pytree passed whole to every run (e.g. a batch), or None.
    """
    fn = one
    if shared is not None:
      args = args + (shared,)
    if self.data_shards > 1:
      axes = (0,) * (len(args) - (shared is not None)) + (
          (None,) if shared is not None else ())
      return jax.vmap(fn, in_axes=axes,
                      spmd_axis_name=parallel.RUNS)(*args)
    n = jax.tree.leaves(args[0])[0].shape[0]
    group = self.group_size(n // self.num_devices)
    in_axes = 0 if shared is None else (0,) * (len(args) - 1) + (None,)
    return parallel.map_runs(fn, *args, in_axes=in_axes,
                             runs_per_group=group,
                             num_devices=self.num_devices)


def to_host(x) -> np.ndarray:
  """A (sharded) device array as one host array, gathered across hosts."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
