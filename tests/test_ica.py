"""Tests for nearid_jax.ica (FastICA), against scikit-learn and closed forms."""
import warnings

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import FastICA

from nearid_jax import ica
from nearid_jax import parallel

_SETTINGS = dict(max_examples=8, deadline=None, derandomize=True,
                 suppress_health_check=list(hypothesis.HealthCheck))


def _sources(rng, n, d, kind):
  """[n, d] independent unit-variance sources of a given kind."""
  if kind == "laplace":
    s = rng.laplace(size=(n, d)) / np.sqrt(2)
  elif kind == "uniform":
    s = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(n, d))
  elif kind == "mixed":  # sub- and super-Gaussian
    s = np.c_[rng.laplace(size=(n, d - d // 2)) / np.sqrt(2),
              rng.uniform(-np.sqrt(3), np.sqrt(3), size=(n, d // 2))]
  elif kind == "skewed":  # clearly skewed, so the sign convention is robust
    s = np.c_[rng.exponential(size=(n, d - d // 2)) - 1,
              (rng.chisquare(3, size=(n, d // 2)) - 3) / np.sqrt(6)]
  return s


def _mixing(rng, d, cond):
  """[d, d] random mixing with condition number `cond` (None: Gaussian)."""
  if cond is None:
    return rng.normal(size=(d, d))
  u, _ = np.linalg.qr(rng.normal(size=(d, d)))
  v, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return u @ np.diag(np.logspace(0, -np.log10(cond), d)) @ v.T


def _amari(w, a):
  return float(ica.amari_distance(jnp.asarray(w, jnp.float64
                                              if w.dtype == np.float64
                                              else jnp.float32),
                                  jnp.asarray(a, jnp.float32)))


def _match(s_ref, s):
  """Column permutation of s matching s_ref, and the matched correlations."""
  k = s_ref.shape[1]
  c = np.corrcoef(s_ref.T, s.T)[:k, k:]
  perm = np.argmax(np.abs(c), axis=1)
  return perm, c[np.arange(k), perm]


@pytest.fixture(scope="module")
def small():
  """n=2000, d=4 skewed sources through a random mixing, float32."""
  rng = np.random.default_rng(0)
  s = _sources(rng, 2000, 4, "skewed")
  a = _mixing(rng, 4, 10.0)
  return (s @ a.T).astype(np.float32), a


# ---------------------------------------------------------------------------
# Agreement with scikit-learn given the same w_init and whitening.


def _sk_fit(x, w0, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return FastICA(whiten="unit-variance", w_init=w0, **kw).fit(x)


def _assert_agrees(res, sk, rtol):
  u, v = np.asarray(res.unmixing), sk.components_
  sign = np.sign(np.sum(u * v, axis=1))[:, None]  # we fix signs, sklearn not
  np.testing.assert_array_less(np.abs(u - sign * v).max() / np.abs(v).max(),
                               rtol)
  m = np.asarray(res.mixing)
  np.testing.assert_array_less(
      np.abs(m - sign.T * sk.mixing_).max() / np.abs(sk.mixing_).max(), rtol)
  np.testing.assert_allclose(np.asarray(res.mean), sk.mean_, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
def test_matches_sklearn_same_init(small, algorithm, fun):
  x, _ = small
  w0 = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
  kw = dict(algorithm=algorithm, fun=fun, tol=1e-5, max_iter=400)
  sk = _sk_fit(x, w0, whiten_solver="eigh", **kw)
  res = ica.fastica(x, jax.random.key(0), w_init=w0, whiten_solver="eigh",
                    **kw)
  assert bool(res.converged) and sk.n_iter_ < 400
  assert abs(int(res.n_iter) - sk.n_iter_) <= 2
  _assert_agrees(res, sk, 1e-3)


def test_matches_sklearn_svd_alpha_and_callable(small):
  x, _ = small
  w0 = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
  sk = _sk_fit(x, w0, whiten_solver="svd", fun_args={"alpha": 1.5}, tol=1e-6)
  res = ica.fastica(x, jax.random.key(0), w_init=w0, whiten_solver="svd",
                    fun_alpha=1.5, tol=1e-6)
  _assert_agrees(res, sk, 1e-3)

  def g_np(y):  # scikit-learn's calling convention: y [m, n]
    t = np.tanh(y)
    return t, (1 - t ** 2).mean(axis=-1)

  def g_jnp(y):
    t = jnp.tanh(y)
    return t, (1 - t ** 2).mean(axis=-1)

  sk = _sk_fit(x, w0, whiten_solver="eigh", fun=g_np, tol=1e-6)
  res = ica.fastica(x, jax.random.key(0), w_init=w0, fun=g_jnp, tol=1e-6)
  _assert_agrees(res, sk, 1e-3)


def test_float64_matches_sklearn_tightly(small):
  x, _ = small
  w0 = np.random.default_rng(3).normal(size=(4, 4))
  with jax.enable_x64(True):
    res = ica.fastica(x.astype(np.float64), jax.random.key(0), w_init=w0,
                      tol=1e-10, max_iter=500)
    assert res.unmixing.dtype == jnp.float64 and bool(res.converged)
    sk = _sk_fit(x.astype(np.float64), w0, whiten_solver="eigh", tol=1e-10,
                 max_iter=500)
    _assert_agrees(res, sk, 1e-8)


# ---------------------------------------------------------------------------
# Recovery of known sources.


@pytest.mark.parametrize("kind,cond,d", [
    ("laplace", None, 2), ("uniform", 100.0, 8), ("mixed", 100.0, 16),
    ("mixed", None, 64)])
def test_recovers_sources(kind, cond, d):
  rng = np.random.default_rng(d)
  n = 20000
  a = _mixing(rng, d, cond)
  x = (_sources(rng, n, d, kind) @ a.T).astype(np.float32)
  w0 = rng.normal(size=(d, d)).astype(np.float32)
  res = ica.fastica(x, jax.random.key(0), w_init=w0)
  ours = _amari(np.asarray(res.unmixing), a)
  sk = _sk_fit(x, w0, whiten_solver="eigh", max_iter=200)
  theirs = _amari(sk.components_.astype(np.float32), a)
  assert bool(res.converged)
  assert ours <= 0.02, (ours, theirs)
  assert ours <= theirs + 0.005, (ours, theirs)


def test_amari_distance_closed_forms():
  p = np.array([[0, 2.0, 0], [0, 0, -1], [3, 0, 0]])
  assert float(ica.amari_distance(jnp.asarray(p), jnp.eye(3))) == 0.0
  # One off-diagonal 1 in a 2x2: rows (1/1 - 1) + (1 - 1)... = 1, cols 1.
  q = jnp.array([[1.0, 1.0], [0.0, 1.0]])
  assert float(ica.amari_distance(q, jnp.eye(2))) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Output conventions.


def test_transform_inverse_and_conventions(small):
  x, _ = small
  res = ica.fastica(x, jax.random.key(0))
  s = np.asarray(res.sources)
  np.testing.assert_allclose(s.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(s.std(0), 1, atol=1e-4)
  # Sign convention: every component's skewness is positive.
  assert np.all(np.mean(s ** 3, axis=0) > 0)
  np.testing.assert_allclose(np.asarray(ica.transform(res, x)), s, atol=1e-4)
  np.testing.assert_allclose(np.asarray(ica.inverse_transform(res, s)), x,
                             rtol=1e-4, atol=1e-4 * np.abs(x).max())
  np.testing.assert_allclose(np.asarray(res.mixing),
                             np.linalg.pinv(np.asarray(res.unmixing)),
                             rtol=1e-3, atol=1e-4)
  assert bool(res.valid) and int(res.rank) == 4


def test_chunked_moments_match_single_chunk(small):
  x, _ = small
  a = ica.fastica(x, jax.random.key(3), chunk_size=300)  # 6 chunks + 200 rows
  b = ica.fastica(x, jax.random.key(3))  # one chunk (program shared)
  np.testing.assert_allclose(np.asarray(a.unmixing), np.asarray(b.unmixing),
                             rtol=1e-4, atol=1e-5)
  assert int(a.n_iter) == int(b.n_iter)


def test_n_components_reduces_and_restarts_keep_best(small):
  x, _ = small
  key = jax.random.key(7)
  res = ica.fastica(x, key, n_components=3, n_restarts=3)
  assert res.sources.shape == (2000, 3) and res.unmixing.shape == (3, 4)
  assert res.mixing.shape == (4, 3)
  inits = np.asarray(jax.random.normal(key, (3, 3, 3)))
  singles = [ica.fastica(x, key, n_components=3, w_init=w) for w in inits]
  objs = [float(r.objective) for r in singles]
  assert float(res.objective) == pytest.approx(max(objs), rel=1e-4)
  best = singles[int(np.argmax(objs))]
  np.testing.assert_allclose(np.asarray(res.unmixing),
                             np.asarray(best.unmixing), atol=1e-4)


# ---------------------------------------------------------------------------
# Properties.


@hypothesis.settings(**_SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**31 - 1),
                  kind=st.sampled_from(["permute", "rescale", "linear"]))
def test_sources_invariant_to_linear_maps_of_x(small, seed, kind):
  x, _ = small
  rng = np.random.default_rng(seed)
  d = x.shape[1]
  if kind == "permute":
    m = np.eye(d)[rng.permutation(d)]
  elif kind == "rescale":
    m = np.diag(rng.uniform(0.1, 10, d) * rng.choice([-1, 1], d))
  else:
    m = _mixing(rng, d, 20.0)
  ref = ica.fastica(x, jax.random.key(0))
  res = ica.fastica((x @ m.T).astype(np.float32), jax.random.key(seed % 97))
  perm, corr = _match(np.asarray(ref.sources), np.asarray(res.sources))
  assert sorted(perm) == list(range(d))
  # Same sources up to a permutation, signs included (sign convention).
  np.testing.assert_array_less(1 - 1e-3, corr)


def test_vmapped_batch_equals_runs_one_by_one(small):
  x, _ = small
  rng = np.random.default_rng(5)
  xs = np.stack([x, x @ _mixing(rng, 4, 5.0).T.astype(np.float32),
                 x[::-1].copy()])
  keys = jax.random.split(jax.random.key(11), 3)
  batch = ica.fastica(xs, keys)
  assert batch.sources.shape == (3, 2000, 4) and batch.n_iter.shape == (3,)
  via_vmap = jax.vmap(lambda a, k: ica.fastica(a, k))(xs, keys)
  for r in range(3):
    one = ica.fastica(xs[r], keys[r])
    assert int(one.n_iter) == int(batch.n_iter[r])
    for field in ("sources", "unmixing", "mixing"):
      np.testing.assert_allclose(np.asarray(getattr(batch, field)[r]),
                                 np.asarray(getattr(one, field)),
                                 rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(via_vmap.unmixing),
                             np.asarray(batch.unmixing), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(via_vmap.n_iter),
                                np.asarray(batch.n_iter))
  # A single key is split into one key per run.
  split = ica.fastica(xs, jax.random.key(11))
  np.testing.assert_array_equal(np.asarray(split.unmixing),
                                np.asarray(batch.unmixing))


def test_jit_vmap_takes_the_batched_path(small):
  # jax.jit(jax.vmap(fastica)) routes to the batched implementation (runs
  # mapped one at a time on CPU, each stopping when it converges) instead
  # of a batched while loop that runs every lane until the slowest is done:
  # same numbers as the batched call, and each run's own iteration count.
  x, _ = small
  gauss = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
  xs = jnp.asarray(np.stack([x, gauss, x[::-1].copy(), gauss[::-1].copy()]))
  keys = jax.random.split(jax.random.key(2), 4)
  fit = lambda a, k: ica.fastica(a, k, max_iter=15)  # noqa: E731
  with pytest.warns(ica.ConvergenceWarning):
    batch = ica.fastica(xs, keys, max_iter=15)
  via_vmap = jax.jit(jax.vmap(fit))(xs, keys)
  np.testing.assert_array_equal(np.asarray(via_vmap.n_iter),
                                np.asarray(batch.n_iter))
  np.testing.assert_array_equal(np.asarray(via_vmap.converged),
                                [True, False, True, False])
  # Runs 1 and 3 (Gaussian) stop unconverged after 15 chaotic iterations:
  # with 4 runs padded to 8 devices inside this program (the batched call
  # pads on the host) float32 summation order differs by ~1e-7, which those
  # iterations amplify (measured up to 1.7 in `unmixing`; 0 without
  # padding). The converged runs agree.
  for field in ("unmixing", "sources", "delta"):
    np.testing.assert_allclose(np.asarray(getattr(via_vmap, field))[::2],
                               np.asarray(getattr(batch, field))[::2],
                               rtol=1e-4, atol=1e-5, err_msg=field)
  # The program maps the runs (a scan over runs spread over the devices)
  # rather than batching the solver's loop.
  jaxpr = str(jax.make_jaxpr(jax.vmap(fit))(xs, keys))
  assert "shard_map" in jaxpr and "scan" in jaxpr
  # Batched keys with an unbatched x take the same path.
  same_x = jax.vmap(lambda k: ica.fastica(x, k))(keys[:2])
  alone = ica.fastica(x, keys[1])
  np.testing.assert_allclose(np.asarray(same_x.unmixing[1]),
                             np.asarray(alone.unmixing), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm,solver", [("parallel", "eigh"),
                                              ("deflation", "svd")])
def test_rows_split_over_devices_equal_one_device(small, algorithm, solver):
  # A single run's rows go to all 8 test devices once each device gets
  # Policy.min_shard_rows rows; the sums then add per-device partial sums.
  x, _ = small
  x = x[:1001]  # 8 blocks of 125 rows and a tail of 1
  kw = dict(algorithm=algorithm, whiten_solver=solver, chunk_size=64)
  one = ica.fastica(x, jax.random.key(3), **kw)
  with parallel.using(min_shard_rows=100, min_shard_rows_per_dim=1):
    split = ica.fastica(x, jax.random.key(3), **kw)
  assert split.sources.shape == one.sources.shape
  assert int(split.n_iter) == int(one.n_iter)
  for f in ("unmixing", "mixing", "sources", "mean"):
    np.testing.assert_allclose(np.asarray(getattr(split, f)),
                               np.asarray(getattr(one, f)),
                               rtol=2e-3, atol=2e-4, err_msg=f)


def test_warm_start_reaches_the_full_data_fixed_point():
  # n = 30,000 rows: "auto" warms up on every 2nd row. The answer must be
  # the full data's fixed point (scikit-learn's, from the same start), not
  # the subsample's: an explicit coarse stride lands on the same point.
  rng = np.random.default_rng(5)
  a = _mixing(rng, 4, 10.0)
  x = (_sources(rng, 30_000, 4, "mixed") @ a.T).astype(np.float32)
  w0 = rng.normal(size=(4, 4)).astype(np.float32)
  assert ica._warm_stride("auto", 30_000, 4, "parallel") == 2
  kw = dict(w_init=w0, tol=1e-6, max_iter=400)
  cold = ica.fastica(x, jax.random.key(0), warm_start=None, **kw)
  sk = _sk_fit(x, w0, whiten_solver="eigh", algorithm="parallel",
               fun="logcosh", tol=1e-6, max_iter=400)
  for ws in ("auto", 16):
    warm = ica.fastica(x, jax.random.key(0), warm_start=ws, **kw)
    assert bool(warm.converged)
    # Far closer to the cold fit than the subsample's own fixed point is.
    sub = ica.fastica(x[::16], jax.random.key(0), warm_start=None, **kw)
    between = _amari(np.asarray(warm.unmixing), np.linalg.pinv(
        np.asarray(cold.unmixing)))
    sub_gap = _amari(np.asarray(sub.unmixing), np.linalg.pinv(
        np.asarray(cold.unmixing)))
    to_sk = _amari(np.asarray(warm.unmixing), np.linalg.pinv(sk.components_))
    # (float32 against scikit-learn's float64 whitening: ~1e-4 either way.)
    assert between < 1e-4 and to_sk < 1e-3 < sub_gap, (
        ws, between, to_sk, sub_gap)
  # Deflation and small n run scikit-learn's schedule.
  assert ica._warm_stride("auto", 30_000, 4, "deflation") == 1
  assert ica._warm_stride("auto", 20_000, 4, "parallel") == 1


@pytest.mark.parametrize("stride", [2, 6])
def test_warm_start_on_rows_split_over_devices(small, stride):
  # Each device strides its own rows, so the subsample differs from the
  # one-device one; both end at the full data's fixed point. At stride 6
  # (84 rows per device, 83 per component) the subsample stage wanders and
  # is cut at _WARM_MAX_ITER; the full data then converge.
  x, _ = small
  kw = dict(warm_start=stride, chunk_size=64, tol=1e-6)
  cold = ica.fastica(x, jax.random.key(3), warm_start=None, tol=1e-6)
  with parallel.using(min_shard_rows=100, min_shard_rows_per_dim=1):
    split = ica.fastica(x, jax.random.key(3), **kw)
  one = ica.fastica(x, jax.random.key(3), **kw)
  for res in (split, one):
    assert bool(res.converged)
    assert int(res.n_iter) <= ica._WARM_MAX_ITER + int(cold.n_iter) + 5
    assert _amari(np.asarray(res.unmixing),
                  np.linalg.pinv(np.asarray(cold.unmixing))) < 1e-4


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_global_scale_of_x_does_not_matter(small, scale):
  # x^2 overflows float32 at 1e20 and underflows at 1e-30 ("numerical rank
  # 0 ... pass n_components=0" before): x is fitted times a power of two.
  x, _ = small
  base = ica.fastica(x, jax.random.key(2))
  s = np.float32(scale)
  for xs in (x * s, jnp.asarray(x * s)):
    res = ica.fastica(xs, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(res.sources),
                               np.asarray(base.sources), atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.unmixing) * scale,
                               np.asarray(base.unmixing), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(res.mixing) / scale,
                               np.asarray(base.mixing), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(res.mean) / scale,
                               np.asarray(base.mean), rtol=1e-5, atol=1e-6)


def test_same_key_gives_identical_results(small):
  x, _ = small
  a = ica.fastica(x, jax.random.key(4), algorithm="deflation")
  b = ica.fastica(x, jax.random.key(4), algorithm="deflation")
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


# ---------------------------------------------------------------------------
# Non-convergence and bad input.


@pytest.mark.parametrize("policy", [{}, {"devices": 1, "runs_per_group": 0}])
def test_non_convergence_reported_per_run(small, policy):
  # The default spreads runs over devices and maps them one at a time on
  # CPU; devices=1, runs_per_group=0 is one vmapped program.
  x, _ = small
  gauss = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
  xs = np.stack([x, gauss])
  with (pytest.warns(ica.ConvergenceWarning, match=r"run\(s\) \[1\] of 2"),
        parallel.using(**policy)):
    res = ica.fastica(xs, jax.random.key(0), max_iter=15)
  np.testing.assert_array_equal(np.asarray(res.converged), [True, False])
  assert int(res.n_iter[1]) == 15 and float(res.delta[1]) >= 1e-4
  # A converged run stops changing: same answer as fitted alone.
  alone = ica.fastica(x, jax.random.split(jax.random.key(0), 2)[0],
                      max_iter=15)
  assert int(res.n_iter[0]) == int(alone.n_iter) < 15
  np.testing.assert_allclose(np.asarray(res.unmixing[0]),
                             np.asarray(alone.unmixing), atol=1e-4)


def test_nan_and_inf_named_with_run(small):
  x, _ = small
  xs = np.stack([x, x, x])
  xs[2, 5, 1] = np.nan
  xs[2, 7, 0] = np.inf
  with pytest.raises(ValueError, match=r"1 NaN and 1 Inf.*run\(s\) \[2\]"):
    ica.fastica(xs, jax.random.key(0))
  with pytest.raises(ValueError, match=r"1 NaN and 1 Inf"):
    ica.fastica(xs[2], jax.random.key(0))


def test_bad_shapes_dtypes_and_options(small):
  x, _ = small
  key = jax.random.key(0)
  with pytest.raises(TypeError, match="int32"):
    ica.fastica(x.astype(np.int32), key)
  with pytest.raises(ValueError, match="n=3 rows but d=4"):
    ica.fastica(x[:3], key)
  with pytest.raises(ValueError, match="2-D or 3-D"):
    ica.fastica(x[0], key)
  with pytest.raises(ValueError, match="w_init must have shape"):
    ica.fastica(x, key, w_init=np.eye(3))
  with pytest.raises(ValueError, match="algorithm"):
    ica.fastica(x, key, algorithm="symmetric")
  with pytest.raises(ValueError, match="fun_alpha"):
    ica.fastica(x, key, fun_alpha=3.0)
  with pytest.raises(ValueError, match="n_components"):
    ica.fastica(x, key, n_components=5)
  with pytest.raises(ValueError, match="n_restarts=1"):
    ica.fastica(x, key, w_init=np.eye(4), n_restarts=2)
  for bad in (0, True, "on", 2.0):
    with pytest.raises(ValueError, match="warm_start must be"):
      ica.fastica(x, key, warm_start=bad)
  with pytest.raises(ValueError, match="warm_start=500 leaves 4 of n=2000"):
    ica.fastica(x, key, warm_start=500)


def test_constant_and_dependent_columns(small):
  x, _ = small
  key = jax.random.key(0)
  const = x.copy()
  const[:, 2] = 3.0
  with pytest.raises(ValueError, match=r"zero-variance.*\[2\].*rank 3 of 4"
                                       r".*n_components=3"):
    ica.fastica(const, key)
  dep = x.copy()
  dep[:, 3] = dep[:, 0] - 2 * dep[:, 1]
  with pytest.raises(ValueError, match=r"rank-deficient.*rank 3 of 4.*"
                                       r"n_components=3"):
    ica.fastica(dep, key)
  with pytest.raises(ValueError, match="in run 1"):
    ica.fastica(np.stack([x, dep]), key)
  with pytest.warns(UserWarning, match="reducing to the numerical rank k=3"):
    res = ica.fastica(dep, key, n_components="auto")
  assert res.sources.shape == (2000, 3) and bool(res.converged)
  # Asking for no more components than the rank is fine.
  assert ica.fastica(dep, key, n_components=3).sources.shape == (2000, 3)


def test_invalid_runs_flagged_under_jit(small):
  x, _ = small
  dep = x.copy()
  dep[:, 3] = dep[:, 0] - 2 * dep[:, 1]
  nan = x.copy()
  nan[10, 0] = np.nan
  fit = jax.jit(lambda a, k: ica.fastica(a, k))
  keys = jax.random.split(jax.random.key(0), 3)
  res = fit(jnp.asarray(np.stack([x, dep, nan])), keys)
  np.testing.assert_array_equal(np.asarray(res.valid), [True, False, False])
  np.testing.assert_array_equal(np.asarray(res.converged),
                                [True, False, False])
  assert int(res.rank[1]) == 3
  assert np.isnan(np.asarray(res.sources[1:])).all()
  assert np.isnan(np.asarray(res.unmixing[1:])).all()
  assert np.isfinite(np.asarray(res.sources[0])).all()
  with pytest.raises(ValueError, match="needs concrete x"):
    jax.jit(lambda a: ica.fastica(a, jax.random.key(0),
                                  n_components="auto"))(x)
