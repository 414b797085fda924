"""Checkpoints of the stacked multi-run train state, behind one small class.

Orbax's V0 `CheckpointManager` does the work (atomic step directories, async
writes, multi-host coordination); keeping it behind this class means a move
to Orbax V1 touches one file. In a job of several processes every process
calls `save` and `restore` (Orbax's multi-process protocol: each writes and
reads its own shards, process 0 commits the step); a step saved on one
topology restores on any other, since the target's shardings decide the
placement. A SIGKILL during a save leaves only a
temporary directory that Orbax ignores, so the latest *complete* step is
always restorable. A step that exists but cannot be read (a truncated array
file, an empty manifest) raises `CorruptCheckpoint`, one line naming the
step and the directory; `restore_latest` then falls back to the newest
intact step unless `strict`.

A step may carry the state of a host data loader beside the model
(`save(..., loader=...)`, a JSON-able dict; `loader_state(step)` reads it):
then the step holds two Orbax items, "state" and "loader", written and
committed together, so a resumed run continues the loader exactly where
the saved model left it.
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from nearid_jax import distributed


# Free space kept beyond a checkpoint's size (metadata, logs).
_MARGIN = 1 << 20


class CorruptCheckpoint(ValueError):
  """A saved step that cannot be restored; the message names step and dir."""


class Checkpointer:
  """Saves and restores a pytree of (sharded) arrays by step.

  Use as a context manager so pending async writes finish:

    with Checkpointer(workdir / "checkpoints") as ckpt:
      ckpt.save(step, state)
      state = ckpt.restore(ckpt.latest_step(), abstract_state)
  """

  def __init__(self, directory: str | os.PathLike, keep: int = 2):
    self.directory = os.fspath(os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(
        os.fspath(os.path.abspath(directory)),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any,
           loader: dict[str, Any] | None = None) -> None:
    """Starts an asynchronous save of `state` (and `loader`) as `step`.

    Args:
      step: the step number.
      state: a pytree of arrays.
      loader: the JSON-able state of the data loader that fed `state`, or
        None (model state only).

    Raises:
      OSError: ENOSPC when the directory's file system has less free space
        than the state's size (checked first: an asynchronous save that runs
        out of space fails late, in a background thread, with many log
        lines), or when the previous save failed for lack of space.
    """
    size = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
    free = shutil.disk_usage(self.directory).free
    if free < size + _MARGIN:
      raise OSError(errno.ENOSPC, f"{free >> 10} KiB free, a checkpoint of "
                    f"step {step} needs about {(size + _MARGIN) >> 10} KiB",
                    self.directory)
    args = ocp.args.StandardSave(state)
    if loader is not None:
      args = ocp.args.Composite(state=args, loader=ocp.args.JsonSave(loader))
    try:
      self._manager.save(step, args=args, force=True)
    except Exception as e:  # pylint: disable=broad-except
      _raise_if_disk_full(e, self.directory)
      raise

  def restore(self, step: int, abstract_state: Any, *,
              allow_resize: bool = False) -> Any:
    """Restores `step` into the shapes, dtypes and shardings of the target.

    Args:
      step: a saved step.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with shardings, e.g.
        from `jax.eval_shape` (so nothing is allocated twice).
      allow_resize: restore arrays saved with another leading size by
        truncating or zero-padding them (the trainer's run axis is padded to
        the device count; the padding runs are never read).

    Raises:
      CorruptCheckpoint: the step exists but cannot be read.
      ValueError: the saved arrays have other shapes than the target.
    """
    with_loader = self._has_loader(step)

    def restore(**kwargs):
      args = ocp.args.StandardRestore(abstract_state, **kwargs)
      if not with_loader:
        return self._manager.restore(step, args=args)
      return self._manager.restore(
          step, args=ocp.args.Composite(state=args))["state"]

    try:
      return restore()
    except Exception as e:  # Orbax / TensorStore raise many types  # pylint: disable=broad-except
      reason = " ".join(str(e).split())
      if len(reason) > 300:
        reason = reason[:300] + " ..."
      if "stored shape" in reason:
        if allow_resize:
          return restore(strict=False)
        raise ValueError(f"checkpoint step {step} in {self.directory} holds "
                         f"arrays of other shapes ({reason})") from e
      raise CorruptCheckpoint(
          f"checkpoint step {step} in {self.directory} cannot be read "
          f"({type(e).__name__}: {reason})") from e

  def _has_loader(self, step: int) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), "loader"))

  def loader_state(self, step: int) -> dict[str, Any] | None:
    """The data loader's state saved with `step` (None if none was).

    Raises:
      CorruptCheckpoint: the saved loader state cannot be read.
    """
    if not self._has_loader(step):
      return None
    try:
      return dict(self._manager.restore(step, args=ocp.args.Composite(
          loader=ocp.args.JsonRestore()))["loader"])
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpoint(
          f"checkpoint step {step} in {self.directory}: the data loader's "
          f"state cannot be read ({type(e).__name__}: {e})") from e

  def restore_latest(self, abstract_state: Any, *, strict: bool = False,
                     allow_resize: bool = False) -> tuple[int | None, Any]:
    """Restores the newest step that can be read.

    A newer step that cannot be read is reported (one warning line naming
    it) and moved aside to `<directory>.corrupt/<step>`, so the next save of
    that step starts clean.

    Args:
      abstract_state: the restore target (see `restore`).
      strict: raise at the first unreadable step instead of falling back.
      allow_resize: see `restore`.

    Returns:
      (step, state), or (None, None) when no step was saved.

    Raises:
      CorruptCheckpoint: with `strict`, the newest step is unreadable; or
        every saved step is.
    """
    steps = sorted(self.all_steps(), reverse=True)
    bad = []
    for step in steps:
      try:
        state = self.restore(step, abstract_state, allow_resize=allow_resize)
      except CorruptCheckpoint as e:
        if strict:
          raise CorruptCheckpoint(
              f"{e}; strict: not falling back to an earlier step.") from e
        logging.warning("%s; falling back to an earlier step.", e)
        bad.append(step)
        continue
      for b in bad:
        self._set_aside(b)
      return step, state
    if steps:
      raise CorruptCheckpoint(
          f"no checkpoint in {self.directory} can be read (steps {steps}); "
          "delete the directory to train from the start, or pass "
          "--overwrite.")
    return None, None

  def _set_aside(self, step: int) -> None:
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(self.directory + ".corrupt", str(step))
    # Every process found the step unreadable; one moves it, all wait.
    if distributed.is_primary():
      if os.path.exists(dst):
        shutil.rmtree(dst)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.move(src, dst)
      logging.warning("Moved unreadable checkpoint step %d to %s.", step, dst)
    distributed.barrier(f"nearid_jax.checkpoint: step {step} set aside")
    self._manager.reload()

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      _raise_if_disk_full(e, self.directory)
      raise

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _raise_if_disk_full(e: Exception, directory: str) -> None:
  """Re-raises a TensorStore "No space left" failure as OSError(ENOSPC)."""
  if "No space left on device" in str(e) or "os_error_code='28'" in str(e):
    raise OSError(errno.ENOSPC, "No space left on device (while writing a "
                  "checkpoint)", directory) from e


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or structs) with `shardings`."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)
