"""Joining a cluster of processes: `initialize`, `is_primary`, `barrier`.

One job may run as several processes (a TPU pod's hosts, a GPU cluster's
nodes, or several processes on one machine). Each process calls
`initialize` before anything touches a device; `jax.distributed` then
connects them through a coordinator (process 0) and the library's work is
spread over the devices of all of them (`nearid_jax.parallel.devices`).
Every binary calls it from its shared entry (`cli.run_main`, which defines
these flags):

    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
    (or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID; flags win)
    --distributed=auto|on|off

`auto` (the default) joins when the three values are given, or when a
launcher says it started several tasks (SLURM_STEP_NUM_TASKS > 1, Open MPI's
OMPI_COMM_WORLD_SIZE > 1; jax detects the rest); otherwise the job is one
process, as before. `on` always joins, detecting what is not given (a TPU
pod, where the hosts are found through the TPU metadata); `off` never does.

Who writes: only the primary process (process 0) writes files (logs,
final.json, representations.npz, reports, plots) and holds the workdir's
lock; checkpoints are written by all processes together (Orbax's
multi-process protocol, each writes its shards). `barrier(name)` separates
"written" from "read": a process that reads a file another wrote waits at
the barrier the writer reaches after writing.

Analysis across hosts (the report's ICA, ε pairs and metrics, and
`compare`): every process computes it from the same files on its own
devices, so the result is the same on every process, and the primary
writes it once. The other choice, the primary alone while the others wait
and then receive the result (`broadcast_one_to_all`), needs a pytree
broadcast of the whole Report (strings, nested dataclasses) and a wait
whose length is the analysis's; spreading the analysis itself over the global devices would need every
host-side read of its results (dozens, in ICA, the alignment and the
metrics) to gather across processes. The analysis of a report is seconds
to minutes next to hours of training, and on separate hosts the repeated
work costs no wall time, so the simplest robust rule won: each process
analyses on its own devices (`parallel.process_local`), deterministically,
and no result crosses processes. Measured (the tiny report of
tests/test_multihost.py, 3 runs x 128 rows, under contention): analysis
21 s on 1 process x 4 devices; 44 s on 2 processes x 2 devices simulated on
the same 2 cores (both processes share them; on two hosts each has its own).

A dead process: the coordinator notices its missing heartbeats after
`--heartbeat_timeout_s` (default 100 s) and jax ends the others ("Terminating
process because the JAX distributed service detected fatal errors ...
another task died", an abort: exit status 134) rather than leaving them
waiting (tests/test_multihost.py: 5 s of heartbeat, ~6 s from the kill).
Rerunning the same command resumes from the last checkpoint, on any
number of processes and devices. A coordinator that cannot be reached is
checked before jax connects (jax would abort there too), so it ends in one
`error:` line.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import time

import jax

MODES = ("auto", "on", "off")

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
       "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
# Launchers whose task count says "several processes were started": srun's
# job step (not SLURM_NTASKS, which a batch script without srun also has).
LAUNCHERS = ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


class ClusterError(RuntimeError):
  """The processes of a job could not join (or lost) each other."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """How this process joins: explicit values, detection, or not at all.

  Attributes:
    join: whether to call `jax.distributed.initialize`.
    coordinator_address, num_processes, process_id: explicit values (None:
      detected by jax from the TPU/SLURM/MPI environment).
  """
  join: bool
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def resolve(mode: str = "auto", coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            environ: dict[str, str] | None = None) -> Cluster:
  """Decides how to join from the flags' values and the environment.

  Args:
    mode: "auto", "on" or "off" (see the module doc).
    coordinator_address, num_processes, process_id: flag values (None: the
      JAX_* environment variable, if set).
    environ: the environment (None: `os.environ`).

  Returns:
    The `Cluster`.

  Raises:
    ValueError: some but not all of the three values are given, or they are
      malformed (an address without a port, a process id out of range).

  Examples:
    >>> resolve(environ={})
    Cluster(join=False, coordinator_address=None, num_processes=None, process_id=None)
    >>> resolve(coordinator_address="10.0.0.1:1234", num_processes=2,
    ...         process_id=1, environ={}).join
    True
    >>> resolve(num_processes=2, environ={})
    Traceback (most recent call last):
    ...
    ValueError: --num_processes is given but not --coordinator_address, --process_id: give all three (or the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID variables), or none to run as one process (or to detect a TPU/SLURM cluster with --distributed=on).
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r} is not one of {MODES}.")
  env = os.environ if environ is None else environ
  values = {"coordinator_address": coordinator_address,
            "num_processes": num_processes, "process_id": process_id}
  for name, var in ENV.items():
    if values[name] is None and env.get(var, "") != "":
      values[name] = env[var]
  given = [n for n, v in values.items() if v is not None]
  if mode == "off":
    return Cluster(join=False)
  if given and len(given) < 3:
    missing = [f"--{n}" for n in values if n not in given]
    raise ValueError(
        f"{', '.join('--' + n for n in given)} "
        f"{'is' if len(given) == 1 else 'are'} given but not "
        f"{', '.join(missing)}: give all three (or the "
        f"{', '.join(ENV.values())} variables), or none to run as one "
        "process (or to detect a TPU/SLURM cluster with --distributed=on).")
  if given:
    address = str(values["coordinator_address"])
    n, i = _int("num_processes", values["num_processes"]), _int(
        "process_id", values["process_id"])
    if not re.fullmatch(r"\S+:\d+", address):
      raise ValueError(f"--coordinator_address={address!r}: expected "
                       "HOST:PORT, e.g. 10.0.0.1:1234.")
    if n < 1:
      raise ValueError(f"--num_processes={n}: must be >= 1.")
    if not 0 <= i < n:
      raise ValueError(f"--process_id={i}: must be in [0, {n - 1}] for "
                       f"--num_processes={n}.")
    return Cluster(True, address, n, i)
  if mode == "on":
    return Cluster(join=True)
  launched = any(_int_or_zero(env.get(v)) > 1 for v in LAUNCHERS)
  return Cluster(join=launched)


def initialize(cluster: Cluster | None = None, *,
               initialization_timeout_s: int = 300,
               heartbeat_timeout_s: int = 100) -> bool:
  """Joins the cluster `cluster` says (default: from the environment).

  Call once, before anything touches a device (binaries: `cli.run_main`
  does). On CPU the processes' collectives go through gloo.

  Args:
    cluster: how to join; None: `resolve()` (the JAX_* variables and the
      launcher's).
    initialization_timeout_s: seconds to wait for every process.
    heartbeat_timeout_s: seconds of silence after which a process counts as
      dead.

  Returns:
    True if this process joined a cluster (several processes), False for a
    single-process job.

  Raises:
    ValueError: inconsistent flags (see `resolve`).
    ClusterError: the coordinator could not be reached, or not every
      process joined, within the timeout (the message says what to check).
  """
  if cluster is None:
    cluster = resolve()
  if not cluster.join or jax.distributed.is_initialized():
    return jax.distributed.is_initialized()
  timeout, heartbeat = initialization_timeout_s, heartbeat_timeout_s
  where = (f"the coordinator {cluster.coordinator_address} as process "
           f"{cluster.process_id} of {cluster.num_processes}"
           if cluster.coordinator_address else
           "the cluster detected from the environment (TPU / SLURM / MPI)")
  hint = ("Check that process 0 is running and reachable at that address "
          "(host name, port free and not firewalled), that every process was "
          "given the same --coordinator_address and --num_processes and its "
          "own --process_id, and that all were started "
          "(--initialization_timeout_s waits longer).")
  if cluster.coordinator_address and cluster.process_id:
    # jax aborts the process (no exception) when the coordinator cannot be
    # reached, so a process that connects to it checks first.
    if not _reachable(cluster.coordinator_address, timeout):
      raise ClusterError(f"could not join {where}: nothing accepted a "
                         f"connection there within {timeout} s. {hint}")
  # Cross-process collectives on CPU need an implementation (gloo ships
  # with jaxlib); the binaries own the process, so they may set it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator_address,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        initialization_timeout=int(timeout),
        heartbeat_timeout_seconds=int(heartbeat))
  except Exception as e:  # jax raises RuntimeError / XlaRuntimeError / ValueError  # pylint: disable=broad-except
    reason = " ".join(str(e).split())[:300]
    raise ClusterError(f"could not join {where} within {timeout} s "
                       f"({type(e).__name__}: {reason}). {hint}") from e
  return True


def _reachable(address: str, timeout: float) -> bool:
  """Whether HOST:PORT accepts a TCP connection within `timeout` seconds."""
  host, port = address.rsplit(":", 1)
  host = host.strip("[]")  # an IPv6 literal
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return True
    except OSError:
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.25)


def _int(name: str, value) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"--{name}={value!r}: expected an integer.") from None


def _int_or_zero(value) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    return 0


def process_count() -> int:
  """Processes in the job (1 when none joined); never starts a backend."""
  return jax.process_count() if jax.distributed.is_initialized() else 1


def is_primary() -> bool:
  """True on the process that writes files (process 0, or the only one).

  Examples:
    >>> is_primary()  # a single-process job
    True
  """
  return process_count() == 1 or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (one process: no-op).

  Args:
    name: the same string on every process, unique per use site.
  """
  if process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
