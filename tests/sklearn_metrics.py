"""Reference metrics written from scikit-learn / SciPy primitives.

Each follows the published definition as implemented by its authors
(disentanglement_lib for MIG, SAP, DCI, modularity/explicitness, BetaVAE,
FactorVAE and UDR; kylehkhsu/latent_quantization for InfoMEC), with plain
loops over latents and factors, on the host, in float64. The tests compare
`nearid_jax.metrics` to them, and `benchmarks/metrics.py` times them.
Inputs: z [n, d] float, factors [n, K] int (class labels).
"""
import warnings

import numpy as np
import scipy.stats
from sklearn import ensemble
from sklearn import feature_selection
from sklearn import linear_model
from sklearn import metrics as skm
from sklearn import preprocessing
from sklearn import svm
from scipy import optimize


def _digitize(z, num_bins=20):
  out = np.zeros(z.shape, np.int64)
  for j in range(z.shape[1]):
    out[:, j] = np.digitize(z[:, j], np.histogram(z[:, j], num_bins)[1][:-1])
  return out


def mi_matrix(z, u, num_bins=20):
  b = _digitize(z, num_bins)
  return np.array([[skm.mutual_info_score(u[:, k], b[:, j])
                    for k in range(u.shape[1])] for j in range(z.shape[1])])


def entropies(u):
  return np.array([skm.mutual_info_score(u[:, k], u[:, k])
                   for k in range(u.shape[1])])


def mig(z, u):
  m = mi_matrix(z, u)
  s = np.sort(m, axis=0)[::-1]
  return float(np.mean((s[0] - s[1]) / entropies(u)))


def modularity(z, u):
  m = mi_matrix(z, u)
  sq = m ** 2
  mx = sq.max(1)
  score = 1.0 - (sq.sum(1) - mx) / (mx * (sq.shape[1] - 1.0))
  score[mx == 0] = 0.0
  return float(np.mean(score))


def explicitness(z_tr, u_tr, z_te, u_te):
  mean, std = z_tr.mean(0), z_tr.std(0)
  x_tr, x_te = (z_tr - mean) / std, (z_te - mean) / std
  tr, te = [], []
  for k in range(u_tr.shape[1]):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      clf = linear_model.LogisticRegression().fit(x_tr, u_tr[:, k])
    mlb = preprocessing.MultiLabelBinarizer()
    tr.append(skm.roc_auc_score(mlb.fit_transform(u_tr[:, k:k + 1]),
                                clf.predict_proba(x_tr)))
    te.append(skm.roc_auc_score(mlb.fit_transform(u_te[:, k:k + 1]),
                                clf.predict_proba(x_te)))
  return float(np.mean(tr)), float(np.mean(te))


def sap_matrix(z_tr, u_tr, z_te, u_te):
  s = np.zeros((z_tr.shape[1], u_tr.shape[1]))
  for j in range(z_tr.shape[1]):
    for k in range(u_tr.shape[1]):
      clf = svm.LinearSVC(C=0.01, class_weight="balanced")
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(z_tr[:, j:j + 1], u_tr[:, k])
      s[j, k] = np.mean(clf.predict(z_te[:, j:j + 1]) == u_te[:, k])
  return s


def sap(z_tr, u_tr, z_te, u_te):
  s = np.sort(sap_matrix(z_tr, u_tr, z_te, u_te), axis=0)
  return float(np.mean(s[-1] - s[-2]))


def dci_from_importance(imp):
  def d_or_c(m):
    per = 1.0 - scipy.stats.entropy(m.T + 1e-11, base=m.shape[1])
    w = m if m.sum() != 0 else np.ones_like(m)
    return float(np.sum(per * w.sum(1) / w.sum()))
  return d_or_c(imp), d_or_c(imp.T)


def dci_gbt(z_tr, u_tr, z_te, u_te):
  imp = np.zeros((z_tr.shape[1], u_tr.shape[1]))
  tr, te = [], []
  for k in range(u_tr.shape[1]):
    model = ensemble.GradientBoostingClassifier().fit(z_tr, u_tr[:, k])
    imp[:, k] = np.abs(model.feature_importances_)
    tr.append(np.mean(model.predict(z_tr) == u_tr[:, k]))
    te.append(np.mean(model.predict(z_te) == u_te[:, k]))
  d, c = dci_from_importance(imp)
  return d, c, float(np.mean(tr)), float(np.mean(te))


def dci_l1_logistic(z_tr, u_tr, z_te, u_te, l1=0.01):
  """The on-device DCI estimator's objective, solved by sklearn (saga)."""
  mean, std = z_tr.mean(0), z_tr.std(0)
  x_tr, x_te = (z_tr - mean) / std, (z_te - mean) / std
  n = len(x_tr)
  imp = np.zeros((z_tr.shape[1], u_tr.shape[1]))
  tr, te = [], []
  for k in range(u_tr.shape[1]):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      clf = linear_model.LogisticRegression(
          C=1.0 / (l1 * n), l1_ratio=1.0, solver="saga", max_iter=300,
          tol=1e-4).fit(x_tr, u_tr[:, k])
    imp[:, k] = np.abs(clf.coef_).sum(0) if clf.coef_.shape[0] > 1 else (
        2 * np.abs(clf.coef_[0]))
    tr.append(np.mean(clf.predict(x_tr) == u_tr[:, k]))
    te.append(np.mean(clf.predict(x_te) == u_te[:, k]))
  d, c = dci_from_importance(imp)
  return d, c, float(np.mean(tr)), float(np.mean(te))


def infomec(z, u, seed=0):
  k_f = u.shape[1]
  s = np.stack([preprocessing.LabelEncoder().fit_transform(u[:, i])
                for i in range(k_f)], 1)
  x = preprocessing.StandardScaler().fit_transform(z.astype(np.float64))
  nmi = np.empty((k_f, x.shape[1]))
  for i in range(k_f):
    for j in range(x.shape[1]):
      nmi[i, j] = feature_selection.mutual_info_classif(
          x[:, j:j + 1], s[:, i], discrete_features=False, n_neighbors=10,
          random_state=seed)[0]
    nmi[i] /= skm.mutual_info_score(s[:, i], s[:, i])
  ranges = z.max(0) - z.min(0)
  active = ranges > ranges.max() / 20
  p = nmi[:, active]
  infom = (np.mean(p.max(0) / p.sum(0)) - 1 / k_f) / (1 - 1 / k_f)
  j_a = active.sum()
  infoc = (np.mean(p.max(1) / p.sum(1)) - 1 / j_a) / (1 - 1 / j_a)
  es = []
  for i in range(k_f):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      m = linear_model.LogisticRegression(
          C=np.inf, class_weight="balanced", max_iter=100).fit(x, s[:, i])
      m0 = linear_model.LogisticRegression(
          C=np.inf, class_weight="balanced").fit(np.zeros_like(x), s[:, i])
    ll = skm.log_loss(s[:, i], m.predict_proba(x))
    l0 = skm.log_loss(s[:, i], m0.predict_proba(np.zeros_like(x)))
    es.append((l0 - ll) / l0)
  return {"infom": float(infom), "infoe": float(np.mean(es)),
          "infoc": float(infoc)}


def mcc(z, v, method="pearson"):
  d = z.shape[1]
  if method == "pearson":
    c = np.corrcoef(z.T, v.T)[:d, d:]
  else:
    c = scipy.stats.spearmanr(z, v).statistic[:d, d:]
  r, col = optimize.linear_sum_assignment(-np.abs(c))
  return float(np.mean(np.abs(c[r, col])))


def r2(z_tr, v_tr, z_te, v_te):
  mean, std = v_tr.mean(0), v_tr.std(0)
  model = linear_model.LinearRegression().fit(z_tr, (v_tr - mean) / std)
  return float(skm.r2_score((v_te - mean) / std, model.predict(z_te)))


def udr(zs, method="lasso"):
  reps = [preprocessing.StandardScaler().fit_transform(z) for z in zs]
  r = len(reps)
  dis = np.zeros((r, r))
  for i in range(r):
    for j in range(r):
      if i == j:
        continue
      if method == "lasso":
        m = linear_model.Lasso(alpha=0.1).fit(reps[i], reps[j])
        corr = np.abs(m.coef_).T
      else:
        d = reps[i].shape[1]
        corr = np.abs(scipy.stats.spearmanr(reps[i], reps[j]).statistic[
            :d, d:])
      sx = np.nanmean(np.nan_to_num(corr.max(0) ** 2 / corr.sum(0)))
      sy = np.nanmean(np.nan_to_num(corr.max(1) ** 2 / corr.sum(1)))
      dis[i, j] = (sx + sy) / 2
  return np.array([np.median(np.delete(dis[:, i], i)) for i in range(r)])


def beta_vae_classifier(x_tr, y_tr, x_ev, y_ev):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = linear_model.LogisticRegression().fit(x_tr, y_tr)
  return (float(np.mean(model.predict(x_tr) == y_tr)),
          float(model.score(x_ev, y_ev)))
