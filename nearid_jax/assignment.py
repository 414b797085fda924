"""Linear sum assignment (the Hungarian problem) in JAX, and signed matching.

`linear_sum_assignment` solves min_{assignment} sum_i cost[i, col(i)] exactly,
with the same semantics as `scipy.optimize.linear_sum_assignment`: for an
[n, m] cost matrix it returns (row_ind, col_ind) of length min(n, m), with
row_ind sorted. It is the shortest-augmenting-path algorithm of Jonker and
Volgenant as described by Crouse (2016) (the one SciPy uses): one Dijkstra
search with dual potentials per row, written with `lax.fori_loop` over rows
and `lax.while_loop` over search steps, each step a vectorised operation over
the columns. It is pure, so `jax.jit` and `jax.vmap` apply: a batch of cost
matrices [B, n, m] is solved by `jax.vmap(linear_sum_assignment)(costs)`.

Cost: O(n^2 m) work for n <= m (O(n) search steps of O(m) each per row), so
it suits the few hundred dimensions that matching representations needs, not
assignment problems with 10^4 rows.

Why not `optax.assignment.hungarian_algorithm`. optax 0.2.8 ships an exact
Hungarian solver that jits and vmaps too. `python -m benchmarks.assignment`
solves batches of d x d matrices -|corr| under `jit(vmap(...))`, the sizes
alignment uses; both solvers were optimal on every problem (SciPy's cost),
and optax's time / ours was, in two runs on a loaded 2-core CPU (load ~20,
so single ratios are noisy): d=4 (64 problems) 1.00 and 0.23, d=16 (64)
4.6 and 3.3, d=64 (16) 2.5 and 1.3, d=128 (8) 0.65, d=256 (4) 6.8. It is
not at least as fast on the sizes used (slower by 1.3-7x at d = 16, 64 and
256, the common widths), and it offers neither SciPy's semantics for
rectangular problems and +inf (forbidden) entries nor the infeasibility
report, so ours stays.

`match_signed_permutation(corr)` is the matching both the alignment code
(`nearid_jax.align`) and MCC (`nearid_jax.metrics`) use: Hungarian on
-|corr|, signs of the matched correlations.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import validation

__all__ = [
    "linear_sum_assignment",
    "assignment_cost",
    "permutation_matrix",
    "match_signed_permutation",
    "signed_permutation_matrix",
    "SignedPermutation",
]


def _solve_wide(cost: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Shortest augmenting paths for an [n, m] cost with n <= m.

  Args:
    cost: [n, m] float array, n <= m, entries finite or +inf (no NaN, -inf).

  Returns:
    col4row: [n] int32, the column assigned to each row (-1 where the
      problem turned out infeasible).
    feasible: bool scalar.
  """
  n, m = cost.shape
  dtype = cost.dtype
  inf = jnp.array(jnp.inf, dtype)
  rows = jnp.arange(n)

  def augment_row(cur_row, state):
    u, v, col4row, row4col, feasible = state

    # Dijkstra over columns from `cur_row`, reduced costs cost - u - v >= 0.
    def search_cond(s):
      _, _, _, _, _, _, sink, ok = s
      return (sink < 0) & ok

    def search_body(s):
      i, min_val, spc, path, in_rows, in_cols, _, _ = s
      in_rows = in_rows.at[i].set(True)
      reduced = min_val + cost[i] - u[i] - v
      better = (~in_cols) & (reduced < spc)
      path = jnp.where(better, i, path)
      spc = jnp.where(better, reduced, spc)
      cand = jnp.where(in_cols, inf, spc)
      lowest = jnp.min(cand)
      is_low = (~in_cols) & (cand == lowest)
      # On ties prefer a free column: it ends the search (as SciPy does).
      free_low = is_low & (row4col < 0)
      j = jnp.where(jnp.any(free_low), jnp.argmax(free_low),
                    jnp.argmax(is_low)).astype(jnp.int32)
      ok = jnp.isfinite(lowest)
      in_cols = in_cols.at[j].set(in_cols[j] | ok)
      is_free = row4col[j] < 0
      sink = jnp.where(ok & is_free, j, -1).astype(jnp.int32)
      i = jnp.where(is_free, i, row4col[j]).astype(jnp.int32)
      return (i, lowest, spc, path, in_rows, in_cols, sink, ok)

    init = (cur_row.astype(jnp.int32), jnp.zeros((), dtype),
            jnp.full((m,), inf), jnp.full((m,), -1, jnp.int32),
            jnp.zeros((n,), bool), jnp.zeros((m,), bool),
            jnp.array(-1, jnp.int32), feasible)
    _, min_val, spc, path, in_rows, in_cols, sink, ok = jax.lax.while_loop(
        search_cond, search_body, init)

    # Dual update (only on success; a failed search leaves the state alone).
    du = jnp.where(in_rows & (rows != cur_row),
                   min_val - spc[jnp.clip(col4row, 0, m - 1)], 0)
    du = du.at[cur_row].add(min_val)
    dv = jnp.where(in_cols, min_val - spc, 0)
    u = jnp.where(ok, u + du, u)
    v = jnp.where(ok, v - dv, v)

    # Flip the alternating path from the sink back to `cur_row`.
    def flip_cond(s):
      return ~s[3]

    def flip_body(s):
      j, col4row, row4col, _ = s
      i = path[j]
      row4col = row4col.at[j].set(i)
      nxt = col4row[i]
      col4row = col4row.at[i].set(j)
      return (nxt, col4row, row4col, i == cur_row)

    _, new_c4r, new_r4c, _ = jax.lax.while_loop(
        flip_cond, flip_body, (jnp.maximum(sink, 0), col4row, row4col, ~ok))
    col4row = jnp.where(ok, new_c4r, col4row)
    row4col = jnp.where(ok, new_r4c, row4col)
    return u, v, col4row, row4col, ok

  state = (jnp.zeros((n,), dtype), jnp.zeros((m,), dtype),
           jnp.full((n,), -1, jnp.int32), jnp.full((m,), -1, jnp.int32),
           jnp.array(True))
  _, _, col4row, _, feasible = jax.lax.fori_loop(0, n, augment_row, state)
  col4row = jnp.where(feasible, col4row, -1)
  return col4row, feasible


def _solve(cost: jax.Array, maximize: bool) -> tuple[jax.Array, jax.Array]:
  """Traced solver: returns (row_ind, col_ind); col_ind is -1 if infeasible."""
  if not jnp.issubdtype(cost.dtype, jnp.floating):
    cost = cost.astype(jnp.result_type(float))
  if maximize:
    cost = -cost
  # -inf (or +inf when maximising) makes every assignment unbounded; NaN is
  # meaningless. Both are reported as infeasible rather than solved.
  bad = jnp.any(jnp.isnan(cost) | (cost == -jnp.inf))
  cost = jnp.where(bad, jnp.inf, cost)
  n, m = cost.shape
  if n <= m:
    col4row, _ = _solve_wide(cost)
    return jnp.arange(n, dtype=jnp.int32), col4row
  row4col, feasible = _solve_wide(cost.T)
  order = jnp.argsort(row4col)
  row_ind = jnp.where(feasible, row4col[order], jnp.arange(m, dtype=jnp.int32))
  col_ind = jnp.where(feasible, order.astype(jnp.int32), -1)
  return row_ind.astype(jnp.int32), col_ind


_solve_jit = jax.jit(_solve, static_argnames=("maximize",))


def linear_sum_assignment(cost, maximize: bool = False
                          ) -> tuple[jax.Array, jax.Array]:
  """Solves the linear sum assignment problem exactly (SciPy semantics).

  Finds the assignment of rows to distinct columns minimising (or, with
  `maximize=True`, maximising) the summed cost. For an [n, m] matrix, exactly
  min(n, m) pairs are returned, `row_ind` sorted ascending; for n <= m,
  `row_ind == arange(n)`. Entries may be +inf (forbidden pairs) as long as
  some assignment avoids them.

  Works under `jax.jit` and `jax.vmap`; a batch of cost matrices
  `costs: [B, n, m]` is solved with
  `jax.vmap(linear_sum_assignment)(costs)`, giving [B, min(n, m)] indices.
  The search loops then run until the slowest problem of the batch is done.

  Ties: any optimal assignment may be returned; it can differ from SciPy's
  while having the same (optimal) total cost.

  Args:
    cost: [n, m] float (or integer) array.
    maximize: maximise instead of minimise the total cost.

  Returns:
    row_ind: [min(n, m)] int32, sorted.
    col_ind: [min(n, m)] int32, the column matched to each `row_ind`. Under
      `jit`/`vmap` (where no error can be raised) an infeasible problem, or
      one holding NaN or -inf (+inf with `maximize`), gives `col_ind` of all
      -1.

  Raises:
    ValueError: (concrete input only) if `cost` is not 2-D, holds NaN or
      -inf (+inf with `maximize`), or no assignment with finite cost exists.

  Examples:
    >>> import jax.numpy as jnp
    >>> cost = jnp.array([[4., 1., 3.], [2., 0., 5.], [3., 2., 2.]])
    >>> row, col = linear_sum_assignment(cost)
    >>> col.tolist(), float(cost[row, col].sum())
    ([1, 0, 2], 5.0)
  """
  concrete = validation.is_concrete(cost)
  if not hasattr(cost, "dtype"):
    cost = np.asarray(cost)
  validation.check_ndim("cost", cost, (2,), "[n, m] (use jax.vmap for a "
                        "batch [B, n, m])")
  n, m = cost.shape
  if n == 0 or m == 0:
    empty = jnp.zeros((0,), jnp.int32)
    return empty, empty
  if concrete:
    a = np.asarray(cost)
    if np.issubdtype(a.dtype, np.floating):
      n_nan = int(np.isnan(a).sum())
      if n_nan:
        raise ValueError(
            f"cost contains {n_nan} NaN value(s) (first at index "
            f"{tuple(int(i) for i in np.argwhere(np.isnan(a))[0])}); an "
            "assignment cost must be a number or +inf (forbidden).")
      worst = np.inf if maximize else -np.inf
      if np.any(a == worst):
        raise ValueError(
            f"cost contains {'+' if maximize else '-'}inf, which makes the "
            f"{'maximum' if maximize else 'minimum'} unbounded; use "
            f"{'-' if maximize else '+'}inf to forbid a pair.")
  row_ind, col_ind = _solve_jit(jnp.asarray(cost), maximize)
  if concrete and bool(jnp.any(col_ind < 0)):
    raise ValueError(
        "cost matrix is infeasible: every complete assignment uses an "
        "infinite entry.")
  return row_ind, col_ind


def assignment_cost(cost, row_ind, col_ind) -> jax.Array:
  """Total cost sum_k cost[row_ind[k], col_ind[k]] (jittable, vmappable)."""
  cost = jnp.asarray(cost)
  return jnp.sum(cost[row_ind, col_ind])


def permutation_matrix(row_ind, col_ind, n: int, m: int,
                       dtype=jnp.float32) -> jax.Array:
  """The [n, m] 0/1 matrix P with P[row_ind[k], col_ind[k]] = 1.

  Negative indices (the infeasible marker) are dropped.

  Args:
    row_ind: [k] int array.
    col_ind: [k] int array.
    n: number of rows.
    m: number of columns.
    dtype: output dtype.

  Returns:
    [n, m] array.

  Examples:
    >>> permutation_matrix(jnp.array([0, 1]), jnp.array([1, 0]), 2, 2)
    Array([[0., 1.],
           [1., 0.]], dtype=float32)
  """
  row_ind = jnp.asarray(row_ind)
  col_ind = jnp.asarray(col_ind)
  valid = (row_ind >= 0) & (col_ind >= 0)
  out = jnp.zeros((n, m), dtype)
  return out.at[jnp.where(valid, row_ind, n), col_ind].set(
      jnp.ones_like(row_ind, dtype), mode="drop")


class SignedPermutation(NamedTuple):
  """A signed (partial) permutation matching rows to columns.

  Attributes:
    perm: [n] int32; perm[i] is the column matched to row i, or -1 when row i
      is unmatched (only when n > m).
    signs: [n] float; sign of the matched correlation (+1 for a zero
      correlation), 0 for unmatched rows.
    abs_corr: [n] float; |corr[i, perm[i]]|, 0 for unmatched rows.
  """
  perm: jax.Array
  signs: jax.Array
  abs_corr: jax.Array


def match_signed_permutation(corr) -> SignedPermutation:
  """Matches rows to columns of a correlation matrix up to sign.

  Solves the assignment on -|corr| (maximising the summed absolute matched
  correlation), then takes each sign from the matched correlation. With
  corr[i, j] = corr(a_i, b_j), a_i ~ signs[i] * b_{perm[i]} (up to scale and
  offset), i.e. `a ~ b @ signed_permutation_matrix(...).T`.

  Jittable and vmappable (no host checks are needed beyond the solver's).

  Args:
    corr: [n, m] float array of correlations (any real scores work; NaN is
      not allowed).

  Returns:
    SignedPermutation(perm [n], signs [n], abs_corr [n]).

  Examples:
    >>> corr = jnp.array([[0.1, -0.9], [0.8, 0.2]])
    >>> sp = match_signed_permutation(corr)
    >>> sp.perm.tolist(), sp.signs.tolist()
    ([1, 0], [-1.0, 1.0])
  """
  corr = jnp.asarray(corr)
  if not jnp.issubdtype(corr.dtype, jnp.floating):
    corr = corr.astype(jnp.result_type(float))
  n = corr.shape[0]
  row_ind, col_ind = linear_sum_assignment(-jnp.abs(corr))
  perm = jnp.full((n,), -1, jnp.int32).at[row_ind].set(col_ind)
  picked = corr[jnp.arange(n), jnp.clip(perm, 0, None)]
  has = perm >= 0
  signs = jnp.where(has, jnp.where(picked < 0, -1.0, 1.0), 0.0).astype(
      corr.dtype)
  abs_corr = jnp.where(has, jnp.abs(picked), 0.0).astype(corr.dtype)
  return SignedPermutation(perm, signs, abs_corr)


def signed_permutation_matrix(perm, signs, m: int) -> jax.Array:
  """The [n, m] matrix M with M[i, perm[i]] = signs[i] (rows with -1 empty).

  Args:
    perm: [n] int array from `match_signed_permutation`.
    signs: [n] float array.
    m: number of columns.

  Returns:
    [n, m] array with the dtype of `signs`.
  """
  perm = jnp.asarray(perm)
  signs = jnp.asarray(signs)
  n = perm.shape[0]
  out = jnp.zeros((n, m), signs.dtype)
  return out.at[jnp.arange(n), jnp.where(perm >= 0, perm, m)].set(
      signs, mode="drop")
