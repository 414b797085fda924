"""Host-side checks of alignment input: options, shapes, values, rank.

Run on concrete input only (under `jax.jit` the same problems flag runs as
invalid instead). Each error names the input, the run and the columns, and
offers a remedy that works.

Dead latents. A column whose fit-row spread (standard deviation / the
run's largest) is below `stats.dead_spread` (100 machine epsilons, 1.2e-5
in float32) cannot be resolved by its moments. For the classes that invert
a covariance ("linear" without ridge, "ica") such columns are dropped, from
every run so that the runs keep one width, with a warning (and a note in
the result) naming them; every other class sees the same columns, so that
one call measures one representation. Dropping changes ε by about the
dropped spread. Columns that are exactly constant are an input error
(raised, as a dead unit the caller should remove); a call with no usable
column left raises.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import validation
from nearid_jax.align import options as options_lib
from nearid_jax.align import stats

_short_list = validation._short_list  # pylint: disable=protected-access


def check_kinds(kinds) -> tuple[str, ...]:
  if isinstance(kinds, str):
    kinds = (kinds,)
  kinds = tuple(kinds)
  bad = [k for k in kinds if k not in options_lib.KINDS]
  if bad or not kinds:
    raise ValueError(f"unknown alignment kind(s) {bad or '(none given)'}; "
                     f"choose from {options_lib.KINDS}.")
  if len(set(kinds)) != len(kinds):
    raise ValueError(f"kinds has duplicates: {kinds}.")
  return kinds


def check_options(fit_fraction, diameter, dims, ridge, diameter_rows):
  if not (isinstance(fit_fraction, (int, float)) and 0 < fit_fraction < 1):
    raise ValueError(f"fit_fraction must be in (0, 1) (the share of rows the "
                     f"map is fitted on; the rest evaluate it), got "
                     f"{fit_fraction!r}.")
  if diameter not in options_lib.DIAMETERS:
    raise ValueError(f"diameter must be one of {options_lib.DIAMETERS}, got "
                     f"{diameter!r}.")
  if dims not in options_lib.DIMS:
    raise ValueError(f"dims must be one of {options_lib.DIMS}, got {dims!r}.")
  if not ridge >= 0:
    raise ValueError(f"ridge must be >= 0, got {ridge!r}.")
  if int(diameter_rows) < 2:
    raise ValueError(f"diameter_rows must be >= 2, got {diameter_rows}.")


def as_stack(name: str, zs) -> jax.Array:
  """[R, n, d] float array from an array or a list of [n, d] runs."""
  if isinstance(zs, (list, tuple)):
    if not zs:
      raise ValueError(f"{name} is empty; pass [R, n, d] with R >= 1.")
    shapes = [tuple(np.shape(z)) for z in zs]
    for r, (z, shp) in enumerate(zip(zs, shapes)):
      validation.check_float(f"{name}[{r}]", z)
      validation.check_ndim(f"{name}[{r}]", z, (2,), "[n, d]")
    rows = [s[0] for s in shapes]
    if len(set(rows)) > 1:
      odd = [r for r, m in enumerate(rows) if m != rows[0]]
      raise ValueError(
          f"{name}: runs have different row counts ({rows[0]} in run 0, "
          f"{[rows[r] for r in odd]} in run(s) {odd}); every run must "
          "represent the same inputs, row for row.")
    dims = [s[1] for s in shapes]
    if len(set(dims)) > 1:
      raise ValueError(
          f"{name}: runs have different dimensions {dims}; pairwise_epsilon "
          "needs one d for all runs. Use epsilon(z_target, z_source, ...) "
          "per pair for runs of different widths.")
    zs = jnp.stack([jnp.asarray(z) for z in zs])
  validation.check_float(name, zs)
  validation.check_ndim(name, zs, (3,), "[R, n, d]")
  return zs if isinstance(zs, jax.Array) else jnp.asarray(zs)


def n_fit_rows(n: int, d: int, fit_fraction: float, what: str) -> int:
  n_fit = int(round(fit_fraction * n))
  n_eval = n - n_fit
  if n_fit <= d or n_eval < 2:
    raise ValueError(
        f"{what} has n={n} rows for d={d} dimensions: the fit split "
        f"(fit_fraction={fit_fraction}) gets {n_fit} rows and the evaluation "
        f"split {n_eval}; fitting needs more rows than dimensions (n_fit > "
        f"{d}) and evaluating at least 2. Use more rows, or reduce the "
        "dimension first.")
  return n_fit


def _where(r, batched):
  return f" in run {r}" if batched else ""


def host_checks(name: str, z, runs: stats.Runs, need_rank: bool,
                batched: bool = True) -> np.ndarray:
  """Raises naming the run and the problem; returns the dead columns.

  Checks NaN/Inf, constant columns and (when `need_rank`) dead latents and
  the rank of the standardised covariance (the correlation matrix). The
  rank is only checked when no column is dead: the caller drops the dead
  columns (every run) and checks again.

  Returns:
    int array of the columns that are dead in some run (empty unless
    need_rank).
  """
  nonfinite = np.asarray(runs.nonfinite)
  if nonfinite.any():
    validation.check_finite(name, np.asarray(z),
                            run_axis=0 if batched else None,
                            row_axis=1 if batched else 0)
  const = np.asarray(runs.constant)
  for r in np.flatnonzero(const.any(axis=1)):
    cols = np.flatnonzero(const[r])
    raise ValueError(
        f"{name} has {cols.size} constant column(s){_where(r, batched)}: "
        f"{_short_list(cols)} (e.g. dead units). No map can be fitted to or "
        "from a dimension without variance; drop those columns (the same "
        "ones for every run), e.g. z[..., keep].")
  if not need_rank:
    return np.zeros((0,), int)
  spread = np.asarray(runs.spread)
  dead = np.flatnonzero((spread < stats.dead_spread(spread.dtype)).any(0))
  if dead.size:
    return dead
  rank = np.asarray(runs.rank)
  d = runs.cov.shape[-1]
  for r in np.flatnonzero(rank < d):
    ratio = float(np.asarray(runs.corr_ratio)[r])
    eps = float(np.finfo(spread.dtype).eps)
    raise ValueError(
        f"{name} has a rank-deficient covariance{_where(r, batched)}: "
        f"numerical rank {rank[r]} of {d} on the fit rows after standardising "
        f"each column (smallest/largest eigenvalue of the correlation matrix "
        f"{ratio:.2g}, below d·eps = {d * eps:.2g}). The columns' spreads "
        f"range from {spread[r].min():.2g} to 1 of the largest, so the "
        "columns are collinear (not merely of different scales), and the "
        "'linear' and 'ica' fits are not unique. Pass ridge > 0 for "
        "'linear', leave 'ica' out of the kinds, or drop one column of each "
        f"collinear group (or reduce by PCA to its rank {rank[r]} first).")
  return np.zeros((0,), int)


def dead_note(name: str, runs: stats.Runs, dead, batched: bool = True) -> str:
  """The note (and warning) naming dropped dead columns and their spread."""
  spread = np.asarray(runs.spread)[:, dead]
  worst = spread.min(axis=0)
  where = (f" (smallest in run(s) "
           f"{_short_list(np.argmin(spread, axis=0))})" if batched else "")
  cols = ", ".join(f"{c} ({s:.2g})" for c, s in zip(dead.tolist(), worst))
  return (f"{name}: dropped {len(dead)} dead latent column(s) [spread, i.e. "
          f"sd / the largest sd, in brackets]: {cols}{where}; below "
          f"{stats.dead_spread(spread.dtype):.2g} (100 machine epsilons) "
          "their moments cannot be resolved, and 'linear'/'ica' need full "
          "rank. Every kind is measured without them.")


def drop_columns(name: str, z, dead, d: int):
  """z without the dead columns (last axis); raises if none is left."""
  keep = np.setdiff1d(np.arange(d), dead)
  if not keep.size:
    raise ValueError(f"{name}: every column is dead (spread below "
                     "100 machine epsilons of the largest); no usable "
                     "latent is left.")
  return jnp.asarray(z)[..., keep], keep


def warn(note: str) -> None:
  warnings.warn(note, UserWarning, stacklevel=4)


def standardise_factors(factors, concrete: bool):
  """Standardised factors u (zero mean, unit variance), scale-safe.

  Constant columns (or dead ones: standard deviation below
  `stats.dead_spread` of the column's largest magnitude, so that float
  cannot resolve them) are dropped with a note naming them, where the input
  is concrete.

  Returns:
    (u [n, k'], kept column indices or None (all, or traced input), notes).
  """
  validation.check_float("factors", factors)
  validation.check_ndim("factors", factors, (2,), "[n, k]")
  u = jnp.asarray(factors)
  # A power of two brings the magnitude to ~1 (exact), so that the squares
  # in the standard deviation neither overflow nor underflow (factors x1e20).
  u = stats.rescale(u, stats.scale_exponent(u))
  kept, notes = None, []
  if concrete:
    validation.check_finite("factors", np.asarray(factors), row_axis=0)
    un = np.asarray(u, np.float64)
    # Factors come in their own units, so a column is judged against its
    # own magnitude (float resolution), not against the other columns.
    size = np.abs(un).max(axis=0)
    spread = un.std(axis=0) / np.where(size > 0, size, 1)
    dead = np.flatnonzero((np.ptp(un, axis=0) == 0)
                          | (spread < stats.dead_spread(u.dtype)))
    if dead.size:
      kept = np.setdiff1d(np.arange(u.shape[1]), dead)
      if not kept.size:
        raise ValueError("factors: every column is constant; there is no "
                         "factor to align to.")
      ratios = ", ".join(f"{s:.2g}" for s in spread[dead])
      notes.append(
          f"factors: dropped constant column(s) {_short_list(dead)} "
          f"(sd / largest magnitude: {ratios}); structural ε, MCC and R² "
          f"use the other {kept.size} factor(s).")
      u = u[:, kept]
  sd = jnp.std(u, axis=0)
  u = (u - jnp.mean(u, axis=0)) / sd
  return u, kept, notes


def screen(name, z, runs, prep, need_rank, batched):
  """`host_checks`; dead columns dropped (re-prepared) with a note.

  Args:
    prep: z [R, n, d] -> `stats.Runs`, to prepare again after a drop.

  Returns:
    (z, runs, dropped columns (tuple of int), notes (list of str)).
  """
  dead = host_checks(name, z, runs, need_rank, batched=batched)
  if not dead.size:
    return z, runs, (), []
  note = dead_note(name, runs, dead, batched)
  warn(note)
  z, _ = drop_columns(name, z, dead, runs.cov.shape[-1])
  runs = prep(z if batched else z[None])
  host_checks(name, z, runs, need_rank, batched=batched)
  return z, runs, tuple(int(c) for c in dead), [note]
