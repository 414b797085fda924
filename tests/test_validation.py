"""Tests for the shared input checks."""
import numpy as np
import pytest

from nearid_jax import validation


def test_check_finite_names_counts_runs_and_rows():
  x = np.zeros((3, 5, 2), np.float32)
  x[1, 2, 0] = np.nan
  x[2, 4, 1] = np.inf
  x[2, 0, 0] = np.nan
  with pytest.raises(ValueError) as e:
    validation.check_finite("zs", x, run_axis=0)
  msg = str(e.value)
  assert "2 NaN and 1 Inf" in msg and "run(s) [1, 2]" in msg
  with pytest.raises(ValueError, match=r"in 3 row\(s\) \[0, 2, 4\]"):
    validation.check_finite("zs", x, row_axis=1)


def test_check_finite_accepts_finite_and_ints():
  validation.check_finite("x", np.ones((4, 3)))
  validation.check_finite("x", np.ones((4, 3), np.int32))


def test_check_float_rejects_integer_dtype():
  with pytest.raises(TypeError, match="int32"):
    validation.check_float("x", np.ones(3, np.int32))
  validation.check_float("x", np.ones(3, np.float32))


def test_check_ndim():
  with pytest.raises(ValueError, match=r"2-D or 3-D.*\(4,\)"):
    validation.check_ndim("x", np.ones(4), (2, 3))


def test_check_float_works_on_tracers():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def f(x):
    validation.check_float("x", x)
    return x
  jax.jit(f)(jnp.ones(3))
  with pytest.raises(TypeError, match="int32"):
    jax.jit(f)(jnp.ones(3, jnp.int32))
