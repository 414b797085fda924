"""Backend policy: every "how much per device, how many threads" knob.

The numbers that depend on the backend (CPU or an accelerator) are fields
of one frozen `Policy`, read by the execution layer and by the modules that
ask it (`nearid_jax.ica`, the alignment and the trainer); no other module
asks which backend it runs on. `Policy.default()` gives the measured
defaults for the current backend; `using(...)` changes fields for a block,
`set_policy(...)` for the process (a caller's choice; library calls never
change it).

Programs read the policy when they are traced. Library entry points key
their compiled programs on it (`jit`), so a changed policy recompiles them
rather than being ignored; a function the caller jits itself reads the
policy in force when it is first traced.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
from typing import Callable, Iterator

import jax


@dataclasses.dataclass(frozen=True)
class Policy:
  """How work meets the local devices (see the module doc).

  Attributes:
    devices: local devices the run axis is spread over; 0 means all
      (`jax.local_device_count()`). Every stage of one job uses the same
      devices, so results of one stage feed the next without moving.
    runs_per_group: runs of one device vmapped together by `map_runs`
      (0: all of them). CPU default 1: runs go one after another
      (`lax.map`), so each run's intermediates stay cache-sized and its
      solver loops stop when it alone converges (vmapping 16 metric runs
      was 1.6x slower); accelerators vmap all their runs.
    train_runs_per_group: the same for the trainer's steps when
      `config.runs_per_group` is 0 (CPU default 4, accelerators all).
    chunk_elems: elements of one row chunk ([rows, k]) per run in FastICA's
      moment sums; CPU 2^18 (1 MiB: `chunk_lanes` of them stay in cache
      between the two products of an iteration), accelerators 2^26 (few,
      large chunks).
    chunk_lanes: row chunks a `chunked_sum` step works on, each into its
      own accumulator, so that XLA:CPU runs their independent products on
      different cores (CPU 4: FastICA iterations 15 -> 11 ms at n = 1e5,
      d = 64 on 2 cores; accelerators 1).
    chunk_bytes: intermediate memory of one chunk of alignment pairs; CPU
      4 MiB (one pair at a time, ~1k evaluation rows per block, in cache),
      accelerators 2 GiB (large batches).
    min_shard_rows: fewest rows per device before one run's rows are split
      over devices (`row_shards`).
    min_shard_rows_per_dim: the same per column: the [k, k] work of an ICA
      iteration is repeated on every device, so a split only pays when the
      rows dominate.
    single_thread_blas: limit OpenBLAS/MKL to one thread while a host entry
      point runs on CPU (`single_threaded_blas`). XLA:CPU runs its LAPACK
      calls (eigh, svd, qr) through SciPy's OpenBLAS, whose spinning worker
      threads otherwise take the cores from XLA's own threads. The limit is
      process-wide while it lasts and restored on exit; False leaves BLAS
      alone.
  """
  devices: int = 0
  runs_per_group: int = 0
  train_runs_per_group: int = 0
  chunk_elems: int = 1 << 26
  chunk_lanes: int = 1
  chunk_bytes: int = 2 << 30
  min_shard_rows: int = 4096
  min_shard_rows_per_dim: int = 64
  single_thread_blas: bool = True

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.type == "bool":
        if not isinstance(v, bool):
          raise TypeError(f"Policy.{f.name} must be a bool, got {v!r}.")
        continue
      if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"Policy.{f.name} must be an int, got {v!r}.")
      least = 0 if f.name in ("devices", "runs_per_group",
                              "train_runs_per_group") else 1
      if v < least:
        raise ValueError(f"Policy.{f.name} must be >= {least}, got {v}.")

  @classmethod
  def default(cls, backend: str | None = None) -> "Policy":
    """The measured defaults for `backend` (None: `jax.default_backend()`).

    Examples:
      >>> from nearid_jax import parallel
      >>> parallel.Policy.default("cpu").runs_per_group
      1
      >>> parallel.Policy.default("gpu").runs_per_group  # all of a device's
      0
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
      return cls(runs_per_group=1, train_runs_per_group=4,
                 chunk_elems=1 << 18, chunk_lanes=4, chunk_bytes=4 << 20)
    return cls()


_lock = threading.Lock()
_current: list[Policy] = []  # [] until first read: the backend is then known


def policy() -> Policy:
  """The policy in force (the backend's defaults unless changed).

  Examples:
    >>> from nearid_jax import parallel
    >>> parallel.policy().min_shard_rows
    4096
  """
  with _lock:
    if not _current:
      _current.append(Policy.default())
    return _current[0]


def set_policy(new: Policy | None = None, **changes) -> Policy:
  """Replaces the process's policy; returns the previous one.

  Args:
    new: a whole `Policy` (None: the current one).
    **changes: fields to change, e.g. `devices=2`.

  Returns:
    The policy that was in force, to restore later.

  Raises:
    TypeError: an unknown field or a value of the wrong type.
    ValueError: a value out of range.

  Examples:
    >>> from nearid_jax import parallel
    >>> old = parallel.set_policy(chunk_bytes=1 << 20)
    >>> parallel.policy().chunk_bytes
    1048576
    >>> _ = parallel.set_policy(old)
  """
  old = policy()
  updated = dataclasses.replace(new or old, **changes)
  with _lock:
    _current[:] = [updated]
  return old


@contextlib.contextmanager
def using(new: Policy | None = None, **changes) -> Iterator[Policy]:
  """A block under a changed policy; the previous one is restored after.

  Process-wide while the block runs (not per thread).

  Examples:
    >>> from nearid_jax import parallel
    >>> with parallel.using(devices=1) as p:
    ...   p.devices
    1
  """
  old = set_policy(new, **changes)
  try:
    yield policy()
  finally:
    set_policy(old)


def jit(fun: Callable | None = None, **jit_kwargs) -> Callable:
  """`jax.jit` whose compiled programs are keyed on the policy too.

  For library entry points whose traced program asks the policy (device
  count, groups, chunk sizes): a call under another policy traces again
  instead of reusing a program built for the old one. Takes jax.jit's
  keyword arguments (`static_argnames`, `donate_argnames`, ...).

  Examples:
    >>> import jax.numpy as jnp
    >>> from nearid_jax import parallel
    >>> f = parallel.jit(lambda x: x * parallel.policy().min_shard_rows)
    >>> float(f(jnp.ones(())))
    4096.0
  """
  if fun is None:
    return functools.partial(jit, **jit_kwargs)
  static = tuple(jit_kwargs.pop("static_argnames", ()) or ())
  if isinstance(static, str):
    static = (static,)

  def traced(*args, _policy, **kwargs):
    del _policy  # only a cache key: the trace reads policy() itself
    return fun(*args, **kwargs)
  # fun's own signature plus the key, so that static_argnames given
  # positionally are found (jax.jit reads the signature).
  sig = inspect.signature(fun)
  params = list(sig.parameters.values())
  at = next((i for i, q in enumerate(params)
             if q.kind is inspect.Parameter.VAR_KEYWORD), len(params))
  params.insert(at, inspect.Parameter("_policy",
                                      inspect.Parameter.KEYWORD_ONLY))
  traced.__signature__ = sig.replace(parameters=params)
  compiled = jax.jit(traced, static_argnames=static + ("_policy",),
                     **jit_kwargs)

  @functools.wraps(fun)
  def call(*args, **kwargs):
    return compiled(*args, _policy=policy(), **kwargs)
  # Ahead-of-time use (`f.lower(...).compile()`), as on a jax.jit function.
  call.lower = lambda *args, **kwargs: compiled.lower(
      *args, _policy=policy(), **kwargs)
  return call


@functools.cache
def _blas_controller():
  # pylint: disable=g-import-not-at-top
  import threadpoolctl
  # The controller sees the libraries loaded when it is made: load SciPy's
  # LAPACK (the one jaxlib calls) first, even if no eigh has run yet.
  import scipy.linalg  # noqa: F401  pylint: disable=unused-import
  return threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
  """BLAS/LAPACK (OpenBLAS, MKL) limited to one thread for a block, on CPU.

  See `Policy.single_thread_blas` for why (measured: a 64 x 64 eigh before
  FastICA's iterations made them 50 ms (65%) slower on 2 cores; a batch of
  64 x 64 SVDs ran 8-10x faster with one thread). The limit is process-wide
  while the block runs and the previous limits are restored on exit; a
  no-op on accelerators or when the policy's `single_thread_blas` is False.
  Wrap code that runs XLA programs to completion (see `host_call`).
  """
  if jax.default_backend() != "cpu" or not policy().single_thread_blas:
    yield
    return
  with _blas_controller().limit(limits=1, user_api="blas"):
    yield


def host_call(fn: Callable) -> Callable:
  """Decorates a host entry point: runs it in `single_threaded_blas` and
  waits for its result there (the limit must cover the computation, which
  JAX dispatches asynchronously)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with single_threaded_blas():
      return jax.block_until_ready(fn(*args, **kwargs))
  return wrapper
