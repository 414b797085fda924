"""How every binary ends: a user error is one line `error: ...`, exit 1.

An experiment binary (`experiments/*.py`) hands its `main` to `run_main`
instead of `absl.app.run`:

    from nearid_jax import cli

    def main(argv):
      ...  # flags only: one library call, e.g. train.run(config, workdir)

    if __name__ == "__main__":
      cli.run_main(main)

Errors the user can fix end in one line on stderr and exit status 1:
  * flag and `--config.<field>=...` override errors, including fields that
    a locked config does not have (named with the fields it does have);
  * `ValueError` (invalid config or workdir, bad input; the library's
    messages name the field and the fix), `FileNotFoundError`, an unreadable
    or truncated file (`zipfile.BadZipFile`, `EOFError`), a corrupt
    checkpoint (`nearid_jax.checkpoint.CorruptCheckpoint`), a workdir in use
    (`nearid_jax.workdir.WorkdirInUse`);
  * operating-system errors: disk full, quota, permission, read-only file
    system (with the path).
Anything else is a bug and keeps its traceback. `--verbosity=1` (or higher)
shows the traceback of user errors too.

Every binary also takes the flags that join a cluster of processes (a TPU
pod, a GPU cluster; `nearid_jax.distributed`): `--coordinator_address`,
`--num_processes`, `--process_id` (or the JAX_* environment variables),
`--distributed=auto|on|off`, `--initialization_timeout_s`,
`--heartbeat_timeout_s`. `run_main` joins before `main` runs; without them
the job is one process. A failure to join (`distributed.ClusterError`)
ends in one line too.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable, NoReturn, Sequence
import zipfile

from absl import app
from absl import flags
from absl import logging

from nearid_jax import checkpoint
from nearid_jax import distributed
from nearid_jax import workdir

_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", distributed.MODES,
    "Join a cluster of processes (jax.distributed): auto = when "
    "--coordinator_address/--num_processes/--process_id (or the JAX_* "
    "variables) are given or a launcher (SLURM, Open MPI) started several "
    "tasks; on = always (also detects a TPU pod); off = never.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator "
    "(env JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the job (env JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in 0..num_processes-1 (env "
    "JAX_PROCESS_ID).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout_s", 300, "Seconds to wait for every process to "
    "join the cluster before giving up.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "Seconds without a heartbeat after which a "
    "process counts as dead and the job ends.")

# Exceptions whose message is meant for the user (the library's checks).
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError,
               NotADirectoryError, PermissionError, zipfile.BadZipFile,
               EOFError, checkpoint.CorruptCheckpoint, workdir.WorkdirInUse,
               distributed.ClusterError)
# Operating-system errors that say something about the machine, not the code.
_OS_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES:
              "permission denied", errno.EIO: "input/output error"}


def run_main(main: Callable[[list[str]], object],
             argv: Sequence[str] | None = None) -> None:
  """Runs `main` as `absl.app.run` does, ending user errors in one line.

  Args:
    main: the binary's `main(argv)`.
    argv: the command line; None for `sys.argv`.
  """
  def wrapped(args):
    try:
      join_cluster()
      return main(args)
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e) or _verbose(sys.argv if argv is None else argv):
        raise
      _exit(describe(e))

  app.run(wrapped, argv=None if argv is None else list(argv),
          flags_parser=_parse_flags)


def join_cluster() -> bool:
  """Joins the cluster the distributed flags describe (after parsing).

  Returns:
    True when this process is one of several.
  """
  cluster = distributed.resolve(_DISTRIBUTED.value, _COORDINATOR.value,
                                _NUM_PROCESSES.value, _PROCESS_ID.value)
  return distributed.initialize(
      cluster, initialization_timeout_s=_INIT_TIMEOUT.value,
      heartbeat_timeout_s=_HEARTBEAT.value)


def is_user_error(e: BaseException) -> bool:
  """True for exceptions `run_main` reports in one line (see module doc).

  Examples:
    >>> is_user_error(ValueError("config.num_seeds: must be >= 1"))
    True
    >>> is_user_error(TypeError("a bug"))
    False
  """
  if isinstance(e, USER_ERRORS):
    return True
  return isinstance(e, OSError) and e.errno in _OS_ERRNOS


def describe(e: BaseException) -> str:
  """The one-line message of a user error (its path, when it has one).

  Examples:
    >>> describe(OSError(errno.ENOSPC, "No space left on device", "/w"))
    'disk full writing /w (No space left on device)'
  """
  if isinstance(e, OSError) and e.errno in _OS_ERRNOS and not isinstance(
      e, FileNotFoundError):
    where = f" writing {e.filename}" if e.filename else ""
    return f"{_OS_ERRNOS[e.errno]}{where} ({e.strerror or e})"
  if isinstance(e, (zipfile.BadZipFile, EOFError)):
    return f"unreadable or truncated file ({type(e).__name__}: {e})"
  msg = str(e)
  if isinstance(e, OSError) and e.filename and e.filename not in msg:
    msg = f"{e.filename}: {msg}"
  return " ".join(msg.split()) or type(e).__name__


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if _verbose(argv):
      raise
    _exit(f"{e} (--helpfull lists the flags)")
  except Exception as e:  # pylint: disable=broad-except
    # A --config.<field> override the config cannot take (e.g. a field a
    # locked config lacks) raises from inside absl's parser.
    if _verbose(argv):
      raise
    _exit(_override_error(e))


def _override_error(e: Exception) -> str:
  flag, field, section = None, None, None
  tb = e.__traceback__
  while tb is not None:
    local = tb.tb_frame.f_locals
    self = local.get("self")
    if isinstance(self, flags.Flag):
      if flag is None:
        flag = self
      # config_flags names the override being applied `field_path` (or
      # `override` while it validates them).
      for name in ("field_path", "override"):
        if isinstance(local.get(name), str):
          field = local[name]
    if hasattr(self, "keys") and type(self).__name__.endswith("ConfigDict"):
      section = self  # the innermost config section
    tb = tb.tb_next
  reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  reason = " ".join(reason.replace("\\n", " ").split())
  if isinstance(e, (AttributeError, KeyError)):
    hint = reason[reason.find("Did you mean"):] if "Did you mean" in (
        reason) else ""
    reason = "no such field in the config" + (
        f" ({hint.replace(chr(92), '').rstrip(chr(39) + chr(34))})"
        if hint else "")
    if section is not None:
      reason += f"; its section has the fields {sorted(section.keys())}"
  else:
    reason = f"{type(e).__name__}: {reason}"
  if flag is None:
    return f"a flag could not be parsed ({reason})"
  name = f"--{flag.name}.{field}" if field else f"--{flag.name}"
  return f"{name}: {reason}"


def _verbose(argv: Sequence[str]) -> bool:
  """True when the command line asks for --verbosity >= 1 (or -v >= 1)."""
  args = list(argv)
  for i, a in enumerate(args):
    for name in ("--verbosity", "-v"):
      value = None
      if a.startswith(name + "="):
        value = a.split("=", 1)[1]
      elif a == name and i + 1 < len(args):
        value = args[i + 1]
      if value is not None:
        try:
          return int(value) >= 1
        except ValueError:
          return False
  return False


def _exit(message: str) -> NoReturn:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)
