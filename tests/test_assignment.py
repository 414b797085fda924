"""Tests for the JAX linear sum assignment solver against SciPy."""
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from nearid_jax import assignment

SHAPES = [(6, 6), (9, 9), (5, 9), (9, 5), (1, 4), (4, 1)]
_batched = jax.jit(jax.vmap(assignment.linear_sum_assignment))


def _cost_of(cost, rows, cols):
  return np.asarray(cost, np.float64)[np.asarray(rows), np.asarray(cols)].sum()


def _check_valid(cost, rows, cols):
  n, m = cost.shape
  rows, cols = np.asarray(rows), np.asarray(cols)
  assert rows.shape == cols.shape == (min(n, m),)
  assert np.all(np.diff(rows) > 0), "row_ind must be sorted and distinct"
  assert len(np.unique(cols)) == len(cols), "columns must be distinct"
  assert rows.min() >= 0 and cols.min() >= 0
  assert rows.max() < n and cols.max() < m


def _random_costs(rng, kind, shape):
  if kind == "uniform":
    return rng.random(shape).astype(np.float32)
  if kind == "int_ties":
    return rng.integers(0, 3, shape).astype(np.float32)
  if kind == "all_equal":
    return np.full(shape, 2.5, np.float32)
  if kind == "big_range":
    return (rng.standard_normal(shape) * 1e3).astype(np.float32)
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["uniform", "int_ties", "all_equal",
                                  "big_range"])
@pytest.mark.parametrize("maximize", [False, True])
def test_optimum_matches_scipy(kind, maximize):
  rng = np.random.default_rng(0)
  for shape in SHAPES:
    for _ in range(4):
      cost = _random_costs(rng, kind, shape)
      rows, cols = assignment.linear_sum_assignment(cost, maximize=maximize)
      _check_valid(cost, rows, cols)
      r_ref, c_ref = optimize.linear_sum_assignment(
          cost.astype(np.float64), maximize=maximize)
      got, want = _cost_of(cost, rows, cols), _cost_of(cost, r_ref, c_ref)
      if kind in ("int_ties", "all_equal"):
        assert got == want  # integer sums are exact in float32
      else:
        # Float32 reduced costs: the optimum is the same assignment unless two
        # assignments are within float32 rounding of each other.
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), (shape, got,
                                                                want)


def test_forbidden_entries_match_scipy():
  rng = np.random.default_rng(1)
  for shape in [(6, 6), (5, 9), (9, 5)]:
    for _ in range(5):
      cost = rng.random(shape).astype(np.float32)
      # Forbid a third of the pairs but keep a feasible diagonal.
      forbid = rng.random(shape) < 0.33
      k = min(shape)
      forbid[np.arange(k), np.arange(k)] = False
      cost[forbid] = np.inf
      rows, cols = assignment.linear_sum_assignment(cost)
      _check_valid(cost, rows, cols)
      r_ref, c_ref = optimize.linear_sum_assignment(cost)
      got, want = _cost_of(cost, rows, cols), _cost_of(cost, r_ref, c_ref)
      assert np.isfinite(got) and abs(got - want) <= 1e-5


def test_vmap_equals_one_by_one_and_jit_flags_infeasible():
  rng = np.random.default_rng(2)
  for shape in [(7, 7), (5, 8), (8, 5)]:
    costs = rng.random((6,) + shape).astype(np.float32)
    costs[1] = rng.integers(0, 2, shape)  # heavily tied member of the batch
    rows_b, cols_b = _batched(costs)
    for b in range(len(costs)):
      rows, cols = assignment.linear_sum_assignment(costs[b])
      np.testing.assert_array_equal(rows_b[b], rows)
      np.testing.assert_array_equal(cols_b[b], cols)
  # Under jit/vmap an infeasible or NaN member is flagged, the others solved.
  costs = rng.random((3, 4, 4)).astype(np.float32)
  costs[1, :, 1:] = np.inf  # four rows, one usable column: infeasible
  costs[2, 2, 3] = np.nan
  _, cols_b = _batched(costs)
  assert np.all(np.asarray(cols_b[1]) == -1)
  assert np.all(np.asarray(cols_b[2]) == -1)
  _, c_ref = optimize.linear_sum_assignment(costs[0])
  assert _cost_of(costs[0], np.arange(4), cols_b[0]) == pytest.approx(
      _cost_of(costs[0], np.arange(4), c_ref), abs=1e-5)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="NaN"):
    assignment.linear_sum_assignment(np.array([[1.0, np.nan], [0.0, 1.0]]))
  with pytest.raises(ValueError, match="-inf"):
    assignment.linear_sum_assignment(np.array([[1.0, -np.inf], [0.0, 1.0]]))
  with pytest.raises(ValueError, match=r"\+inf"):
    assignment.linear_sum_assignment(np.array([[1.0, np.inf], [0.0, 1.0]]),
                                     maximize=True)
  with pytest.raises(ValueError, match="infeasible"):
    assignment.linear_sum_assignment(
        np.array([[1.0, np.inf], [2.0, np.inf]], np.float32))
  with pytest.raises(ValueError, match="2-D"):
    assignment.linear_sum_assignment(np.ones((2, 3, 3)))
  rows, cols = assignment.linear_sum_assignment(np.zeros((0, 3)))
  assert rows.shape == cols.shape == (0,)


def test_integer_input():
  cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
  rows, cols = assignment.linear_sum_assignment(cost)
  assert _cost_of(cost, rows, cols) == 5


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_relabelling_rows_and_columns_keeps_optimum(seed):
  rng = np.random.default_rng(seed)
  cost = rng.integers(0, 10, (6, 8)).astype(np.float32)
  pr, pc = rng.permutation(6), rng.permutation(8)
  r1, c1 = assignment.linear_sum_assignment(cost)
  r2, c2 = assignment.linear_sum_assignment(cost[pr][:, pc])
  assert _cost_of(cost, r1, c1) == _cost_of(cost[pr][:, pc], r2, c2)
  _, c_ref = optimize.linear_sum_assignment(cost)
  assert _cost_of(cost, r1, c1) == _cost_of(cost, np.arange(6), c_ref)


def test_match_signed_permutation_recovers_known_map():
  rng = np.random.default_rng(3)
  d, n = 7, 2000
  a = rng.standard_normal((n, d))
  perm = rng.permutation(d)
  signs = rng.choice([-1.0, 1.0], d)
  b = np.empty_like(a)
  b[:, perm] = a * signs  # a_i = signs[i] * b_{perm[i]}
  b += 0.1 * rng.standard_normal((n, d))
  corr = np.corrcoef(a.T, b.T)[:d, d:].astype(np.float32)
  sp = jax.jit(assignment.match_signed_permutation)(corr)
  np.testing.assert_array_equal(sp.perm, perm)
  np.testing.assert_array_equal(sp.signs, signs)
  assert np.all(np.asarray(sp.abs_corr) > 0.9)
  m = assignment.signed_permutation_matrix(sp.perm, sp.signs, d)
  np.testing.assert_allclose(b @ np.asarray(m).T, a, atol=0.6)
  # Rectangular: 3 rows, 2 columns -> one unmatched row, the weakest one.
  corr = jnp.array([[0.1, -0.9], [0.8, 0.2], [0.3, 0.3]])
  sp = assignment.match_signed_permutation(corr)
  assert sp.perm.tolist() == [1, 0, -1]
  assert sp.signs.tolist() == [-1.0, 1.0, 0.0]


def test_permutation_matrix():
  p = assignment.permutation_matrix(jnp.array([0, 2]), jnp.array([1, 0]), 3,
                                    2)
  np.testing.assert_array_equal(p, [[0, 1], [0, 0], [1, 0]])
  cost = np.arange(6.0).reshape(3, 2)
  assert float(assignment.assignment_cost(cost, jnp.array([0, 2]),
                                          jnp.array([1, 0]))) == 5.0
