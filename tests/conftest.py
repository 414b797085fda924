"""Test setup: 8 forced host devices so sharding is exercised on CPU.

This must run before jax is imported anywhere, which pytest guarantees for a
top-level conftest.py.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

assert len(jax.devices()) == 8, "conftest must set XLA_FLAGS before jax is imported"

# The persistent compilation cache (the repo's ignored .cache/, passed on to
# the binaries and notebooks that tests start) stays off under the 8 forced
# host devices: `compile_cache.enable` refuses multi-device CPU backends,
# whose executables aborted the process when serialized. The call is kept so
# a run with one device (XLA_FLAGS set by hand) still gets the cache.
from nearid_jax import compile_cache  # noqa: E402  pylint: disable=g-import-not-at-top

os.environ.setdefault(compile_cache.PATH_ENV, os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
    "jax_tests"))
compile_cache.enable()
