"""Tests of nearid_jax.batch_effects against scikit-learn and closed forms."""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from nearid_jax import batch_effects as be
from nearid_jax import ica
from nearid_jax.batch_effects import evaluation as ev
from nearid_jax.batch_effects import transforms as tr
from nearid_jax.paper import cells


def _sk_l1_logistic(x, y, w, l1):
  """sklearn's L1 logistic regression with an (effectively) free intercept."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = LogisticRegression(l1_ratio=1.0, C=1.0 / l1, solver="liblinear",
                           tol=1e-10, max_iter=100_000,
                           intercept_scaling=1e4)
    m.fit(x, y, sample_weight=w)
  return m.coef_[0], m.intercept_[0]


def test_l1_logistic_columns_match_sklearn():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 4)).astype(np.float32)
  y = np.stack([x[:, 0] + 0.5 * rng.normal(size=200) > 0.3,
                x[:, 1] - x[:, 2] + rng.normal(size=200) > 0], 1)
  w = rng.uniform(0.5, 1.5, size=(200, 2)) * (rng.random((200, 2)) < 0.8)
  w /= w.sum(0)
  coef, b = ev.fit_l1_logistic_columns(jnp.asarray(x), jnp.asarray(y),
                                       jnp.asarray(w, jnp.float32), 0.02,
                                       3000)
  for c in range(2):
    keep = w[:, c] > 0
    ref_w, ref_b = _sk_l1_logistic(x[keep], y[keep, c], w[keep, c], 0.02)
    np.testing.assert_allclose(coef[:, c], ref_w, atol=2e-3)
    np.testing.assert_allclose(b[c], ref_b, atol=2e-3)
    # L1 zeroes the same features.
    np.testing.assert_array_equal(np.asarray(coef[:, c]) == 0, ref_w == 0)
  assert (np.asarray(coef) == 0).any()


def test_masked_auroc_matches_roc_auc_score_with_ties():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(150, 3)).astype(np.float32)
  s[:60, 1] = s[0, 1]
  s[:, 2] = np.round(s[:, 2])
  lab = rng.integers(0, 3, 150)
  pos = lab[:, None] == np.arange(3)
  neg = ~pos & (rng.random((150, 3)) < 0.7)
  got = ev.masked_auroc(jnp.asarray(s), jnp.asarray(pos), jnp.asarray(neg))
  want = [roc_auc_score(pos[m, c], s[m, c])
          for c in range(3) for m in [pos[:, c] | neg[:, c]]]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  none = ev.masked_auroc(jnp.asarray(s), jnp.zeros_like(jnp.asarray(pos)),
                         jnp.asarray(neg))
  assert np.isnan(np.asarray(none)).all()


def _design(rng, n=150, genes=("ctrl", "A", "B"), batches=("e1", "e2", "e3")):
  g = np.array(genes)[rng.integers(0, len(genes), n)]
  b = np.array(batches)[np.arange(n) % len(batches)]
  return g, b


def test_heldout_auroc_matches_sklearn_loop():
  rng = np.random.default_rng(2)
  g, b = _design(rng)
  x = rng.normal(size=(150, 3)).astype(np.float32)
  x[g == "A", 0] += 1.0
  x[g == "B", 1] -= 0.7
  x += np.where(b == "e2", 1.5, 0.0)[:, None]
  yc, y = np.unique(g, return_inverse=True)  # A, B, ctrl
  bc, bi = np.unique(b, return_inverse=True)
  got = np.asarray(ev.heldout_auroc(
      jnp.asarray(x), jnp.asarray(y), jnp.asarray(bi), control=2,
      num_classes=3, num_batches=3, l1=0.02, num_iters=3000))
  assert got.shape == (3, 3) and np.isnan(got[:, 2]).all()
  for fold in range(3):
    tr_, te = bi != fold, bi == fold
    mu, sd = x[tr_].mean(0), x[tr_].std(0)
    xs = (x - mu) / sd
    for c in range(2):
      rows = tr_ & ((y == c) | (y == 2))
      pos = y[rows] == c
      w = np.where(pos, 0.5 / pos.sum(), 0.5 / (~pos).sum())
      coef, icpt = _sk_l1_logistic(xs[rows], pos, w, 0.02)
      m = te & ((y == c) | (y == 2))
      want = roc_auc_score(y[m] == c, xs[m] @ coef + icpt)
      np.testing.assert_allclose(got[fold, c], want, atol=1e-3)


def test_hoyer_closed_form():
  v = np.array([[0., 3., 0., 0.], [1., -1., 1., -1.], [1., 2., 3., 4.],
                [0., 0., 0., 0.]], np.float32)
  k = 4
  want = [(np.sqrt(k) - np.abs(r).sum() / np.linalg.norm(r)) / (np.sqrt(k) - 1)
          if np.any(r) else 0.0 for r in v]
  np.testing.assert_allclose(ev.hoyer(jnp.asarray(v)), want, rtol=1e-6)
  assert want[0] == 1.0 and want[1] == 0.0


def test_signal_concentration_closed_forms_and_reference():
  rng = np.random.default_rng(3)
  g, b = _design(rng, n=300)
  yc, y = np.unique(g, return_inverse=True)  # A, B, ctrl
  bc, bi = np.unique(b, return_inverse=True)
  x = rng.normal(size=(300, 8)).astype(np.float32)
  x += 3.0 * bi[:, None] * rng.normal(size=8)  # batch shifts cancel
  x[g == "A", 0] += 2.0                        # all of A in one feature
  x[g == "B"] += 0.8                           # B spread over all eight
  conc = np.asarray(ev.signal_concentration(
      jnp.asarray(x), jnp.asarray(y), jnp.asarray(bi), control=2,
      num_classes=3, num_batches=3, top_fraction=0.25))
  assert np.isnan(conc[2])
  assert conc[0] > 0.9 and conc[1] < conc[0]
  # Reference: the docstring's definition with loops.
  ctrl = y == 2
  cmean = {bb: x[ctrl & (bi == bb)].mean(0) for bb in range(3)}
  resid = np.concatenate([x[ctrl & (bi == bb)] - cmean[bb] for bb in range(3)])
  var = (resid ** 2).sum(0) / (ctrl.sum() - 3)
  for c in range(2):
    eff = np.mean([x[(y == c) & (bi == bb)].mean(0) - cmean[bb]
                   for bb in range(3)], 0)
    s = np.sort(eff ** 2 / var)[::-1]
    share = s[:2].sum() / s.sum()
    np.testing.assert_allclose(conc[c], (share - 0.25) / 0.75, rtol=1e-4)


def test_transforms_whiten_rotate_and_unmix():
  key = jax.random.key(0)
  s = np.asarray(jax.random.laplace(key, (2, 500, 3)))
  mix = np.array([[1., 2., 0.], [0., 1., 1.], [1., 0., 3.]], np.float32)
  x = s @ mix.T + 5.0
  pca = tr.fit(x, "pca", key)
  f = np.asarray(tr.apply(pca, x))
  for r in range(2):
    np.testing.assert_allclose(np.cov(f[r].T), np.eye(3), atol=1e-3)
  rand = tr.fit(x, "pca_rand", key)
  q = np.asarray(rand.matrix) @ np.linalg.pinv(np.asarray(pca.matrix))
  for r in range(2):
    np.testing.assert_allclose(q[r] @ q[r].T, np.eye(3), atol=1e-4)
  assert not np.allclose(q[0], q[1], atol=1e-2)  # one rotation per run
  icat = tr.fit(x, "pca_ica", key)
  src = np.asarray(tr.apply(icat, x))
  for r in range(2):
    np.testing.assert_allclose(src[r].mean(0), 0.0, atol=1e-4)
    assert float(ica.amari_distance(jnp.asarray(icat.matrix[r]),
                                    jnp.asarray(mix))) < 0.05
  base = np.asarray(tr.apply(tr.fit(x, "base", key), x))
  np.testing.assert_array_equal(base, x)
  # Jittable: the same numbers under jax.jit.
  jit_fit = jax.jit(functools.partial(tr.fit, kind="pca_rand"))
  np.testing.assert_allclose(jit_fit(jnp.asarray(x), key=key).matrix,
                             rand.matrix, rtol=1e-5, atol=1e-6)


def wells(rng, n=180):
  """Wells of genes A (effect on feature 0), B (none) and controls."""
  g, b = _design(rng, n=n, genes=(cells.CONTROL, "A", "B"))
  x = rng.normal(size=(n, 4)).astype(np.float32)
  x[g == "A", 0] += 2.0
  return x, g, b


def analyse_wells(x, g, b):
  """The analysis tests/test_paper_cells.py repeats through a table (same
  shapes and options, so the compiled programs are shared)."""
  return be.analyse(x, g, b, control=cells.CONTROL, key=jax.random.key(0),
                    l1=0.01, num_iters=300, batch_folds=5, what="gene",
                    batch_what="experiment_name")


# Gaussian controls have no independent components to find.
@pytest.mark.filterwarnings("ignore::nearid_jax.ica.ConvergenceWarning")
def test_analyse_shapes_and_separation():
  x, g, b = wells(np.random.default_rng(4))
  res = analyse_wells(x, g, b)
  assert set(res.scores) == set(be.KINDS)
  assert res.class_names == [cells.CONTROL, "A", "B"] and res.control == 0
  for kind, sc in res.scores.items():
    assert sc.gene_auroc.shape == (1, 3, 3) and sc.batch_auroc.shape == (1,)
    assert np.isnan(sc.gene_auroc[..., 0]).all()
    assert np.nanmean(sc.gene_auroc[..., 1]) > 0.85, kind  # A has an effect
    assert abs(np.nanmean(sc.gene_auroc[..., 2]) - 0.5) < 0.2, kind  # B: none
    assert abs(float(sc.batch_auroc[0]) - 0.5) < 0.15, kind  # no batch effect
  assert res.n_components == 4


def test_analyse_bad_input_is_named():
  rng = np.random.default_rng(5)
  x, g, b = wells(rng)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"no control wells: no gene equals "
                     r"'ctrl'.*fit_on='control' and negatives='control'"):
    be.analyse(x, g, b, control="ctrl", key=key)
  g1 = g.astype(object)
  g1[:3] = "LONER"
  b1 = b.copy()
  b1[:3] = "e1"
  with pytest.raises(ValueError, match=r"gene 'LONER' \(only in 'e1'\) "
                     r"occur\(s\) in one batch only"):
    be.analyse(x, g1, b1, control=cells.CONTROL, key=key)
  xn = x.copy()
  xn[7, 2] = np.nan
  with pytest.raises(ValueError, match=r"x contains 1 NaN.*row\(s\) \[7\]"):
    be.analyse(xn, g, b, control=cells.CONTROL, key=key)
  with pytest.raises(ValueError, match="one value per well"):
    be.analyse(x, g[:-1], b, control=cells.CONTROL, key=key)
  with pytest.raises(ValueError, match=">= 2 batch values"):
    be.analyse(x, g, np.full(len(g), "e1"), control=cells.CONTROL, key=key)
  # A rank-deficient fit set (rows on a hyperplane, as after a LayerNorm)
  # is reduced to its rank; asking for more components is refused.
  xh = x - x.mean(1, keepdims=True)
  with pytest.raises(ValueError, match=r"span only 3 of 4 dimensions"):
    be.analyse(xh, g, b, control=cells.CONTROL, key=key, n_components=4,
               kinds=("pca",))
