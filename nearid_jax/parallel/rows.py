"""The rows of ONE run on the local devices: `Rows`, `row_shards`.

A sum over rows (a covariance, the moments of a fixed-point iteration) is
computed on each device's block of rows and added with `psum`; row-wise
maps keep the split. Used by FastICA for a single large run (a stack of
runs is split by runs instead, `map_runs`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from nearid_jax.parallel import backend as policy_lib
from nearid_jax.parallel import runs as runs_lib

ROWS = "rows"  # the mesh axis of one run's rows


def row_shards(n: int, d: int = 1) -> int:
  """Devices the n rows (d columns) of one run are split over: all of the
  policy's devices, or 1.

  All devices when each then gets at least `max(min_shard_rows,
  min_shard_rows_per_dim * d)` rows (the policy's). Never a subset: the
  result then lives on the devices every other stage uses, and feeds them
  as it is.

  Examples:
    >>> from nearid_jax import parallel
    >>> parallel.row_shards(100)
    1
  """
  p = policy_lib.policy()
  least = max(p.min_shard_rows, p.min_shard_rows_per_dim * d)
  devices = runs_lib.device_count()
  return devices if n >= devices * least else 1


def row_sharding(n: int, shards: int) -> NamedSharding | None:
  """The layout of `Rows(x, shards, ...)` for x [n, ...] (None: no split).

  Only when the rows split evenly (no tail): put host data there directly,
  as `RunLayout.place` does for runs.
  """
  if shards == 1 or n % shards:
    return None
  return NamedSharding(runs_lib.mesh(shards, ROWS), P(ROWS))


def chunked_sum(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int,
                lanes: int | None = None):
  """Sum of the pytree fn(rows) over consecutive row chunks of x [n, ...].

  A `fori_loop` over chunks, so the intermediates of fn stay chunk-sized
  (cache-sized on CPU; bounded memory for n = 10^7 on an accelerator). Each
  step takes `lanes` chunks (None: the policy's `chunk_lanes`), each summed
  into its own accumulator: independent work XLA:CPU runs on several cores.
  """
  lanes = policy_lib.policy().chunk_lanes if lanes is None else lanes
  n = x.shape[0]
  # Fewer rows than `lanes` chunks: smaller chunks, so the lanes still run
  # side by side (down to 256 rows each).
  chunk = max(min(chunk, n // lanes), min(chunk, 256))
  steps, rem = divmod(n, chunk * lanes)
  if lanes == 1 or steps == 0:
    return _chunked_sum_one_lane(fn, x, chunk)
  shapes = jax.eval_shape(
      fn, jax.ShapeDtypeStruct((chunk,) + x.shape[1:], x.dtype))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def body(i, accs):
    return tuple(
        jax.tree.map(jnp.add, acc, fn(lax.dynamic_slice_in_dim(
            x, (i * lanes + j) * chunk, chunk, axis=0)))
        for j, acc in enumerate(accs))
  accs = lax.fori_loop(0, steps, body, (zeros,) * lanes)
  if rem:
    accs += (_chunked_sum_one_lane(fn, x[steps * lanes * chunk:], chunk),)
  return functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), accs)


def _chunked_sum_one_lane(fn, x, chunk):
  n = x.shape[0]
  nc, rem = divmod(n, chunk)
  out = None
  if nc == 1:
    out = fn(x[:chunk])
  elif nc > 1:
    shapes = jax.eval_shape(
        fn, jax.ShapeDtypeStruct((chunk,) + x.shape[1:], x.dtype))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(i, acc):
      xc = lax.dynamic_slice_in_dim(x, i * chunk, chunk, axis=0)
      return jax.tree.map(jnp.add, acc, fn(xc))
    out = lax.fori_loop(0, nc, body, init)
  if rem:
    tail = fn(x[nc * chunk:])
    out = tail if out is None else jax.tree.map(jnp.add, out, tail)
  return out


class Rows:
  """The rows of one run, split into a device-sharded block and a tail.

  The block holds the first `shards * (n // shards)` rows, sharded evenly
  over `shards` local devices; the tail the < shards rows left (on the
  default device). Sums over rows are then computed by each device on its
  rows, in chunks of `chunk` rows, and added with one `psum`: on a CPU host
  with one XLA device per core, each core streams its own rows with no
  synchronisation inside the sum (for FastICA's moments this took the FLOP
  rate from ~45% to ~63% of a large matmul on 2 cores). With shards = 1
  everything is an ordinary chunked loop on one device.

  Build it once, outside solver loops, so the rows move to the devices
  once; functions passed to the methods may close over loop values.
  """

  def __init__(self, x: jax.Array, shards: int, chunk: int,
               _tail: jax.Array | None = None):
    self.shards, self.chunk = shards, chunk
    if _tail is not None:  # from apply(): x is already the sharded block
      self.block, self.tail = x, _tail
    elif shards > 1:
      m = shards * (x.shape[0] // shards)
      self.block = lax.with_sharding_constraint(
          x[:m], NamedSharding(self._mesh(), P(ROWS)))
      self.tail = x[m:]
    else:
      self.block, self.tail = x, x[:0]
    self.n = self.block.shape[0] + self.tail.shape[0]

  def _mesh(self):
    return runs_lib.mesh(self.shards, ROWS)

  def _per_shard(self, fn, out_spec):
    return jax.shard_map(fn, mesh=self._mesh(), in_specs=P(ROWS),
                         out_specs=out_spec, check_vma=False)(self.block)

  def sum(self, fn: Callable[[jax.Array], Any]):
    """Sum over all rows of the pytree fn(rows [c, ...])."""
    if self.shards == 1:
      return chunked_sum(fn, self.block, self.chunk)
    out = self._per_shard(
        lambda xl: lax.psum(chunked_sum(fn, xl, self.chunk), ROWS), P())
    if self.tail.shape[0]:
      out = jax.tree.map(jnp.add, out, fn(self.tail))
    return out

  def apply(self, fn: Callable[[jax.Array], jax.Array]) -> "Rows":
    """Rows of fn(rows) (row-wise fn: [c, ...] -> [c, ...]), same split."""
    if self.shards == 1:
      return Rows(fn(self.block), 1, self.chunk)
    return Rows(self._per_shard(fn, P(ROWS)), self.shards, self.chunk,
                _tail=fn(self.tail))

  def every(self, stride: int) -> "Rows":
    """Every `stride`-th row (each device's block strided on its own), same
    split: a subsample spread over the whole run, whatever its row order."""
    if stride == 1:
      return self
    # Copied once (the barrier): otherwise XLA fuses the strided slice into
    # the loops that read it, and every pass strides through all n rows.
    take = lambda a: lax.optimization_barrier(a[::stride])  # noqa: E731
    if self.shards == 1:
      return Rows(take(self.block), 1, self.chunk)
    return Rows(self._per_shard(take, P(ROWS)), self.shards, self.chunk,
                _tail=take(self.tail))

  def blocks(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """fn of each device's block of rows, stacked: [shards * m, ...].

    fn: [rows, ...] -> [m, ...]; e.g. the R factor of a tall QR, whose
    stacked factors (with the tail) have the same R factor as all rows.
    """
    if self.shards == 1:
      return fn(self.block)
    return self._per_shard(fn, P(ROWS))

  def concat(self) -> jax.Array:
    """All rows as one array [n, ...]."""
    if not self.tail.shape[0]:
      return self.block
    return jnp.concatenate([self.block, self.tail], axis=0)
