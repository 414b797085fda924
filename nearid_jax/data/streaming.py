"""Streamed stored data: batches read on the host by Grain, fed to the step.

A stored dataset too large to keep in device memory (MPI3D-complex 5.7 GB,
Shapes3D 5.9 GB as uint8) is read batch by batch through its TFDS data
source (`tfds_sources.TfdsSource`, random access, no TensorFlow) by a Grain
pipeline and given to the jitted train step as an argument, so no row of
it is a constant of the compiled program:

    rows = grain.MapDataset.range(n)[this process's slice]
              .shuffle(seed).batch(B).repeat()      # row indices per batch
    batches = rows.map(source.read)                 # one batched read each

Grain fixes the order: a seeded permutation of the rows, a new one every
epoch; an epoch's last partial batch is dropped. Batch k is a pure function of (seed, k, the process's slice), so the
iterator's state (`{"next_index": k}`) is all a checkpoint needs to resume
exactly. `StreamFeed` draws the batches of a chunk of steps, stacks them
and puts them on the devices; the driver asks for the next chunk while the
device computes the current one (prefetch to device), and saves
`StreamFeed.position` (the state after the last batch it trained on) with
the model.

Several processes: each reads only the batch rows its devices hold
(`ShardByJaxProcess` when the batch's data axis spans the processes; every
process reads the whole batch when it is replicated).
"""
from __future__ import annotations

import json
from typing import Any, Callable

import grain
import jax
import numpy as np

# Batches the Grain iterator reads ahead (per process), and its threads.
_PREFETCH_BATCHES = 8
_READ_THREADS = 4


def shuffle_seed(key: jax.Array) -> int:
  """The integer seed Grain's shuffle takes, drawn from a JAX key."""
  return int(jax.random.randint(key, (), 0, 2**31 - 1))


def batch_rows(num_rows: int, batch_size: int, seed: int, *,
               shard: grain.sharding.ShardOptions | None = None,
               num_epochs: int | None = None, drop_remainder: bool = True,
               shuffle: bool = True) -> grain.MapDataset:
  """The row indices of every batch, as a Grain `MapDataset`.

  Each epoch visits the rows once, in a permutation fixed by (seed, epoch);
  batches do not cross epochs (the last, partial one of an epoch is dropped
  with `drop_remainder`).

  Args:
    num_rows: rows of the stored split.
    batch_size: rows per batch of this process (its shard of the batch).
    seed: shuffle seed (`shuffle_seed`).
    shard: this process's part of the rows (None: all of them).
    num_epochs: None for endless.
    drop_remainder: drop each epoch's last partial batch.
    shuffle: permute the rows each epoch (else in order).

  Returns:
    A MapDataset whose element k is the int64 [batch_size] rows of batch k.

  Raises:
    ValueError: fewer rows (in this shard) than one batch.

  Examples:
    >>> ds = batch_rows(10, 4, seed=0, num_epochs=2)
    >>> len(ds)  # 2 full batches per epoch
    4
    >>> sorted(np.concatenate([ds[0], ds[1]]).tolist()) == sorted(
    ...     set(np.concatenate([ds[0], ds[1]]).tolist()))  # no repeats
    True
    >>> bool((ds[3] == batch_rows(10, 4, seed=0)[3]).all())  # a function of k
    True
  """
  ds = grain.MapDataset.range(num_rows)
  if shard is not None and shard.shard_count > 1:
    ds = ds[shard.shard_index::shard.shard_count]
  if len(ds) == 0 or (drop_remainder and len(ds) < batch_size):
    raise ValueError(f"{len(ds)} rows (this process's share of {num_rows}) "
                     f"are fewer than one batch of {batch_size}; lower "
                     "the batch size.")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  # Batch, then repeat: a batch's rows come from one epoch, and epoch e
  # asks the shuffle for indices [e n, (e + 1) n), its e-th permutation.
  ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                batch_fn=lambda r: np.asarray(r, np.int64))
  return ds.repeat(num_epochs)


def process_shard(sharding: jax.sharding.Sharding, batch_size: int,
                  batch_axis: int = 0) -> grain.sharding.ShardOptions:
  """Which part of every batch this process reads, from the batch sharding.

  The rows this process's devices hold form one contiguous block of the
  batch; block i of m is read from shard i of m of the rows
  (`grain.sharding.ShardByJaxProcess` when the batch is split evenly over
  the processes). A replicated batch is read whole by every process.
  """
  shape = [1] * (batch_axis + 1)
  shape[batch_axis] = batch_size
  starts, stops = set(), set()
  for idx in sharding.addressable_devices_indices_map(tuple(shape)).values():
    sl = idx[batch_axis]
    starts.add(sl.start or 0)
    stops.add(batch_size if sl.stop is None else sl.stop)
  lo, hi = min(starts), max(stops)
  if (lo, hi) == (0, batch_size):
    return grain.sharding.NoSharding()
  width = hi - lo
  return grain.sharding.ShardOptions(shard_index=lo // width,
                                     shard_count=batch_size // width,
                                     drop_remainder=True)


class StreamFeed:
  """Chunks of batches for the train step, from a Grain pipeline.

  Args:
    read: rows (int array) -> a pytree of host arrays with those rows first
      (e.g. `TfdsSource.read`).
    num_rows: rows of the stored split.
    batch_size: rows per global batch.
    seed: shuffle seed.
    sharding: where a chunk goes: a `jax.sharding.Sharding` of the stacked
      [length, batch_size, ...] arrays (rows on axis 1).
    state: a `position` to resume from (None: the start).

  Attributes:
    position: the Grain iterator state after the last batch handed out
      (JSON-able; `StreamFeed(..., state=position)` continues from there).
  """

  def __init__(self, read: Callable[[np.ndarray], Any], num_rows: int,
               batch_size: int, seed: int, sharding: jax.sharding.Sharding,
               state: dict[str, Any] | None = None):
    self.sharding = sharding
    self.batch_size = int(batch_size)
    shard = process_shard(sharding, self.batch_size, batch_axis=1)
    local = self.batch_size // shard.shard_count
    self.dataset = batch_rows(num_rows, local, seed, shard=shard).map(read)
    self._iter = self.dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=_READ_THREADS,
        prefetch_buffer_size=_PREFETCH_BATCHES)).__iter__()
    if state is not None:
      self._iter.set_state(json.loads(json.dumps(state)))
    self.position = self._iter.get_state()

  def next_chunk(self, length: int) -> Any:
    """The next `length` batches, stacked [length, batch_size, ...] and put
    on the devices (asynchronously); advances `position`."""
    batches = [next(self._iter) for _ in range(length)]
    self.position = self._iter.get_state()
    stacked = jax.tree.map(lambda *b: np.stack(b), *batches)
    if jax.process_count() > 1:
      return jax.tree.map(
          lambda a: jax.make_array_from_process_local_data(
              self.sharding, a,
              (a.shape[0], self.batch_size) + a.shape[2:]), stacked)
    return jax.device_put(stacked, self.sharding)

  def close(self) -> None:
    close = getattr(self._iter, "close", None)
    if close is not None:
      close()
