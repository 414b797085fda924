"""Sorts and ranks built on single int32 sorts, which XLA:CPU does fast.

XLA:CPU sorts one array of int32 with a plain comparison about 5x faster
than it sorts floats (a total-order comparator) or argsorts anything (it
sorts (key, index) pairs with a generated comparator): 0.23 ms against
1.1-1.5 ms for 10,000 values. The metrics sort a lot (the kNN MI, SAP's
1-D SVMs, ROC-AUC, Spearman ranks), so they go through these helpers:
floats become order-preserving int32 keys, a value's rank is found by
bisection in the sorted keys, and a permutation is one more int32 sort of
keys rank * n + index, which are distinct (for n <= 46,340; larger inputs
fall back to argsort). All functions are pure and jittable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_INT32_LIMIT = 2 ** 31


def sortable_int32(x: jax.Array) -> jax.Array:
  """Order-preserving int32 image of float32 (or int) values.

  -0.0 maps like 0.0; float x must not hold NaN.
  """
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.int32)
  x = jnp.where(x == 0, jnp.zeros_like(x), x).astype(jnp.float32)
  b = jax.lax.bitcast_convert_type(x, jnp.int32)
  return jnp.where(b < 0, b ^ jnp.int32(0x7FFFFFFF), b)


def rank_bounds(sorted_rows: jax.Array, row: jax.Array, q: jax.Array,
                upper: bool = True):
  """(#{< q}, #{<= q}) in sorted_rows[row] for every query, by bisection.

  Args:
    sorted_rows: [m, n] rows sorted ascending.
    row: [k] int row of each query.
    q: [k] query values.
    upper: also compute #{<= q} (else None is returned for it).
  """
  n = sorted_rows.shape[1]
  flat = sorted_rows.reshape(-1)
  base = row * n

  def bisect(lo, hi, strict):
    mid = (lo + hi) // 2
    v = flat[base + jnp.minimum(mid, n - 1)]
    below = (v < q) if strict else (v <= q)
    go = lo < hi
    return jnp.where(go & below, mid + 1, lo), jnp.where(go & ~below, mid, hi)

  def body(_, c):
    out = bisect(c[0], c[1], True)
    if upper:
      out += bisect(c[2], c[3], False)
    return out

  zero = jnp.zeros(q.shape, jnp.int32)
  full = jnp.full(q.shape, n, jnp.int32)
  init = (zero, full, zero, full) if upper else (zero, full)
  out = jax.lax.fori_loop(0, int(n).bit_length(), body, init)
  return out[0], (out[2] if upper else None)


def _dense_position(key: jax.Array) -> jax.Array:
  """Number of keys strictly below each key (ties share it)."""
  n = key.shape[0]
  lo, _ = rank_bounds(jnp.sort(key)[None], jnp.zeros((n,), jnp.int32), key,
                      upper=False)
  return lo


def _order_of_distinct(primary: jax.Array, secondary: jax.Array):
  """Permutation sorting by (primary, secondary), both ints in [0, n)."""
  n = primary.shape[0]
  key = jnp.sort(primary * n + secondary)
  return key - (key // n) * n


def stable_argsort(x: jax.Array) -> jax.Array:
  """jnp.argsort(x, stable=True) of [n] floats or ints, as int32."""
  n = x.shape[0]
  if n * n >= _INT32_LIMIT:
    return jnp.argsort(x, stable=True).astype(jnp.int32)
  return _order_of_distinct(_dense_position(sortable_int32(x)),
                            jnp.arange(n, dtype=jnp.int32))


def lexsort2(secondary: jax.Array, primary: jax.Array) -> jax.Array:
  """jnp.lexsort((secondary, primary)) of [n] arrays, as int32."""
  n = primary.shape[0]
  if n * n >= _INT32_LIMIT:
    return jnp.lexsort((secondary, primary)).astype(jnp.int32)
  by_secondary = stable_argsort(secondary)
  rank = jnp.zeros((n,), jnp.int32).at[by_secondary].set(
      jnp.arange(n, dtype=jnp.int32))
  # Rows ordered by (primary, rank in the secondary order): the keys'
  # low part is that rank, mapped back to rows through by_secondary.
  return by_secondary[_order_of_distinct(
      _dense_position(sortable_int32(primary)), rank)]


def class_major_order(labels: jax.Array, num_classes: int):
  """Stable class-major permutation of rows, and the class of each slot.

  Args:
    labels: [n] int classes in 0..num_classes-1.
    num_classes: static number of class slots.

  Returns:
    (perm, cls): perm[j] is the row at class-major position j (rows of
    class 0 first, in row order), cls[j] its class; both [n] int32.
  """
  n = labels.shape[0]
  if num_classes * n >= _INT32_LIMIT:
    perm = jnp.argsort(labels, stable=True).astype(jnp.int32)
    return perm, labels[perm].astype(jnp.int32)
  key = jnp.sort(labels.astype(jnp.int32) * n +
                 jnp.arange(n, dtype=jnp.int32))
  cls = key // n
  return key - cls * n, cls
