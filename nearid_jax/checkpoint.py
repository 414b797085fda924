"""Checkpoints of the stacked multi-run train state, behind one small class.

Orbax's V0 `CheckpointManager` does the work (atomic step directories, async
writes, multi-host coordination); keeping it behind this class means a move
to Orbax V1 touches one file. A SIGKILL during a save leaves only a
temporary directory that Orbax ignores, so the latest *complete* step is
always restorable.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a pytree of (sharded) arrays by step.

  Use as a context manager so pending async writes finish:

    with Checkpointer(workdir / "checkpoints") as ckpt:
      ckpt.save(step, state)
      state = ckpt.restore(ckpt.latest_step(), abstract_state)
  """

  def __init__(self, directory: str | os.PathLike, keep: int = 2):
    self._manager = ocp.CheckpointManager(
        os.fspath(os.path.abspath(directory)),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the shapes, dtypes and shardings of the target.

    Args:
      step: a saved step.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with shardings, e.g.
        from `jax.eval_shape` (so nothing is allocated twice).
    """
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or structs) with `shardings`."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)
