"""The execution layer: how runs, and one run's rows, meet the local devices.

Every batched computation in nearid_jax (training, FastICA, alignment,
metrics) maps a per-run function over a leading run axis, and this package
alone decides where those runs go. Other modules ask it; none builds a mesh
or asks which backend it runs on.

* `runs`: the run axis of R runs is spread over all D devices of the
  policy, padded to a multiple of D with copies of the last run
  (`run_layout`, `RunLayout`), and mapped with `map_runs` (`jax.shard_map`,
  no collectives). One rule for any R (prime R too) on any D; every stage
  uses the same devices, so stages pass sharded arrays to each other with
  no trip through the host. `mesh` is the one place a mesh is built.
  A run too large for one device adds a second axis, `DATA`: the mesh is
  runs x data and each run's batch rows are split over its data devices
  (`RunLayout.data_shards`, `RunLayout.batch_sharding`; the trainer's
  `config.mesh`).
* `rows`: the rows of ONE large run split over the devices (`Rows`,
  `row_shards`): sums over rows are computed per device and added with
  `psum`.
* `backend`: the backend-dependent knobs (devices, runs vmapped together,
  chunk budgets, the BLAS thread limit) as one frozen `Policy`, with
  `policy()`, `set_policy(...)` and `using(...)`; `jit` keys compiled
  programs on it; `single_threaded_blas` / `host_call` scope the only
  process-wide setting a library call touches, and restore it.

Devices: several GPUs or TPU cores, or the cores of a CPU host once XLA is
given one device per core (`XLA_FLAGS=--xla_force_host_platform_device_count
=<cores>` before jax is imported; `benchmarks/host_devices.py`), whose
devices run in parallel threads. Within a device, CPU maps its runs one
after another (see `Policy.runs_per_group`); accelerators vmap them.

Beyond one host (global meshes): `mesh`,
`devices` and `RunLayout.place` are the three functions that change.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from nearid_jax import parallel
  >>> x = jax.random.normal(jax.random.key(0), (5, 100, 3))
  >>> norms = jax.jit(lambda x: parallel.map_runs(jnp.linalg.norm, x))(x)
  >>> norms.shape  # 5 runs, padded to a multiple of the devices and cut
  (5,)
  >>> with parallel.using(devices=1):  # a block on one device
  ...   one = jax.jit(lambda x: parallel.map_runs(jnp.linalg.norm, x))(x)
  >>> bool(jnp.allclose(norms, one))
  True
"""
from nearid_jax.parallel.backend import host_call
from nearid_jax.parallel.backend import jit
from nearid_jax.parallel.backend import Policy
from nearid_jax.parallel.backend import policy
from nearid_jax.parallel.backend import set_policy
from nearid_jax.parallel.backend import single_threaded_blas
from nearid_jax.parallel.backend import using
from nearid_jax.parallel.rows import chunked_sum
from nearid_jax.parallel.rows import row_sharding
from nearid_jax.parallel.rows import row_shards
from nearid_jax.parallel.rows import ROWS
from nearid_jax.parallel.rows import Rows
from nearid_jax.parallel.runs import DATA
from nearid_jax.parallel.runs import device_count
from nearid_jax.parallel.runs import devices
from nearid_jax.parallel.runs import map_local
from nearid_jax.parallel.runs import map_runs
from nearid_jax.parallel.runs import mesh
from nearid_jax.parallel.runs import on_devices
from nearid_jax.parallel.runs import process_local
from nearid_jax.parallel.runs import run_layout
from nearid_jax.parallel.runs import RunLayout
from nearid_jax.parallel.runs import RUNS



__all__ = [
    "Policy", "policy", "set_policy", "using", "jit", "single_threaded_blas",
    "host_call", "RUNS", "DATA", "ROWS", "devices", "device_count", "mesh",
    "RunLayout", "run_layout", "map_runs", "map_local", "on_devices",
    "process_local", "Rows",
    "row_shards", "row_sharding", "chunked_sum",
]
