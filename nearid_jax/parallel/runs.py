"""Independent runs on the local devices: the mesh, the padding, map_runs.

One rule for every stage (training, FastICA, alignment, metrics): the run
axis of R runs is spread over all D devices of the policy (`devices()`:
the local ones, or in a job of several processes all processes' devices,
except inside `process_local()`),
padded to a multiple of D with copies of the last run, ceil(R / D) runs per
device. Any R works (prime R too) and every device works; the padding
lanes compute throwaway copies and are dropped from results. Because every
stage uses the same devices, a result of one stage is an input of the next
as it is: no copy through the host, no re-placement.

A result without padding keeps the run sharding; a padded result, cut back
to R runs, is replicated over the D devices (arrays are split evenly or
not at all). Code that chains stages on large arrays keeps the padded
arrays (`RunLayout.place` / `pad`) and cuts once at the end (`unpad`), as
FastICA and the trainer do.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from nearid_jax.parallel import backend as policy_lib

RUNS = "runs"  # the mesh axis of the run axis
DATA = "data"  # the mesh axis of one run's batch rows (data parallel)


def devices() -> list[jax.Device]:
  """The devices work is spread over: the policy's first `devices` local
  devices (all when 0); in a job of several processes
  (`nearid_jax.distributed`), all devices of all processes.

  Raises:
    ValueError: the policy asks for more devices than there are, or, with
      several processes, for fewer than all (a mesh without some process's
      devices would leave that process out of every program).
  """
  pool = _pool()
  want = policy_lib.policy().devices
  if want > len(pool):
    raise ValueError(f"Policy.devices = {want}, but this process has "
                     f"{len(pool)} local device(s).")
  if want and want != len(pool) and jax.process_count() > 1:
    raise ValueError(f"Policy.devices = {want}: a job of "
                     f"{jax.process_count()} processes uses all {len(pool)} "
                     "devices (use 0).")
  return pool[:want or len(pool)]


def _pool() -> list[jax.Device]:
  """The devices a mesh may take: the local ones, or with several
  processes the global ones (`jax.devices()`, each process's in order)
  unless inside `process_local()`."""
  if jax.process_count() > 1 and not _local_depth[0]:
    return jax.devices()
  return jax.local_devices()


_local_depth = [0]  # process-wide: the analysis may trace in other threads


@contextlib.contextmanager
def process_local():
  """Within the block, every stage uses this process's devices only.

  For work each process of a multi-process job does on its own (the
  report's analysis, see `nearid_jax.distributed`): its arrays stay
  process-local, so results can be read on the host. One process: no
  change. Programs traced inside the block are for the local mesh; a
  function traced outside it with the same argument shapes is not
  reused here only if it is keyed on the mesh (`parallel.jit` functions
  first called inside the block are).

  Examples:
    >>> from nearid_jax import parallel
    >>> with parallel.process_local():
    ...   parallel.device_count() == jax.local_device_count()
    True
  """
  _local_depth[0] += 1
  try:
    yield
  finally:
    _local_depth[0] -= 1


def device_count() -> int:
  """`len(devices())`."""
  return len(devices())


def mesh(num_devices: int | None = None, axis: str = RUNS, *,
         data: int = 1) -> jax.sharding.Mesh:
  """The mesh of `num_devices` (x `data`) local devices.

  The only place the library builds a mesh. With `data` = 1 (the default)
  it is the 1-D mesh named `axis`; with `data` > 1 it is the 2-D mesh
  (`num_devices`, `data`) named (`axis`, `DATA`) over the first
  `num_devices * data` devices: each run's batch rows are split over the
  second axis (data parallel, see `RunLayout`). Cached: one mesh object per
  (shape, axes).

  Args:
    num_devices: devices along `axis`; None for `device_count()`.
    axis: the first axis' name ("runs" for runs, "rows" for one run's rows).
    data: devices along the `DATA` axis.

  Raises:
    ValueError: more devices asked for than there are.

  Examples:
    >>> from nearid_jax import parallel
    >>> parallel.mesh(1).axis_names
    ('runs',)
    >>> m = parallel.mesh(1, data=1)
    >>> dict(m.shape)
    {'runs': 1}
  """
  n = device_count() if num_devices is None else num_devices
  # The pool is part of the key: inside `process_local()` the same shape
  # means another set of devices.
  return _mesh(n, axis, int(data), tuple(_pool()))


@functools.cache
def _mesh(n: int, axis: str, data: int, pool: tuple[jax.Device, ...]
          ) -> jax.sharding.Mesh:
  shape, names = ((n,), (axis,)) if data == 1 else ((n, data), (axis, DATA))
  if n < 1 or data < 1 or n * data > len(pool):
    raise ValueError(f"a mesh of {' x '.join(map(str, shape))} devices "
                     f"({', '.join(names)}) does not fit the "
                     f"{len(pool)} device(s).")
  # Auto axes: the results are ordinary arrays to the code around them (an
  # Explicit axis would follow them into the caller's indexing).
  return jax.make_mesh(shape, names,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=pool[:n * data])


@dataclasses.dataclass(frozen=True)
class RunLayout:
  """Where R runs live: D devices, R padded to a multiple of D.

  With `data_shards` S > 1 the mesh is D x S (`mesh(D, data=S)`): the run
  axis is split over the D rows of devices as before and every run is
  replicated over its S devices, which split the run's batch rows between
  them (`batch_sharding`). Programs then use sharding constraints (the
  compiler adds the all-reduce of gradients over the S shards) instead of
  `map_runs`' collective-free shard_map.

  Attributes:
    num_runs: R, the real runs.
    num_devices: D, the devices along the run axis.
    data_shards: S, the devices each run's batch is split over.
  """
  num_runs: int
  num_devices: int
  data_shards: int = 1

  @property
  def per_device(self) -> int:
    """Runs per device, ceil(R / D)."""
    return -(-self.num_runs // self.num_devices)

  @property
  def padded(self) -> int:
    """R rounded up to a multiple of D."""
    return self.per_device * self.num_devices

  @property
  def padding(self) -> int:
    """Copies of the last run appended (< D)."""
    return self.padded - self.num_runs

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return mesh(self.num_devices, data=self.data_shards)

  @property
  def sharding(self) -> NamedSharding:
    """[R_padded, ...] arrays split over the devices along the run axis
    (and copied over the data shards)."""
    return NamedSharding(self.mesh, P(RUNS))

  def batch_sharding(self, batch_axis: int = 0) -> NamedSharding:
    """Arrays shared by every run whose axis `batch_axis` holds batch rows:
    the rows split over the data shards, a copy on every run shard."""
    if self.data_shards == 1:
      return self.replicated
    return NamedSharding(self.mesh, P(*([None] * batch_axis), DATA))

  @property
  def replicated(self) -> NamedSharding:
    """Arrays shared by every run: a copy on each device."""
    return NamedSharding(self.mesh, P())

  def pad(self, tree):
    """Leaves [R, ...] -> [R_padded, ...] (copies of the last run); leaves
    already [R_padded, ...] are kept. Works inside and outside jit."""
    def one(a):
      if a.shape[0] == self.padded:
        return a
      _check_runs(a, self.num_runs)
      tail = jnp.repeat(a[-1:], self.padding, axis=0)
      return jnp.concatenate([a, tail], axis=0)
    return jax.tree.map(one, tree) if self.padding else tree

  def unpad(self, tree):
    """Leaves [R_padded, ...] -> [R, ...]; other leaves are kept."""
    if not self.padding:
      return tree
    return jax.tree.map(
        lambda a: a[:self.num_runs] if a.shape[:1] == (self.padded,) else a,
        tree)

  def place(self, tree):
    """Leaves [R, ...] padded and put on their devices, outside jit.

    Host arrays go straight to the devices that use them (each device
    receives its runs in one copy, in parallel) instead of all landing on
    one device and being moved again inside the program; device arrays are
    padded and moved on the devices. Tracers are padded only.
    """
    def one(a):
      if isinstance(a, jax.core.Tracer):
        return self.pad(a)
      if not isinstance(a, jax.Array):
        a = np.asarray(a)
        if a.shape[0] != self.padded:
          _check_runs(a, self.num_runs)
          a = np.concatenate([a, np.repeat(a[-1:], self.padding, axis=0)])
      else:
        a = self.pad(a)
      return jax.device_put(a, self.sharding)
    return jax.tree.map(one, tree)

  def constrain(self, tree):
    """Inside jit: leaves [R_padded, ...] laid out along the run axis."""
    if self.num_devices * self.data_shards == 1:
      return tree
    return lax.with_sharding_constraint(tree, self.sharding)


def on_devices(tree):
  """Concrete arrays committed to devices the layer does not use, copied
  (device to device, replicated) onto `devices()`; all else as it is.

  Results of the layer's programs are already there; this admits arrays
  the caller put elsewhere (e.g. on one device), which a program spread
  over the layer's devices would refuse. Tracers and uncommitted arrays
  pass unchanged.
  """
  target = set(devices())

  def move(a):
    if (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
        and a.committed and a.sharding.device_set != target):
      where = NamedSharding(mesh(len(target)), P())
      if jax.process_count() > 1 and a.is_fully_addressable:
        # No device-to-device copy between hosts: every process holds the
        # value and puts it on its own devices of the global mesh.
        return jax.device_put(np.asarray(a), where)
      return jax.device_put(a, where)
    return a
  return jax.tree.map(move, tree)


def _check_runs(a, num_runs):
  if a.shape[0] != num_runs:
    raise ValueError(f"expected a leading run axis of {num_runs}, got shape "
                     f"{tuple(a.shape)}.")


def run_layout(num_runs: int, num_devices: int | None = None) -> RunLayout:
  """The layout of `num_runs` runs on the policy's devices.

  Args:
    num_runs: R >= 1.
    num_devices: D (None: `device_count()`); at most the local devices
      (with several processes: all the global devices).

  Examples:
    >>> from nearid_jax import parallel
    >>> lay = parallel.run_layout(7, num_devices=1)
    >>> lay.per_device, lay.padded, lay.padding
    (7, 7, 0)
    >>> lay = parallel.RunLayout(7, num_devices=2)  # on 2 devices
    >>> lay.per_device, lay.padded, lay.padding
    (4, 8, 1)
  """
  if int(num_runs) < 1:
    raise ValueError(f"need at least one run, got {num_runs}.")
  if num_devices is None:
    num_devices = device_count()
  available = len(_pool())
  if not 1 <= num_devices <= available:
    raise ValueError(f"num_devices must be in [1, {available}] (the local "
                     f"devices), got {num_devices}.")
  if num_devices != available and jax.process_count() > 1:
    raise ValueError(f"num_devices = {num_devices}: a job of "
                     f"{jax.process_count()} processes spreads runs over all "
                     f"{available} devices.")
  return RunLayout(int(num_runs), int(num_devices))


def map_local(fn: Callable, args: Sequence[Any], runs_per_group: int):
  """fn over the leading run axis of args, on one device.

  `runs_per_group` runs are vmapped together and the groups run one after
  another (`lax.map`); 0, or more than 1 and >= the runs: one vmap of all;
  1: always a loop (a lone run is not vmapped, so its numbers are those of
  the same run among others).
  """
  n = jax.tree.leaves(args)[0].shape[0]
  if runs_per_group == 1:
    return lax.map(lambda a: fn(*a), tuple(args))
  if not runs_per_group or runs_per_group >= n:
    return jax.vmap(lambda a: fn(*a))(tuple(args))
  return lax.map(lambda a: fn(*a), tuple(args), batch_size=runs_per_group)


def map_runs(fn: Callable, *args, in_axes: int | None | Sequence[int | None]
             = 0, runs_per_group: int | None = None,
             num_devices: int | None = None):
  """fn applied to each run (leading axis of the args), spread over devices.

  The runs are padded and split over the devices as the module doc says
  (`run_layout`), each device maps its own runs (`map_local`, no
  collectives), and the padding is dropped from the result. Use inside jit
  (library entry points use `parallel.jit`); eager calls work too.

  Args:
    fn: per-run function of arrays without the run axis; returns a pytree
      of arrays.
    *args: pytrees of arrays; those with in_axes 0 have a leading run axis
      R, those with None are passed whole to every run.
    in_axes: 0 or None, for all args or one per arg.
    runs_per_group: runs of one device vmapped together (None: the
      policy's `runs_per_group`; 0: all).
    num_devices: devices to use (None: the policy's).

  Returns:
    The pytree with a leading run axis R.

  Raises:
    ValueError: bad in_axes, no arg with a run axis, or args whose run
      axes differ.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from nearid_jax import parallel
    >>> x = jnp.arange(14.0).reshape(7, 2)  # 7 runs, on every device
    >>> jax.jit(lambda x: parallel.map_runs(jnp.sum, x))(x).tolist()
    [1.0, 5.0, 9.0, 13.0, 17.0, 21.0, 25.0]
  """
  axes = ((in_axes,) * len(args) if in_axes is None or isinstance(in_axes, int)
          else tuple(in_axes))
  if len(axes) != len(args) or not set(axes) <= {0, None}:
    raise ValueError(f"in_axes must be 0/None or one per arg, got {in_axes}.")
  mapped = [i for i, ax in enumerate(axes) if ax == 0]
  if not mapped:
    raise ValueError("map_runs needs at least one arg with a run axis.")
  sizes = {a.shape[0] for i in mapped for a in jax.tree.leaves(args[i])}
  if len(sizes) != 1:
    raise ValueError(f"args mapped over runs have different run counts "
                     f"{sorted(sizes)}.")
  if runs_per_group is None:
    runs_per_group = policy_lib.policy().runs_per_group

  def local(*a):
    def one(*per_run):
      full = list(a)
      for i, v in zip(mapped, per_run):
        full[i] = v
      return fn(*full)
    return map_local(one, [a[i] for i in mapped], runs_per_group)

  layout = run_layout(sizes.pop(), num_devices)
  if layout.num_devices == 1:
    return local(*args)
  args = [layout.pad(a) if ax == 0 else a for a, ax in zip(args, axes)]
  specs = tuple(P(RUNS) if ax == 0 else P() for ax in axes)
  args = [lax.with_sharding_constraint(a, NamedSharding(layout.mesh, s))
          for a, s in zip(args, specs)]
  # Runs are independent (no collectives), so varying-axis checks add
  # nothing; they would only force casts on every loop carry.
  out = jax.shard_map(local, mesh=layout.mesh, in_specs=specs,
                      out_specs=P(RUNS), check_vma=False)(*args)
  return layout.unpad(out)
