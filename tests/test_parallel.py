"""Tests of nearid_jax.parallel: spreading runs and rows over 8 CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nearid_jax import ica
from nearid_jax import parallel


@pytest.mark.parametrize("runs", [1, 3, 8, 12])
def test_map_runs_equals_a_python_loop(runs):
  x = jax.random.normal(jax.random.key(0), (runs, 50, 4))
  shared = jnp.arange(4.0)

  def fn(xr, s):
    return {"a": xr @ s, "b": jnp.linalg.norm(xr, axis=0)}
  out = jax.jit(lambda x, s: parallel.map_runs(fn, x, s, in_axes=(0, None)))(
      x, shared)
  for r in range(runs):
    ref = fn(x[r], shared)
    np.testing.assert_allclose(out["a"][r], ref["a"], rtol=1e-6)
    np.testing.assert_allclose(out["b"][r], ref["b"], rtol=1e-6)


def test_map_runs_rejects_bad_in_axes():
  with pytest.raises(ValueError, match="in_axes"):
    parallel.map_runs(lambda a: a, jnp.ones((2, 3)), in_axes=(1,))
  with pytest.raises(ValueError, match="run axis"):
    parallel.map_runs(lambda a: a, jnp.ones((2, 3)), in_axes=None)


@pytest.mark.parametrize("n,shards", [(1003, 8), (64, 8), (40, 3), (17, 1)])
def test_rows_sum_apply_blocks_equal_whole_array(n, shards):
  x = jax.random.normal(jax.random.key(1), (n, 5))
  w = jax.random.normal(jax.random.key(2), (5, 5))

  @jax.jit
  def f(x, w):
    rows = parallel.Rows(x, shards, chunk=16)
    # w is closed over, as the ICA solver's loop carry is.
    s = rows.sum(lambda xc: (jnp.sum(xc @ w, 0), jnp.sum(xc * xc)))
    mapped = rows.apply(lambda xc: jnp.tanh(xc @ w))
    r = rows.blocks(lambda xl: jnp.linalg.qr(xl, mode="r"))
    if shards > 1:
      r = jnp.linalg.qr(jnp.concatenate([r, rows.tail]), mode="r")
    return s, mapped.concat(), mapped.n, r
  (s1, s2), m, m_n, r = f(x, w)
  xn, wn = np.asarray(x, np.float64), np.asarray(w, np.float64)
  np.testing.assert_allclose(s1, np.sum(xn @ wn, 0), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(s2, np.sum(xn ** 2), rtol=1e-5)
  np.testing.assert_allclose(m, np.tanh(xn @ wn), rtol=1e-5, atol=1e-6)
  assert m_n == n
  # Tall-skinny QR: same R factor up to row signs, so R^T R = X^T X.
  np.testing.assert_allclose(np.asarray(r).T @ np.asarray(r), xn.T @ xn,
                             rtol=1e-4, atol=1e-3)


def test_single_threaded_blas_limits_and_restores():
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]
  with parallel.single_threaded_blas():
    inside = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
              if lib["user_api"] == "blas"]
  after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
           if lib["user_api"] == "blas"]
  assert inside and all(t == 1 for t in inside)
  assert after == before


def test_row_shards():
  assert parallel.row_shards(100) == 1
  assert parallel.row_shards(4096 * 3) == 3
  assert parallel.row_shards(10 ** 7) == jax.local_device_count()
