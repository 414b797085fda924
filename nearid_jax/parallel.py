"""Spreading independent runs, or the rows of one run, over local devices.

Every batched computation in nearid_jax (metrics, ICA, alignment) maps a
per-run function over a leading run axis. `map_runs` spreads the runs over
the local devices with `jax.shard_map`: several GPUs, or the cores of a CPU
host run with one XLA device per core
(`XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`, set before jax
is imported), whose devices execute in parallel threads. Within a device,
CPU maps its runs one after another (`lax.map`): each run's intermediates
then stay cache-sized and its solver loops stop when that run converges
(vmapping 16 metric runs at once was 1.6x slower); accelerators vmap their
runs for parallelism.

`row_shards` and `sum_rows` do the same for the rows of ONE run: a sum over
rows (a covariance, the moments of a fixed-point iteration) is computed on
each device's block of rows and added with `psum`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P


def _divisor_shards(size: int) -> int:
  """Largest divisor of size that is at most the local device count."""
  n_dev = jax.local_device_count()
  return max(m for m in range(1, min(n_dev, size) + 1) if size % m == 0)


def _mesh(shards: int, axis: str) -> jax.sharding.Mesh:
  # Auto axes: the results are ordinary arrays to the code around them (an
  # Explicit axis would follow them into the caller's indexing).
  return jax.make_mesh((shards,), (axis,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.local_devices()[:shards])


def map_runs(fn: Callable, *args, in_axes: int | None | Sequence[int | None]
             = 0, batch_size: int | None = None):
  """fn applied to each run (leading axis of the args), inside jit.

  Runs are split over the largest number of local devices that divides R
  (no collectives: each device runs its own); see the module doc.

  Args:
    fn: per-run function of arrays without the run axis; returns a pytree.
    *args: arrays; those with in_axes 0 have a leading run axis R, those
      with None are passed whole to every run.
    in_axes: 0 or None, for all args or one per arg.
    batch_size: on CPU, runs vmapped together within a device (lax.map's
      batch_size); None: one at a time.

  Returns:
    The pytree with a leading run axis.
  """
  axes = ((in_axes,) * len(args) if in_axes is None or isinstance(in_axes, int)
          else tuple(in_axes))
  if len(axes) != len(args) or not set(axes) <= {0, None}:
    raise ValueError(f"in_axes must be 0/None or one per arg, got {in_axes}.")
  mapped = [i for i, ax in enumerate(axes) if ax == 0]
  if not mapped:
    raise ValueError("map_runs needs at least one arg with a run axis.")

  def local(*a):
    def one(per_run):
      full = list(a)
      for i, v in zip(mapped, per_run):
        full[i] = v
      return fn(*full)
    per_run = [a[i] for i in mapped]
    if jax.default_backend() == "cpu":
      return lax.map(one, per_run, batch_size=batch_size)
    return jax.vmap(one)(per_run)

  shards = _divisor_shards(args[mapped[0]].shape[0])
  if shards == 1:
    return local(*args)
  mesh = _mesh(shards, "runs")
  specs = tuple(P("runs") if ax == 0 else P() for ax in axes)
  args = [lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, s))
          for a, s in zip(args, specs)]
  # Runs are independent (no collectives), so varying-axis checks add
  # nothing; they would only force casts on every loop carry.
  return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("runs"),
                       check_vma=False)(*args)


def row_shards(n: int, min_rows: int = 4096) -> int:
  """Devices a single run's n rows are split over (each >= min_rows rows)."""
  return max(1, min(jax.local_device_count(), n // min_rows))


class Rows:
  """The rows of x [n, ...] split once into a device-sharded block + a tail.

  The block holds the first `shards * (n // shards)` rows, sharded evenly
  over `shards` local devices; the tail holds the < shards rows left. Build
  it once (outside solver loops) so the rows are moved to the devices once.
  """

  def __init__(self, x: jax.Array, shards: int):
    self.n, self.shards = x.shape[0], shards
    m = shards * (self.n // shards)
    if shards > 1:
      self.mesh = _mesh(shards, "rows")
      self.block = jax.lax.with_sharding_constraint(
          x[:m], jax.sharding.NamedSharding(self.mesh, P("rows")))
      self.tail = x[m:]
    else:
      self.mesh, self.block, self.tail = None, x, x[:0]

  def sum(self, fn: Callable[[jax.Array], Any],
          local_sum: Callable[[Callable, jax.Array], Any]):
    """Sum over all rows of the pytree fn(rows).

    Args:
      fn: rows [c, ...] -> pytree, summed over row blocks.
      local_sum: (fn, x) -> the sum of fn over x's rows on one device (e.g.
        a chunked loop).
    """
    if self.mesh is None:
      return local_sum(fn, self.block)

    def local(xl):
      return lax.psum(local_sum(fn, xl), "rows")
    out = jax.shard_map(local, mesh=self.mesh, in_specs=P("rows"),
                        out_specs=P(), check_vma=False)(self.block)
    if self.tail.shape[0]:
      out = jax.tree.map(jnp.add, out, fn(self.tail))
    return out

  def map(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """fn applied row-wise (fn(rows) [c, ...]), all rows concatenated."""
    if self.mesh is None:
      return fn(self.block)
    out = jax.shard_map(fn, mesh=self.mesh, in_specs=P("rows"),
                        out_specs=P("rows"), check_vma=False)(self.block)
    if self.tail.shape[0]:
      out = jnp.concatenate([out, fn(self.tail)], axis=0)
    return out
