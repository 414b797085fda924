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

`row_shards` and `Rows` do the same for the rows of ONE run: a sum over
rows (a covariance, the moments of a fixed-point iteration) is computed on
each device's block of rows and added with `psum`.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
import threadpoolctl


@functools.cache
def _blas_controller() -> threadpoolctl.ThreadpoolController:
  # The controller sees the libraries loaded when it is made: load SciPy's
  # LAPACK (the one jaxlib calls) first, even if no eigh has run yet.
  import scipy.linalg  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  return threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas():
  """BLAS/LAPACK libraries (OpenBLAS, MKL) limited to one thread, on CPU.

  XLA:CPU runs its LAPACK calls (eigh, svd, qr) through SciPy's OpenBLAS.
  With more than one thread, OpenBLAS's workers keep spinning for a while
  after each call and take the cores from XLA's own threads: measured, a
  64 x 64 eigh before FastICA's iterations made them 50 ms (65%) slower on
  2 cores. XLA's calls are on small matrices, so one thread loses nothing.
  Wraps the host-side entry points (fastica, ...) that run XLA programs to
  completion; the previous limits are restored on exit.
  """
  if jax.default_backend() != "cpu":
    yield
    return
  with _blas_controller().limit(limits=1, user_api="blas"):
    yield


def run_shards(size: int) -> int:
  """Devices map_runs spreads `size` runs over: the largest divisor of size
  that is at most the local device count."""
  n_dev = jax.local_device_count()
  return max(m for m in range(1, min(n_dev, size) + 1) if size % m == 0)


@functools.cache
def local_mesh(shards: int, axis: str) -> jax.sharding.Mesh:
  """A 1-D mesh named `axis` over the first `shards` local devices."""
  # Auto axes: the results are ordinary arrays to the code around them (an
  # Explicit axis would follow them into the caller's indexing).
  return jax.make_mesh((shards,), (axis,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.local_devices()[:shards])


def run_sharding(num_runs: int) -> jax.sharding.NamedSharding | None:
  """How map_runs lays out an [R, ...] array over devices (None: one device).

  Put host data there directly (`jax.device_put(x, run_sharding(R))`): each
  device then receives its runs in one copy, in parallel, instead of the
  whole array landing on one device and being moved again inside the program.
  """
  shards = run_shards(num_runs)
  if shards == 1:
    return None
  return jax.sharding.NamedSharding(local_mesh(shards, "runs"), P("runs"))


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

  sharding = run_sharding(args[mapped[0]].shape[0])
  if sharding is None:
    return local(*args)
  mesh = sharding.mesh
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


def row_sharding(n: int, shards: int) -> jax.sharding.NamedSharding | None:
  """The layout of `Rows(x, shards, ...)` for x [n, ...] (None: no split).

  Only when the rows split evenly (no tail); see run_sharding for why host
  data should be put there directly.
  """
  if shards == 1 or n % shards:
    return None
  return jax.sharding.NamedSharding(local_mesh(shards, "rows"), P("rows"))


def chunked_sum(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int):
  """Sum of the pytree fn(rows) over consecutive row chunks of x [n, ...].

  A `fori_loop` over chunks, so the intermediates of fn stay chunk-sized
  (cache-sized on CPU; bounded memory for n = 10^7 on an accelerator).
  """
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
          x[:m], jax.sharding.NamedSharding(self._mesh(), P("rows")))
      self.tail = x[m:]
    else:
      self.block, self.tail = x, x[:0]
    self.n = self.block.shape[0] + self.tail.shape[0]

  def _mesh(self):
    return local_mesh(self.shards, "rows")

  def _per_shard(self, fn, out_spec):
    return jax.shard_map(fn, mesh=self._mesh(), in_specs=P("rows"),
                         out_specs=out_spec, check_vma=False)(self.block)

  def sum(self, fn: Callable[[jax.Array], Any]):
    """Sum over all rows of the pytree fn(rows [c, ...])."""
    if self.shards == 1:
      return chunked_sum(fn, self.block, self.chunk)
    out = self._per_shard(
        lambda xl: lax.psum(chunked_sum(fn, xl, self.chunk), "rows"), P())
    if self.tail.shape[0]:
      out = jax.tree.map(jnp.add, out, fn(self.tail))
    return out

  def apply(self, fn: Callable[[jax.Array], jax.Array]) -> "Rows":
    """Rows of fn(rows) (row-wise fn: [c, ...] -> [c, ...]), same split."""
    if self.shards == 1:
      return Rows(fn(self.block), 1, self.chunk)
    return Rows(self._per_shard(fn, P("rows")), self.shards, self.chunk,
                _tail=fn(self.tail))

  def blocks(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """fn of each device's block of rows, stacked: [shards * m, ...].

    fn: [rows, ...] -> [m, ...]; e.g. the R factor of a tall QR, whose
    stacked factors (with the tail) have the same R factor as all rows.
    """
    if self.shards == 1:
      return fn(self.block)
    return self._per_shard(fn, P("rows"))

  def concat(self) -> jax.Array:
    """All rows as one array [n, ...]."""
    if not self.tail.shape[0]:
      return self.block
    return jnp.concatenate([self.block, self.tail], axis=0)
