"""Where alignment work meets devices: budgets, pair groups, placement.

Every backend decision of `nearid_jax.align` sits here, apart from the
science, so that the execution layer (`nearid_jax.parallel`) can take it
over in one move: the chunk budget per backend, how many devices the pairs
are spread over, single-threaded LAPACK around host entry points, and the
copies that let results of differently spread programs meet.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nearid_jax import parallel

# Intermediate memory per chunk of pairs (bytes). On CPU small blocks stay
# in cache (one pair at a time, ~1k evaluation rows per block); accelerators
# want large batches.
_CPU_BUDGET = 4 << 20
_ACCEL_BUDGET = 2 << 30


def _budget() -> int:
  return _CPU_BUDGET if jax.default_backend() == "cpu" else _ACCEL_BUDGET


def _one_lapack_thread(fn):
  """Runs a host entry point with single-threaded BLAS/LAPACK, and waits.

  See `parallel.single_threaded_blas` (a batch of 64x64 SVDs ran 8-10x
  faster with one OpenBLAS thread on a 2-core machine, 100x under load).
  The limit is process-wide while the call runs, so the result is waited
  for inside it.
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with parallel.single_threaded_blas():
      return jax.block_until_ready(fn(*args, **kwargs))
  return wrapper


def _take(tree, i):
  """Run i of every leaf of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def _pair_groups(n_runs: int) -> int:
  """Devices (groups) the pairs among n_runs source runs are spread over.

  As many as `parallel.map_runs` gives the runs themselves (the per-run
  statistics and the ICA use it): one program holding both (e.g.
  `pairwise_epsilon` under jit) must use one set of devices. The pair list
  is padded to a multiple.
  """
  return parallel.run_shards(n_runs)


def _pairs_mesh(groups: int):
  return parallel.local_mesh(groups, "pairs")


def _to_pair_devices(args, groups: int):
  """Concrete arrays committed elsewhere, replicated onto the pairs' devices.

  Inputs computed by other spread-out programs (e.g. the ICA of R runs, on
  the largest divisor of R devices) come committed to their own devices; a
  program spread over other devices refuses them. Tracers (under an outer
  jit) and uncommitted arrays are passed as they are.
  """
  devices = set(jax.local_devices()[:groups])

  def move(a):
    if (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
        and a.committed and a.sharding.device_set != devices):
      return jax.device_put(a, jax.sharding.NamedSharding(
          _pairs_mesh(groups), P()))
    return a
  return jax.tree.map(move, args)


def _to_one_device(tree):
  """Concrete arrays committed to devices, made plain (uncommitted).

  The small results of spread-out programs (ICA maps, ε) are combined
  eagerly afterwards and fed to other spread-out programs (metrics); arrays
  committed to different device sets cannot meet, so these become ordinary
  uncommitted arrays (through the host: they are small, [R, d, d] at most).
  """
  def move(a):
    if (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
        and a.committed):
      return jnp.asarray(np.asarray(a))
    return a
  return jax.tree.map(move, tree)
