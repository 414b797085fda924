"""Input checks shared by every public entry point.

Bad input must fail with a message that names the problem (shape, dtype,
NaN/Inf count and where, rank) and says what to do, never produce a wrong
number. Checks run on the host when the array is concrete; under `jax.jit`
the arrays are tracers and the callers flag invalid runs in their outputs
instead (see e.g. `nearid_jax.ica.ICAResult.valid`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
  """True when `x` holds values on the host or device (not a tracer)."""
  return not isinstance(x, jax.core.Tracer)


def check_float(name: str, x) -> None:
  """Raises TypeError unless `x` has a floating dtype."""
  # Not getattr(x, "dtype", np.asarray(x).dtype): the default would be
  # evaluated eagerly, which fails on tracers.
  dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
  if not np.issubdtype(dtype, np.floating):
    raise TypeError(
        f"{name} must be a floating-point array, got dtype {dtype}; "
        f"convert it first, e.g. {name}.astype(np.float32).")


def check_ndim(name: str, x, ndims: Sequence[int], what: str = "") -> None:
  """Raises ValueError unless `x.ndim` is one of `ndims`."""
  if np.ndim(x) not in ndims:
    want = " or ".join(f"{d}-D" for d in ndims)
    raise ValueError(
        f"{name} must be {want}{' ' + what if what else ''}, got shape "
        f"{tuple(np.shape(x))}.")


def check_finite(name: str, x, *, run_axis: int | None = None,
                 row_axis: int | None = None) -> None:
  """Raises ValueError naming how many NaN/Inf values `x` has and where.

  Args:
    name: what the array is called in the caller's API.
    x: array (skipped when it is a tracer).
    run_axis: axis that indexes independent runs; the message lists which
      runs hold non-finite values.
    row_axis: axis that indexes rows (samples); the message lists the first
      offending rows.

  Raises:
    ValueError: when any value is NaN or +-Inf.
  """
  if not is_concrete(x):
    return
  # A device array (a previous stage's result) is checked where it lives
  # and only copied to the host to say where its non-finite values are.
  if isinstance(x, jax.Array) and bool(_all_finite(x)):
    return
  a = np.asarray(x)
  if not np.issubdtype(a.dtype, np.floating):
    return
  bad = ~np.isfinite(a)
  if not bad.any():
    return
  n_nan = int(np.isnan(a).sum())
  n_inf = int(np.isinf(a).sum())
  first = tuple(int(i) for i in np.argwhere(bad)[0])
  where = [f"first at index {first}"]
  if run_axis is not None:
    axes = tuple(i for i in range(a.ndim) if i != run_axis % a.ndim)
    runs = np.flatnonzero(bad.any(axis=axes))
    where.append(f"in run(s) {_short_list(runs)}")
  if row_axis is not None:
    axes = tuple(i for i in range(a.ndim) if i != row_axis % a.ndim)
    rows = np.flatnonzero(bad.any(axis=axes))
    where.append(f"in {len(rows)} row(s) {_short_list(rows)}")
  raise ValueError(
      f"{name} contains {n_nan} NaN and {n_inf} Inf value(s) "
      f"({'; '.join(where)}); remove or impute them before calling.")


# Largest |value| outside [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]: rescaled by
# `range_exponent` (float32 squares and their sums hold the range inside).
SAFE_EXPONENT = 40


def range_exponent(biggest: float) -> int:
  """e with biggest * 2^-e in [0.5, 1) when `biggest` (a max |x|) is outside
  [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]; else 0 (leave the data alone).

  Multiplying by 2^-e changes no mantissa: FastICA and the metrics fit data
  out of float32 range for their moments (x^2 overflows at ~1e19 and
  underflows below ~1e-19) this way, exactly.
  """
  if biggest == 0 or 2.0 ** -SAFE_EXPONENT <= biggest <= 2.0 ** SAFE_EXPONENT:
    return 0
  return int(np.frexp(biggest)[1])


@jax.jit
def _all_finite(x):
  return jnp.all(jnp.isfinite(x))


def _short_list(idx, limit: int = 10) -> str:
  idx = [int(i) for i in idx]
  if len(idx) <= limit:
    return str(idx)
  return str(idx[:limit])[:-1] + f", ... ({len(idx)} in all)]"
