"""Tests of nearid_jax.align against closed forms, NumPy, SciPy, sklearn.

Compiles are the cost, so almost every test uses the same shapes (n = 600
rows, d = 4) and the same tuple of kinds, which compiles each program once.
"""
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg as sp_linalg
from scipy import optimize
from scipy.spatial import distance

from nearid_jax import align
from nearid_jax import metrics
from nearid_jax.align import pairs as align_pairs
from nearid_jax import parallel

N, D = 600, 4
ALL = ("identity", "perm", "rigid", "similarity", "linear", "ica")
KEY = jax.random.key(0)


def _rot(seed, d=D):
  return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


@pytest.fixture(scope="module")
def zt():
  return np.asarray(jax.random.laplace(jax.random.key(1), (N, D)),
                    np.float32) * np.array([1.0, 2.0, 0.5, 1.5], np.float32)


def _eps(z_target, z_source, **kw):
  return align.epsilon(z_target, z_source, ALL, key=KEY, **kw)


def _split(n, fit_fraction=0.5, key=KEY):
  """The row split epsilon uses (first of three subkeys, sorted halves)."""
  n_fit = int(round(fit_fraction * n))
  perm = np.asarray(jax.random.permutation(jax.random.split(key, 3)[0], n))
  return np.sort(perm[:n_fit]), np.sort(perm[n_fit:])


# --- closed forms -----------------------------------------------------------


def test_exact_maps_give_zero_error_in_their_class(zt):
  q = _rot(0).astype(np.float32)
  a = np.random.default_rng(1).standard_normal((D, D)).astype(np.float32)
  perm = np.array([2, 0, 3, 1])
  signs = np.array([1, -1, -1, 1], np.float32)
  b = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
  tol = 2e-5
  rigid = _eps(zt, zt @ q.T + b)
  for k in ("rigid", "similarity", "linear"):
    for s in ("mean", "max", "q99"):
      assert float(rigid[k][s]) < tol, (k, s, rigid[k][s])
  assert float(rigid["perm"]["mean"]) > 0.03  # generic Q is no permutation
  lin = _eps(zt, zt @ a.T + b)
  assert float(lin["linear"]["max"]) < tol
  assert float(lin["rigid"]["mean"]) > 0.03  # A is not orthogonal
  assert float(lin["similarity"]["mean"]) > 0.03
  np.testing.assert_allclose(lin["linear"]["r2"], 1.0, atol=1e-5)
  ps = zt[:, perm] * signs + b
  pe = _eps(zt, ps)
  for k in ("perm", "rigid", "linear"):
    assert float(pe[k]["max"]) < tol, (k, pe[k])
  assert float(pe["identity"]["mean"]) > 0.1
  # Laplace sources linearly mixed: ICA recovers them (convergence tolerance).
  for res in (rigid, lin, pe):
    assert float(res["ica"]["mean"]) < 5e-3


def test_gaussian_noise_matches_closed_form_expectation():
  # z_t = P S z_s + sigma * noise: the perm, rigid and linear maps are all
  # the true map up to fitting error, so the residual is the noise and
  # E||residual|| = sigma * sqrt(2) Gamma((d+1)/2) / Gamma(d/2).
  n, sigma = 4000, 0.1
  rng = np.random.default_rng(3)
  zs = rng.laplace(size=(n, D)).astype(np.float32)
  zt = -zs[:, [1, 0, 3, 2]] + sigma * rng.standard_normal((n, D)).astype(
      np.float32)
  res = align.epsilon(zt, zs, ("perm", "rigid", "linear"), key=KEY)
  chi_mean = sigma * math.sqrt(2) * math.gamma((D + 1) / 2) / math.gamma(D / 2)
  diam = distance.pdist(zt.astype(np.float64)).max()
  for k in ("perm", "rigid", "linear"):
    np.testing.assert_allclose(float(res[k]["diameter"]), diam, rtol=1e-5)
    np.testing.assert_allclose(float(res[k]["mean"]) * diam, chi_mean,
                               rtol=0.05)


def test_diameter_max_and_q99_match_scipy(zt):
  pd = distance.pdist(zt.astype(np.float64))
  res = align.epsilon(zt, zt[:, ::-1], ("rigid",), key=KEY)
  np.testing.assert_allclose(float(res["rigid"]["diameter"]), pd.max(),
                             rtol=1e-5)
  res = align.epsilon(zt, zt[:, ::-1], ("rigid",), key=KEY, diameter="q99")
  np.testing.assert_allclose(float(res["rigid"]["diameter"]),
                             np.quantile(pd, 0.99), rtol=1e-4)
  # Beyond diameter_rows the maximum is over a subsample's pairs.
  res = align.epsilon(zt, zt[:, ::-1], ("rigid",), key=KEY, diameter_rows=200)
  sub = float(res["rigid"]["diameter"])
  assert 0.5 * pd.max() < sub <= pd.max() * (1 + 1e-6)


# --- agreement with SciPy / NumPy / sklearn ---------------------------------


def _noisy_pair(seed, d_t=D, d_s=D):
  rng = np.random.default_rng(seed)
  zs = rng.standard_normal((N, d_s)).astype(np.float32) * 2 + 1
  w = rng.standard_normal((d_t, d_s))
  zt = zs @ w.T + 0.5 * rng.standard_normal((N, d_t)) - 3
  return zt.astype(np.float32), zs


def test_rigid_matches_scipy_orthogonal_procrustes():
  zt, zs = _noisy_pair(0)
  h = align.fit_map(zt, zs, "rigid")
  a = zs.astype(np.float64) - zs.mean(0)
  b = zt.astype(np.float64) - zt.mean(0)
  r, _ = sp_linalg.orthogonal_procrustes(a, b)
  np.testing.assert_allclose(h.matrix, r.T, atol=1e-4)
  np.testing.assert_allclose(h.offset, zt.mean(0) - r.T @ zs.mean(0),
                             atol=1e-3)
  np.testing.assert_allclose(h.matrix @ h.matrix.T, np.eye(D), atol=1e-5)


def test_linear_matches_lstsq_and_ridge_matches_sklearn():
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  zt, zs = _noisy_pair(1)
  h = align.fit_map(zt, zs, "linear")
  x1 = np.c_[zs.astype(np.float64), np.ones(N)]
  coef, *_ = np.linalg.lstsq(x1, zt.astype(np.float64), rcond=None)
  np.testing.assert_allclose(h.matrix, coef[:D].T, atol=1e-4)
  np.testing.assert_allclose(h.offset, coef[D], atol=1e-3)
  h = align.fit_map(zt, zs, "linear", ridge=100.0)
  ridge = linear_model.Ridge(alpha=100.0).fit(zs.astype(np.float64), zt)
  np.testing.assert_allclose(h.matrix, ridge.coef_, atol=1e-4)
  np.testing.assert_allclose(h.offset, ridge.intercept_, atol=1e-3)


def test_perm_attains_scipy_assignment_optimum():
  rng = np.random.default_rng(2)
  zs = rng.standard_normal((N, D)).astype(np.float32)
  zt = (zs @ rng.standard_normal((D, D)).T).astype(np.float32)
  for scale in (False, True):
    h = align.fit_map(zt, zs, "perm", perm_scale=scale)
    m = np.asarray(h.matrix)
    corr = np.corrcoef(zt.T, zs.T)[:D, D:]
    rows, cols = optimize.linear_sum_assignment(-np.abs(corr))
    assert (m != 0).sum() == D
    got = np.abs(corr[np.arange(D), np.abs(m).argmax(1)]).sum()
    np.testing.assert_allclose(got, np.abs(corr[rows, cols]).sum(),
                               rtol=1e-6)
    picked = m[np.arange(D), np.abs(m).argmax(1)]
    np.testing.assert_array_equal(
        np.sign(picked), np.sign(corr[np.arange(D), np.abs(m).argmax(1)]))
    if not scale:
      assert set(np.abs(picked)) == {1.0}
    else:  # least-squares slope of each matched pair
      j = np.abs(m).argmax(1)
      want = [np.polyfit(zs[:, j[i]], zt[:, i], 1)[0] for i in range(D)]
      np.testing.assert_allclose(picked, want, rtol=1e-4)
    np.testing.assert_allclose(h.offset, zt.mean(0) - m @ zs.mean(0),
                               atol=1e-4)


def test_epsilon_matches_a_numpy_scipy_reference():
  zt, zs = _noisy_pair(4)
  fit, ev = _split(N)
  res = align.epsilon(zt, zs, ("perm", "rigid", "linear"), key=KEY)
  t, s = zt.astype(np.float64), zs.astype(np.float64)
  mt, ms = t[fit].mean(0), s[fit].mean(0)
  tc, sc = t[fit] - mt, s[fit] - ms
  r, _ = sp_linalg.orthogonal_procrustes(sc, tc)
  corr = np.corrcoef(t[fit].T, s[fit].T)[:D, D:]
  rows, cols = optimize.linear_sum_assignment(-np.abs(corr))
  pm = np.zeros((D, D))
  pm[rows, cols] = np.sign(corr[rows, cols])
  coef, *_ = np.linalg.lstsq(np.c_[s[fit], np.ones(len(fit))], t[fit],
                             rcond=None)
  preds = {"rigid": (s[ev] - ms) @ r + mt,
           "perm": (s[ev] - ms) @ pm.T + mt,
           "linear": np.c_[s[ev], np.ones(len(ev))] @ coef}
  diam = distance.pdist(t).max()
  for k, pred in preds.items():
    err = np.linalg.norm(t[ev] - pred, axis=1)
    np.testing.assert_allclose(float(res[k]["mean"]), err.mean() / diam,
                               rtol=1e-4)
    np.testing.assert_allclose(float(res[k]["max"]), err.max() / diam,
                               rtol=1e-4)
    np.testing.assert_allclose(float(res[k]["q99"]),
                               np.quantile(err, 0.99) / diam, rtol=1e-4)
    r2 = 1 - ((t[ev] - pred) ** 2).sum(0) / ((t[ev] - t[ev].mean(0)) ** 2
                                              ).sum(0)
    np.testing.assert_allclose(res[k]["r2"], r2, atol=1e-4)


# --- ICA ------------------------------------------------------------------


def test_ica_aligns_two_mixings_of_the_same_sources_to_the_noise_floor():
  rng = np.random.default_rng(5)
  s = np.c_[rng.laplace(size=(N, 2)), rng.uniform(-1.7, 1.7, (N, 2))]
  noise = lambda: 0.02 * rng.standard_normal((N, D))  # noqa: E731
  # Generic mixings: ICA reaches the linear (noise) floor; rigid cannot.
  z1 = (s @ rng.standard_normal((D, D)).T + noise()).astype(np.float32)
  z2 = (s @ rng.standard_normal((D, D)).T + noise()).astype(np.float32)
  res = _eps(z1, z2)
  floor = float(res["linear"]["mean"])
  assert float(res["ica"]["mean"]) < 1.5 * floor + 1e-3
  assert float(res["perm"]["mean"]) > 5 * floor
  # Orthogonal mixings: rigid is at the floor too, so efficiency ~ 1.
  z1 = (s @ _rot(6).T + noise()).astype(np.float32)
  z2 = (s @ _rot(7).T + noise()).astype(np.float32)
  res = _eps(z1, z2)
  eff = align.ica_efficiency(res["perm"]["mean"], res["rigid"]["mean"],
                             res["ica"]["mean"])
  assert 0.9 < float(eff) < 1.1, eff


def test_ica_efficiency_elementwise():
  perm = np.array([[0.0, 0.4], [0.2, 0.0]])
  rigid = np.array([[0.0, 0.2], [0.1, 0.0]])
  ica = np.array([[0.0, 0.25], [0.2, 0.0]])
  eff = align.ica_efficiency(perm, rigid, ica)
  np.testing.assert_allclose(eff[0, 1], 0.75)
  np.testing.assert_allclose(eff[1, 0], 0.0)
  assert np.isnan(eff[0, 0]) and np.isnan(eff[1, 1])


# --- properties -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:FastICA did not converge")  # Gaussian z
@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16))
def test_rigid_invariant_to_a_common_rotation(zt, seed):
  _, zs = _noisy_pair(8)
  q = _rot(seed).astype(np.float32)
  shift = np.random.default_rng(seed).standard_normal(D).astype(np.float32)
  base = _eps(zt, zs)
  rot = _eps(zt @ q.T + shift, zs @ q.T - shift)
  for s in ("mean", "max", "q99"):
    np.testing.assert_allclose(float(rot["rigid"][s]), float(base["rigid"][s]),
                               rtol=1e-4, atol=1e-6)


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(perm=st.permutations(range(D)))
def test_every_class_invariant_to_relabelling_source_dims(zt, perm):
  rng = np.random.default_rng(9)
  zs = (zt @ rng.standard_normal((D, D)).T
        + 0.3 * rng.standard_normal((N, D))).astype(np.float32)
  base = _eps(zt, zs)
  relabelled = _eps(zt, zs[:, list(perm)])
  for k in ("perm", "rigid", "similarity", "linear"):
    for s in ("mean", "max", "q99"):
      np.testing.assert_allclose(float(relabelled[k][s]), float(base[k][s]),
                                 rtol=1e-4, atol=1e-6)
  # ICA restarts from a different whitened basis: equal to its tolerance.
  np.testing.assert_allclose(float(relabelled["ica"]["mean"]),
                             float(base["ica"]["mean"]), rtol=2e-2)


@pytest.fixture(scope="module")
def three_runs(zt):
  rng = np.random.default_rng(10)
  return np.stack([zt] + [
      (zt @ rng.standard_normal((D, D)).T
       + 0.2 * rng.standard_normal((N, D))).astype(np.float32)
      for _ in range(2)])


def test_batched_equals_pair_by_pair(three_runs):
  res = align.pairwise_epsilon(three_runs, ALL, key=KEY, pair_chunk=4)
  assert res["rigid"]["mean"].shape == (3, 3)
  for i in range(3):
    for j in range(3):
      if i == j:
        assert all(float(res[k]["mean"][i, i]) == 0 for k in ALL)
        continue
      one = _eps(three_runs[i], three_runs[j])
      for k in ALL:
        # A batched and a single ICA differ in float rounding, which the
        # fixed-point iteration carries to its tolerance (1e-4).
        rtol = 5e-3 if k == "ica" else 2e-4
        for s in ("mean", "max", "q99"):
          np.testing.assert_allclose(float(res[k][s][i, j]),
                                     float(one[k][s]), rtol=rtol, atol=1e-6,
                                     err_msg=f"{k} {s} ({i}, {j})")
        np.testing.assert_allclose(res[k]["r2"][i, j], one[k]["r2"],
                                   atol=2e-3 if k == "ica" else 1e-4)
  assert res.info["n_fit"] == N // 2
  np.testing.assert_allclose(
      res.diameter, [distance.pdist(z).max() for z in three_runs], rtol=1e-5)


def test_pairs_over_devices_and_row_blocks_equal_one_device(three_runs):
  # The tests run with 8 CPU devices: the 12 ordered pairs of 4 runs and
  # the 5 structural pairs are padded to multiples of 8 and spread over all
  # of them (as the runs themselves).
  # Evaluating 7 rows per block (300 evaluation rows: the last block is
  # shifted back and overlaps) must not change ε or R² either.
  zs = np.concatenate([three_runs, three_runs[1:2][:, ::-1]])
  factors = three_runs[0][:, :3]
  runs5 = np.concatenate([three_runs, three_runs[:2, :, ::-1]])

  def both():
    return (align.pairwise_epsilon(zs, ALL, key=KEY).epsilon,
            align.structural(runs5, factors, ("perm", "rigid", "linear"),
                             key=KEY, with_sources=False)["epsilon"])
  spread = both()
  with parallel.using(devices=1):
    one = both()
  per_row = 4 * (2 * D + 3 * len(ALL) * D)
  with parallel.using(chunk_bytes=7 * per_row):
    assert align_pairs.chunks(12, N // 2, D, D, len(ALL), None) == (1, 7)
    blocks = both()
  # Sums taken in another order (row blocks, cross-covariance blocks)
  # differ in float32 rounding only; R² = 1 - ss/sst near 0 sees that as an
  # absolute ~1e-6.
  for other in (spread, blocks):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=5e-6), other, one)


def test_pairwise_flags_invalid_runs_under_jit(three_runs):
  bad = three_runs.copy()
  bad[1, 5, 2] = np.nan
  fn = jax.jit(lambda z: align.pairwise_epsilon(z, ("rigid", "linear"),
                                                key=KEY))
  res = fn(jnp.asarray(bad))
  assert np.asarray(res.valid).tolist() == [True, False, True]
  m = np.asarray(res["linear"]["mean"])
  assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()
  assert np.isfinite(m[0, 2]) and np.isfinite(m[2, 0])


# --- different dimensions ---------------------------------------------------


def test_dimension_mismatch_pad_and_pca():
  rng = np.random.default_rng(11)
  zt3 = rng.laplace(size=(N, 3)).astype(np.float32)
  extra = 0.3 * rng.standard_normal((N, 2))
  zs5 = np.c_[zt3 @ _rot(12, 3).T, extra].astype(np.float32)
  kinds = ("perm", "rigid", "linear", "ica")
  pad = align.epsilon(zt3, zs5, kinds, key=KEY, dims="pad")
  pca = align.epsilon(zt3, zs5, kinds, key=KEY, dims="pca")
  assert pad["rigid"]["dims"] == "pad" and pca["rigid"]["dims"] == "pca"
  assert pad["rigid"]["r2"].shape == (3,)
  # Linear ignores the extra source dims; so does PCA (they have less
  # variance); padding makes rigid account for them (strict).
  assert float(pad["linear"]["max"]) < 1e-5
  diam = distance.pdist(zt3).max()
  extra_norm = np.linalg.norm(extra, axis=1).mean() / diam
  np.testing.assert_allclose(float(pad["rigid"]["mean"]), extra_norm,
                             rtol=0.1)
  assert float(pca["rigid"]["mean"]) < 0.2 * extra_norm
  assert float(pca["ica"]["mean"]) < 0.2 * extra_norm
  # A larger target: the error stays in the target's own coordinates.
  back = align.epsilon(zs5, zt3, ("rigid", "linear"), key=KEY, dims="pca")
  assert back["rigid"]["r2"].shape == (5,)
  np.testing.assert_allclose(float(back["rigid"]["mean"]),
                             float(back["linear"]["mean"]), rtol=0.05)


# --- structural and bi-Lipschitz ------------------------------------------


def test_structural_epsilon_to_the_factors():
  rng = np.random.default_rng(13)
  u = rng.laplace(size=(N, 3)).astype(np.float32)
  zs = np.stack([(u @ rng.standard_normal((3, 3)).T * 2 + 1).astype(
      np.float32) for _ in range(2)] + [
          (u[:, [2, 0, 1]] * [-3, 1, 2]).astype(np.float32)])
  res = align.structural(zs, u, ("perm", "rigid", "linear", "ica"),
                         key=KEY)
  eps = {k: np.asarray(v["mean"]) for k, v in res["epsilon"].items()}
  assert (eps["linear"] < 1e-5).all()
  # ICA estimates u from 300 fit rows: a statistical error of O(1/sqrt(n)).
  assert (eps["ica"] < 0.02).all()
  assert (eps["perm"][:2] > 0.05).all()
  assert (eps["ica"][:2] < 0.25 * eps["perm"][:2]).all()
  # Run 2 is u up to a scaled signed permutation: without a per-dimension
  # scale, perm cannot fit it exactly (a scale test is in
  # test_perm_attains_scipy_assignment_optimum).
  assert eps["perm"][2] > 0.01 and eps["linear"][2] < 1e-5
  # MCC (nearid_jax.metrics, run by the caller on the returned rows): run 2
  # is disentangled already, runs 0-1 only after ICA; all are affine
  # functions of u.
  def mcc(z, method="pearson"):
    return np.asarray(metrics.mcc(z, res.factors_eval, method=method)["mcc"])
  mcc_raw = mcc(res.codes_eval)
  np.testing.assert_allclose(mcc_raw[2], 1.0, atol=1e-5)
  assert (mcc_raw[:2] < 0.97).all()
  assert (mcc(res.sources_eval) > 0.98).all()
  assert (mcc(res.sources_eval, "spearman") > 0.97).all()
  all_rows = np.concatenate([res.codes_fit, res.codes_eval], axis=1)
  u_all = np.concatenate([res.factors_fit, res.factors_eval])
  r2 = metrics.r2(all_rows, u_all, key=jax.random.fold_in(KEY, 7))["r2"]
  np.testing.assert_allclose(r2, 1.0, atol=1e-4)


def test_decoder_bi_lipschitz_closed_form():
  w = np.diag([3.0, 0.25, 1.0])[:, :2]  # singular values 3 and 0.25
  w = np.r_[w, np.zeros((2, 2))] @ _rot(14, 2)
  out = align.decoder_bi_lipschitz(lambda v: jnp.asarray(w) @ v,
                                   jnp.ones((5, 2)))
  np.testing.assert_allclose(float(out["one_plus_l"]), 4.0, rtol=1e-5)
  # A LeakyReLU layer: slopes 1 and alpha, so 1 + L = 1 / alpha on points
  # that see both branches.
  alpha = 0.2
  f = lambda v: jax.nn.leaky_relu(v, alpha)  # noqa: E731
  out = align.decoder_bi_lipschitz(f, jnp.array([[1.0, -1.0], [2.0, 3.0]]))
  np.testing.assert_allclose(float(out["one_plus_l"]), 1 / alpha, rtol=1e-6)
  np.testing.assert_allclose(align.theorem1_factor(2.0), math.sqrt(3))


# --- bad input ------------------------------------------------------------


def test_bad_input_messages(zt, three_runs):
  with pytest.raises(ValueError, match="600 rows but z_source has 599"):
    align.epsilon(zt, zt[:-1], "rigid", key=KEY)
  with pytest.raises(ValueError, match=r"different row counts.*run\(s\) \[1\]"):
    align.pairwise_epsilon([zt, zt[:-1], zt], key=KEY)
  for f in (0.0, 1.0, 1.5, -0.1):
    with pytest.raises(ValueError, match="fit_fraction must be in"):
      align.epsilon(zt, zt, "rigid", key=KEY, fit_fraction=f)
  with pytest.raises(ValueError, match="unknown alignment kind"):
    align.epsilon(zt, zt, "affine", key=KEY)
  with pytest.raises(TypeError, match="floating-point"):
    align.epsilon(zt.astype(np.int32), zt, "rigid", key=KEY)
  with pytest.raises(ValueError, match="more rows than dimensions"):
    align.epsilon(zt[:6], zt[:6], "rigid", key=KEY)
  with pytest.raises(ValueError, match="'identity'.*equal dimensions"):
    align.epsilon(zt, zt[:, :3], "identity", key=KEY)
  bad = three_runs.copy()
  bad[2, [3, 7], 1] = [np.nan, np.inf]
  with pytest.raises(ValueError, match=r"1 NaN and 1 Inf.*run\(s\) \[2\]"):
    align.pairwise_epsilon(bad, ALL, key=KEY, pair_chunk=4)
  bad = three_runs.copy()
  bad[1, :, 3] = 2.0
  with pytest.raises(ValueError, match=r"constant column\(s\) in run 1: \[3\]"):
    align.pairwise_epsilon(bad, ALL, key=KEY, pair_chunk=4)
  coll = three_runs.copy()
  coll[0, :, 3] = coll[0, :, 0] + coll[0, :, 1]
  with pytest.raises(ValueError, match="rank-deficient.*run 0.*ridge > 0"):
    align.pairwise_epsilon(coll, ALL, key=KEY, pair_chunk=4)
  # With a ridge, linear is fine on collinear runs.
  res = align.pairwise_epsilon(coll, ("rigid", "linear"), key=KEY, ridge=1.0)
  assert np.isfinite(np.asarray(res["linear"]["mean"])).all()


@pytest.mark.parametrize("q", [0.99, 0.5, 0.0, 1.0, 0.37])
def test_upper_quantile_is_numpys_linear_quantile(q):
  # Bisection on the float bits: exact, with ties, zeros and -0.0.
  rng = np.random.default_rng(1)
  v = np.abs(rng.normal(size=(4, 1001))).astype(np.float32)
  v[1] = np.round(v[1], 1)
  v[2] = 0.25
  v[3, :600] = 0.0
  v[3, 0] = -0.0
  got = np.asarray(jax.jit(lambda x: align_pairs.upper_quantile(x, q))(v))
  np.testing.assert_allclose(got, np.quantile(v, q, axis=-1), rtol=1e-6)
