"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams).

An importance matrix R [d, K] (how much latent j is used to predict factor
k) gives, exactly as disentanglement_lib computes them:
* D = sum_j rho_j (1 - H_K(R[j, :])), rho_j = sum_k R[j, k] / sum R, with
  H_K the entropy (base K) of the normalised row R[j, :] + 1e-11;
* C = sum_k rho_k (1 - H_d(R[:, k])), rho_k = sum_j R[j, k] / sum R;
* informativeness_train / _test: mean classification accuracy over factors
  on the fit and score splits.
(An all-zero R uses uniform weights rho; with K = 1, D is 1 by definition;
with d = 1, C is 1.)

Estimators of R:
* `estimator="gbt"`: the reference, disentanglement_lib's: one
  `sklearn.ensemble.GradientBoostingClassifier()` (default settings) per
  factor on the raw latents, R = |feature_importances_|, accuracy of its
  predictions. Runs on the CPU with scikit-learn (minutes per run at
  10,000 points).
* `estimator="logistic"` (on device, the default): one L1-regularised
  multinomial logistic regression per factor on the latents standardised
  with the fit split's statistics, minimising mean cross-entropy +
  `l1` * ||W||_1 (intercepts unpenalised) by FISTA (`num_iters` steps, step
  1 / Lipschitz bound); R[j, k] = sum over classes of |W[j, c]|,
  informativeness from its argmax predictions. It is linear: it ranks runs
  like GBT when factors are (close to) linearly decodable, and under-rates
  informativeness when they are decodable only non-linearly.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models


def _entropy_base(p, base_count, axis):
  """scipy.stats.entropy(p + 1e-11, base=base_count) along `axis`."""
  p = p + 1e-11
  p = p / jnp.sum(p, axis=axis, keepdims=True)
  return -jnp.sum(p * jnp.log(p), axis=axis) / jnp.log(base_count)


def scores_from_importance(importance: jax.Array) -> dict:
  """D and C of a [d, K] importance matrix (disentanglement_lib formulas)."""
  d, k = importance.shape
  total = jnp.sum(importance)
  weights = jnp.where(total > 0, importance, jnp.ones_like(importance))
  code_w = jnp.sum(weights, axis=1) / jnp.sum(weights)
  factor_w = jnp.sum(weights, axis=0) / jnp.sum(weights)
  if k > 1:
    per_code = 1.0 - _entropy_base(importance, float(k), axis=1)
  else:
    per_code = jnp.ones((d,), importance.dtype)
  if d > 1:
    per_factor = 1.0 - _entropy_base(importance, float(d), axis=0)
  else:
    per_factor = jnp.ones((k,), importance.dtype)
  return {"disentanglement": jnp.sum(per_code * code_w),
          "completeness": jnp.sum(per_factor * factor_w)}


def fit_l1_logistic(x, y, class_mask, l1: float, num_iters: int):
  """FISTA for mean cross-entropy + l1 ||W||_1 (multinomial).

  Args:
    x: [n, p] standardised features.
    y: [n] int labels.
    class_mask: [C] bool existing classes.
    l1: L1 strength.
    num_iters: FISTA iterations.

  Returns:
    (w [p, C], b [C]).
  """
  n, p = x.shape
  c = class_mask.shape[0]
  xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
  gram = jnp.dot(xa.T, xa, precision=jax.lax.Precision.HIGHEST) / n
  # Softmax cross-entropy has a Hessian <= 1/2 (X^T X / n) (x) I.
  lip = 0.5 * jnp.max(jnp.linalg.eigvalsh(gram))
  step = 1.0 / jnp.maximum(lip, 1e-6)
  y1 = jax.nn.one_hot(y, c, dtype=x.dtype)

  def grad(theta):
    logits = jnp.dot(xa, theta, precision=jax.lax.Precision.HIGHEST)
    logits = jnp.where(class_mask, logits, -jnp.inf)
    prob = jax.nn.softmax(logits, axis=-1)
    return jnp.dot(xa.T, prob - y1, precision=jax.lax.Precision.HIGHEST) / n

  def prox(theta):
    w = theta[:p]
    w = jnp.sign(w) * jnp.maximum(jnp.abs(w) - step * l1, 0.0)
    return jnp.concatenate([w, theta[p:]], axis=0)

  def body(_, carry):
    theta, yv, t = carry
    new = prox(yv - step * grad(yv))
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    yv = new + ((t - 1.0) / t_new) * (new - theta)
    return new, yv, t_new

  theta0 = jnp.zeros((p + 1, c), x.dtype)
  theta, _, _ = jax.lax.fori_loop(0, num_iters, body,
                                  (theta0, theta0, jnp.array(1.0, x.dtype)))
  return theta[:p], theta[p]


def _run_logistic(z_tr, z_te, y_tr, y_te, num_classes, l1, num_iters):
  x_tr, mean, std = inputs.standardize(z_tr)
  x_te, _, _ = inputs.standardize(z_te, mean, std)

  def per_factor(ytr, yte, cmask):
    w, b = fit_l1_logistic(x_tr, ytr, cmask, l1, num_iters)
    imp = jnp.sum(jnp.abs(w), axis=1)
    pred = lambda x: jnp.argmax(
        linear_models.logistic_logits(x, w, b, cmask), axis=-1)
    return (imp, jnp.mean(pred(x_tr) == ytr), jnp.mean(pred(x_te) == yte))

  imp, acc_tr, acc_te = inputs.map_factors(per_factor, (y_tr, y_te),
                                           num_classes)
  out = scores_from_importance(imp.T)
  out["informativeness_train"] = jnp.mean(acc_tr)
  out["informativeness_test"] = jnp.mean(acc_te)
  return out


@functools.partial(parallel.jit,
                   static_argnames=("num_classes", "num_iters"))
def _runs_logistic(z_tr, z_te, y_tr, y_te, num_classes, l1, num_iters):
  return parallel.map_runs(
      lambda *a: _run_logistic(*a, num_classes, l1, num_iters),
      z_tr, z_te, y_tr, y_te)


_scores_from_importance = jax.jit(scores_from_importance)


def _gbt_run(z_tr, z_te, y_tr, y_te, gbt_kwargs):
  try:
    from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('estimator="gbt" uses scikit-learn: '
                      "pip install scikit-learn") from e
  k = y_tr.shape[1]
  imp = np.zeros((z_tr.shape[1], k))
  acc_tr, acc_te = [], []
  for f in range(k):
    model = ensemble.GradientBoostingClassifier(**gbt_kwargs)
    model.fit(z_tr, y_tr[:, f])
    imp[:, f] = np.abs(model.feature_importances_)
    acc_tr.append(np.mean(model.predict(z_tr) == y_tr[:, f]))
    acc_te.append(np.mean(model.predict(z_te) == y_te[:, f]))
  out = {k_: float(v) for k_, v in _scores_from_importance(
      jnp.asarray(imp, jnp.float32)).items()}
  out["informativeness_train"] = float(np.mean(acc_tr))
  out["informativeness_test"] = float(np.mean(acc_te))
  return out


def dci(z, factors, *, estimator: str = "logistic", key=None,
        test_fraction: float = inputs.DEFAULT_TEST_FRACTION, z_test=None,
        factors_test=None, l1: float = 0.01, num_iters: int = 100,
        gbt_kwargs: dict | None = None) -> dict:
  """DCI disentanglement, completeness and informativeness of 1 or R runs.

  Args:
    z: [n, d] codes or [R, n, d].
    factors: [n, K] or [R, n, K] factors.
    estimator: "logistic" (on device) or "gbt" (scikit-learn reference).
    key: PRNG key of the fit/score split (default key(0)).
    test_fraction: fraction of rows scored when splitting.
    z_test: optional explicit score codes (then all of z is fitted).
    factors_test: their factors.
    l1: L1 strength of the "logistic" estimator.
    num_iters: FISTA iterations of the "logistic" estimator.
    gbt_kwargs: extra GradientBoostingClassifier arguments ("gbt").

  Returns:
    dict with "disentanglement", "completeness", "informativeness_train",
    "informativeness_test".

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).integers(0, 3, (600, 2))
    >>> s = dci(u[:, ::-1].astype(np.float32), u)
    >>> s["disentanglement"] > 0.9 and s["completeness"] > 0.9
    True
  """
  if estimator not in ("logistic", "gbt"):
    raise ValueError(f"estimator must be 'logistic' or 'gbt', got "
                     f"{estimator!r}.")
  zr, batched = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  fac = inputs.encode_factors("factors", factors, n, r)
  sp = inputs.split(zr, fac, key=inputs.default_key(key),
                    test_fraction=test_fraction, z_test=z_test,
                    factors_test=factors_test)
  y_tr, y_te = sp.run_labels()
  if estimator == "gbt":
    runs = [_gbt_run(np.asarray(sp.z_train[i]), np.asarray(sp.z_test[i]),
                     np.asarray(y_tr[i]), np.asarray(y_te[i]),
                     gbt_kwargs or {}) for i in range(r)]
    out = {k: np.array([run[k] for run in runs]) for k in runs[0]}
    return inputs.to_host(out, batched)
  out = _runs_logistic(sp.z_train, sp.z_test, y_tr, y_te, fac.num_classes,
                       l1, num_iters)
  return inputs.to_host(out, batched)
