"""One writer per workdir: an exclusive lock on `<workdir>/.lock`.

Every job that writes a workdir (the trainer, the report, the experiment
binaries) holds `lock(workdir)` while it writes:

    with workdir.lock(path):
      ...  # write outputs

A second process that tries to lock the same workdir fails at once with
`WorkdirInUse` ("workdir ... is in use by pid N") instead of interleaving
its writes. The lock is `fcntl.flock` on an open file, so the kernel drops
it when the holder exits, however it exits: a `.lock` file left behind by a
crash (or SIGKILL) is stale and the next job takes it. Within one process the
lock is re-entrant (a report that trains into its own workdir, a test that
calls `run` twice), and it is released when the outermost holder exits.

Locks are advisory and local: they protect against a second job on this
machine (or on a file system whose `flock` is shared, which NFS's may not
be). In a job of several processes (`nearid_jax.distributed`) only the
primary process, the one that writes, takes the lock; the others pass
through (they would otherwise find it taken by their own primary).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from typing import Iterator
import zipfile

import numpy as np

from nearid_jax import distributed

LOCK_NAME = ".lock"

_held: dict[str, list] = {}  # real path -> [fd, depth]
_guard = threading.Lock()


class WorkdirInUse(RuntimeError):
  """Another process holds the lock of a workdir."""


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[str]:
  """Holds the exclusive lock of `workdir` (created if missing).

  Args:
    workdir: the directory to lock.

  Yields:
    The path of the lock file.

  Raises:
    WorkdirInUse: another process holds the lock; the message names it.
    ValueError: the directory cannot be created or written.

  Examples:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with lock(d) as path:
    ...   with lock(d):  # re-entrant within a process
    ...     os.path.basename(path)
    '.lock'
  """
  workdir = os.fspath(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  if not distributed.is_primary():
    yield path
    return
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable ({e}); choose "
                     "a directory you can write to.") from e
  key = os.path.realpath(workdir)
  with _guard:
    entry = _held.get(key)
    if entry is not None:
      entry[1] += 1
    else:
      _held[key] = [_acquire(path, workdir), 1]
  try:
    yield path
  finally:
    with _guard:
      entry = _held[key]
      entry[1] -= 1
      if entry[1] == 0:
        del _held[key]
        os.close(entry[0])  # releases the flock


def _acquire(path: str, workdir: str) -> int:
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable ({e}); choose a "
                     "directory you can write to.") from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read_pid(fd)
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise WorkdirInUse(
          f"workdir {workdir!r} is in use by pid {holder or '?'} (lock "
          f"{path}); wait for it to finish or stop it, or choose another "
          "--workdir.") from None
    raise
  os.ftruncate(fd, 0)
  os.write(fd, f"{os.getpid()}\n".encode())
  return fd


def _read_pid(fd: int) -> str:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode().strip()
  except OSError:
    return ""


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads every array of an .npz file, naming the file when it is bad.

  Examples:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.npz")
    >>> with open(path, "wb") as f:
    ...   _ = f.write(b"PK\\x03\\x04cut")
    >>> try:
    ...   load_npz(path)
    ... except ValueError as e:
    ...   print(str(e).startswith(path + " cannot be read"))
    True

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is truncated or not an .npz (the message names
      its path), instead of a bare `zipfile.BadZipFile`.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except FileNotFoundError:
    raise
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise ValueError(f"{path} cannot be read as an .npz file "
                     f"({type(e).__name__}: {e}); it may be truncated (a "
                     "full disk, an interrupted copy): write it again.") from e
