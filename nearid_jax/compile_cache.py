"""A persistent XLA compilation cache for binaries, notebooks and tests.

JAX recompiles every program in every new process; the main job spends about
half its minute compiling. `enable()` points JAX's persistent compilation
cache (`jax_compilation_cache_dir`) at a user cache directory, so a second
process with the same programs (same shapes, flags, devices and jax version)
loads the executables from disk instead of compiling them.

Importing nearid_jax never turns it on (a library does not change
process-global JAX config): binaries call `enable()` at startup, notebooks
may, and `tests/conftest.py` does for the test processes.

Where: `path`, else `$NEARID_JAX_CACHE_DIR`, else
`$XDG_CACHE_HOME/nearid_jax/jax` (default `~/.cache/nearid_jax/jax`).
Set `NEARID_JAX_COMPILATION_CACHE=0` to leave it off (e.g. to time compiles).
"""
from __future__ import annotations

import os

import jax

__all__ = ["enable", "default_path", "DISABLE_ENV", "PATH_ENV"]

DISABLE_ENV = "NEARID_JAX_COMPILATION_CACHE"
PATH_ENV = "NEARID_JAX_CACHE_DIR"


def default_path() -> str:
  """The cache directory `enable()` uses when given no path."""
  if os.environ.get(PATH_ENV):
    return os.path.expanduser(os.environ[PATH_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "nearid_jax", "jax")


def enable(path: str | os.PathLike | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache (process-global; call once
  at startup, before the first compile).

  Every program is cached, however quick its compile: the many small
  programs of a job add up, and loading one costs milliseconds.

  Args:
    path: cache directory (created if missing); None: `default_path()`.

  Returns:
    The directory in use, or None when `NEARID_JAX_COMPILATION_CACHE` is
    0/false/off, or when the backend is a CPU split into several devices
    (`--xla_force_host_platform_device_count`, as the tests and benchmarks
    do), whose executables did not survive serialization; then nothing is
    changed.

  Raises:
    ValueError: the directory cannot be created or written.

  Examples:
    >>> import os, tempfile
    >>> from nearid_jax import compile_cache
    >>> os.environ[compile_cache.DISABLE_ENV] = "0"
    >>> compile_cache.enable(tempfile.mkdtemp()) is None
    True
    >>> del os.environ[compile_cache.DISABLE_ENV]
  """
  if os.environ.get(DISABLE_ENV, "1").strip().lower() in (
      "0", "false", "off", "no"):
    return None
  path = os.path.abspath(os.path.expanduser(
      os.fspath(path) if path is not None else default_path()))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f"compilation cache directory {path!r} cannot be "
                     f"created: {e}. Pass another path or set "
                     f"{DISABLE_ENV}=0.") from e
  if not os.access(path, os.W_OK):
    raise ValueError(f"compilation cache directory {path!r} is not "
                     f"writable. Pass another path or set {DISABLE_ENV}=0.")
  if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
    # Programs over several forced host devices
    # (--xla_force_host_platform_device_count): serializing one for the
    # cache aborted the process (jax 0.10 XLA:CPU, seen in the test suite),
    # and a process that read such entries back hung. No cache there.
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
