"""Many runs of one model in ONE compiled program.

A *run* is one (seed, hyper-parameter grid point) pair. Runs are stacked on a
leading axis with `jax.vmap`; the step loop is a `jax.lax.scan`; with several
devices the run axis is padded and sharded by the execution layer
(`nearid_jax.parallel`, see `train.devices`), as every other stage is. The
pieces:

  * `make_train(config)` returns the pure `train(key) -> (state, metrics)`
    (purejaxrl style: `jax.jit(make_train(config))(key)` trains everything);
  * `Trainer` exposes the same computation in chunks (`init`, `chunk`,
    `evaluate`), which `run(config, workdir)` drives from the host with
    checkpoints, a progress bar and logs.

Runs and randomness. The grid (`config.grid`, e.g.
`--config.grid.weight_decay="(0, 1e-4)"`) and the seeds form a run table:
run i has grid point i // num_seeds and seed seed_offset + i % num_seeds. The grid is a second
axis of that table, flattened into the one vmapped axis so that sharding and
padding treat every run alike (any G·R works on any device count). Run i's
key is fold_in(key, seed), shared across grid points (common random numbers:
grid points differ only by their hyper-parameters); the key of step t is
fold_in(run key, t), so a resumed run draws exactly the batches an
uninterrupted one would have drawn.

Devices and data. `config.mesh` (runs x data) splits one run's batch over
several devices (data parallel) besides the run axis; stored datasets
larger than `config.data.resident_max_mb` are streamed from the host
(Grain) and passed to each chunk as an argument, their loader state saved
in every checkpoint (see `train.devices`, `data.streaming`).

Modules: `config` (fields, checks, run table), `trainer` (the pure
computation), `devices` (mesh, sharding, host transfers) and `driver` (the
host loop that writes the workdir). This package re-exports their public
names.

Divergence. A run whose loss, gradients or updated parameters are not finite
keeps its last good state, is frozen from then on, and records the step.
The other runs are unaffected.
"""
from nearid_jax.train.config import config_diff
from nearid_jax.train.config import default_config
from nearid_jax.train.config import GRIDABLE
from nearid_jax.train.config import make_run_table
from nearid_jax.train.config import mesh_shape
from nearid_jax.train.config import RESUMABLE
from nearid_jax.train.config import RunTable
from nearid_jax.train.config import validate_config
from nearid_jax.train.driver import load_trained
from nearid_jax.train.driver import run
from nearid_jax.train.driver import workdir_config_diff
from nearid_jax.train.trainer import get_trainer
from nearid_jax.train.trainer import make_optimizer
from nearid_jax.train.trainer import make_train
from nearid_jax.train.trainer import param_checksum
from nearid_jax.train.trainer import Trainer
from nearid_jax.train.trainer import TrainState
from nearid_jax.train.trainer import weight_decay_mask

__all__ = [
    "config_diff", "default_config", "GRIDABLE", "get_trainer", "load_trained",
    "make_optimizer", "make_run_table", "make_train", "mesh_shape",
    "param_checksum", "RESUMABLE", "run", "RunTable", "Trainer", "TrainState",
    "validate_config", "weight_decay_mask", "workdir_config_diff",
]
