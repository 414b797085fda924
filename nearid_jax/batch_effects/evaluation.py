"""How well features carry biology across batches, and how sparsely.

Wells have a class (gene knock-out; one class is the control) and a batch
(experiment, or plate). For features f [n, k] of one run:

* **Held-out gene AUROC** (`heldout_auroc`, higher is better). Leave one
  batch out: for every held-out batch b and every non-control class c, an
  L1-regularised binary logistic regression separates class c's wells from
  the negatives ("control": the control wells, as the paper's "knock-out
  vs controls"; "rest": every other well, one-vs-rest) using the wells of
  the OTHER batches only; its scores on batch b's class-c wells and
  negatives give a ROC-AUC (Mann-Whitney, ties counted 1/2, as
  `sklearn.metrics.roc_auc_score`). Features are standardised with the
  training wells' mean and standard deviation; positives and negatives
  weigh half each (sklearn's class_weight="balanced"); the objective is
  sum_i w_i CE_i + l1 ||coef||_1 with sum_i w_i = 1 (sklearn
  `LogisticRegression(penalty="l1", C=1/l1)` with these sample weights),
  solved by FISTA. The classifier is sparse on purpose: an L2 (or
  unpenalised) logistic regression is invariant to rotations of whitened
  features, so it would score PCA, PCA+ICA and PCA+Rand identically; the
  paper's differences between them require a classifier that prefers
  axis-aligned features. Result [B, C], NaN for the control class and
  where batch b lacks positives or negatives.
* **Batch AUROC** (`batch_auroc`, lower is better): how well the batch is
  predicted from the features. `folds`-fold cross-validation over wells
  (random folds), one L1 multinomial logistic regression
  (`nearid_jax.metrics.dci_score.fit_l1_logistic`, same l1) per fold,
  macro one-vs-rest ROC-AUC of its probabilities on the held-out fold
  (`metrics.linear_models.roc_auc_macro`), averaged over folds. 0.5 means
  no batch information.
* **Hoyer sparsity** (`hoyer_sparsity`): features standardised per column
  over wells, then for each well's feature vector v in R^k
  H(v) = (sqrt(k) - |v|_1 / |v|_2) / (sqrt(k) - 1) (Hoyer 2004; 1 for
  one non-zero entry, 0 for equal magnitudes), averaged over wells.
* **Signal concentration** (`signal_concentration`). The paper reports the
  "concentration of biological variation in the top 25% of features" but
  not its formula; ours: class c's within-batch effect on feature j is
  e_cj = mean over batches b holding both class c and controls of
  (mean of class c in b - mean of controls in b); its signal s_cj =
  e_cj^2 / v_j with v_j the pooled within-batch variance of the controls;
  with K = ceil(q k) features (q = top_fraction) and S the sum of the K
  largest s_cj over the total, the concentration is (S - K/k) / (1 - K/k):
  0 when the signal is spread evenly over the features, 1 when it lies in
  at most K of them. Per-feature scaling does not change it; rotations do.
  Result [C], NaN for the control and for classes sharing no batch with
  controls.

Classes and batches are int codes (0..C-1, 0..B-1; `num_classes`,
`num_batches` static). Every function is jittable and takes one run; the
`*_runs` forms map a stack [R, n, k] over runs
(`nearid_jax.parallel.map_runs`).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from nearid_jax import parallel
from nearid_jax.metrics import dci_score
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models
from nearid_jax.metrics import sorting

NEGATIVES = ("control", "rest")
_HI = jax.lax.Precision.HIGHEST
_INT32_MAX = 2 ** 31 - 1


def hoyer(v: jax.Array, axis: int = -1) -> jax.Array:
  """Hoyer sparsity (sqrt(k) - |v|_1/|v|_2) / (sqrt(k) - 1) along `axis`.

  A zero vector gets 0. Needs k >= 2.

  Examples:
    >>> import jax.numpy as jnp
    >>> hoyer(jnp.array([[0., 3., 0., 0.], [1., -1., 1., -1.]])).tolist()
    [1.0, 0.0]
  """
  k = v.shape[axis]
  l1 = jnp.sum(jnp.abs(v), axis=axis)
  l2 = jnp.sqrt(jnp.sum(v * v, axis=axis))
  ratio = jnp.where(l2 > 0, l1 / jnp.where(l2 > 0, l2, 1.0), math.sqrt(k))
  return (math.sqrt(k) - ratio) / (math.sqrt(k) - 1.0)


def hoyer_sparsity(features: jax.Array) -> jax.Array:
  """Mean Hoyer sparsity of the wells' standardised features [.., n, k]."""
  z, _, _ = inputs.standardize(features)
  return hoyer(z).mean(-1)


def _onehot(codes, size, dtype=jnp.float32):
  return (codes[:, None] == jnp.arange(size)[None, :]).astype(dtype)


def signal_concentration(features: jax.Array, labels: jax.Array,
                         batches: jax.Array, *, control: int,
                         num_classes: int, num_batches: int,
                         top_fraction: float = 0.25) -> jax.Array:
  """Share of each class's within-batch signal in its top features [C].

  See the module doc for the definition.

  Args:
    features: [n, k] one run's features.
    labels: [n] int classes; `control` is the control class.
    batches: [n] int batches.
    control: the control class code.
    num_classes, num_batches: C and B (static).
    top_fraction: q; K = ceil(q k) top features.

  Returns:
    [C] concentration in [0, 1], NaN for the control class and for
    classes that share no batch with controls.
  """
  n, k = features.shape
  cell = batches * num_classes + labels
  oh = _onehot(cell, num_batches * num_classes)
  counts = oh.sum(0).reshape(num_batches, num_classes)
  sums = jnp.dot(oh.T, features, precision=_HI).reshape(
      num_batches, num_classes, k)
  means = sums / jnp.maximum(counts, 1.0)[..., None]
  ctrl_mean = means[:, control]                           # [B, k]
  both = (counts > 0) & (counts[:, control:control + 1] > 0)
  diff = jnp.where(both[..., None], means - ctrl_mean[:, None], 0.0)
  n_b = both.sum(0)                                       # [C]
  effect = diff.sum(0) / jnp.maximum(n_b, 1)[:, None]     # [C, k]
  is_ctrl = labels == control
  resid = jnp.where(is_ctrl[:, None], features - ctrl_mean[batches], 0.0)
  dof = jnp.maximum(is_ctrl.sum() - (counts[:, control] > 0).sum(), 1)
  var = jnp.sum(resid * resid, 0) / dof
  signal = effect ** 2 / jnp.where(var > 0, var, 1.0)
  top = max(1, math.ceil(top_fraction * k))
  share = (jax.lax.top_k(signal, top)[0].sum(-1)
           / jnp.maximum(signal.sum(-1), 1e-30))
  base = top / k
  conc = (share - base) / (1.0 - base) if top < k else jnp.ones_like(share)
  ok = (n_b > 0) & (jnp.arange(num_classes) != control)
  return jnp.where(ok, conc, jnp.nan)


def fit_l1_logistic_columns(x: jax.Array, y: jax.Array, weight: jax.Array,
                            l1: float, num_iters: int = 300):
  """Binary L1 logistic regressions sharing one design, one per column.

  Minimises, for each column c, sum_i weight[i, c] CE(y[i, c], x_i w_c +
  b_c) + l1 ||w_c||_1 (intercept unpenalised) by FISTA with step 1 / L_c,
  L_c = lambda_max(sum_i weight[i, c] [x_i, 1][x_i, 1]^T) / 4. With
  sum_i weight[i, c] = 1 this is sklearn's `LogisticRegression(
  penalty="l1", C=1/l1)` fitted with sample_weight = weight[:, c].
  (`metrics.dci_score.fit_l1_logistic` is the multinomial, unweighted
  form; here every column has its own row weights and step, so that all
  genes of a held-out fold are fitted in one product with the design.)

  Args:
    x: [n, p] features.
    y: [n, C] bool or 0/1 targets.
    weight: [n, C] non-negative row weights (0 leaves a row out).
    l1: L1 strength.
    num_iters: FISTA iterations.

  Returns:
    (coef [p, C], intercept [C]).
  """
  n, p = x.shape
  xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
  y = y.astype(x.dtype)
  gram = jnp.einsum("nc,ni,nj->cij", weight, xa, xa, precision=_HI)
  lip = 0.25 * jnp.linalg.eigvalsh(gram)[:, -1]
  step = 1.0 / jnp.maximum(lip, 1e-6)                     # [C]

  def grad(theta):
    resid = weight * (jax.nn.sigmoid(jnp.dot(xa, theta, precision=_HI)) - y)
    return jnp.dot(xa.T, resid, precision=_HI)

  def prox(theta):
    w = theta[:p]
    w = jnp.sign(w) * jnp.maximum(jnp.abs(w) - step * l1, 0.0)
    return jnp.concatenate([w, theta[p:]], axis=0)

  def body(_, carry):
    theta, v, t = carry
    new = prox(v - step * grad(v))
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    return new, new + ((t - 1.0) / t_new) * (new - theta), t_new

  theta0 = jnp.zeros((p + 1, y.shape[1]), x.dtype)
  theta, _, _ = jax.lax.fori_loop(0, num_iters, body,
                                  (theta0, theta0, jnp.array(1.0, x.dtype)))
  return theta[:p], theta[p]


def masked_auroc(scores: jax.Array, pos: jax.Array, neg: jax.Array
                 ) -> jax.Array:
  """ROC-AUC of each column's positives against its negatives.

  AUC_c = sum over positives i of (#{neg < s_i} + #{neg <= s_i}) / 2,
  divided by n_pos n_neg: `roc_auc_score` restricted to the rows with
  pos | neg (a row in neither is ignored).

  Args:
    scores: [n, C] float scores (finite).
    pos, neg: [n, C] bool masks (disjoint per column).

  Returns:
    [C]; NaN where a column has no positive or no negative.
  """
  n, c = scores.shape
  keys = sorting.sortable_int32(scores)
  # Rows that are not negatives sort above every real key, so the
  # bisection never counts them.
  neg_sorted = jnp.sort(jnp.where(neg, keys, _INT32_MAX).T, axis=-1)
  col = jnp.broadcast_to(jnp.arange(c, dtype=jnp.int32), (n, c))
  lo, hi = sorting.rank_bounds(neg_sorted, col.reshape(-1), keys.reshape(-1))
  half = 0.5 * (lo + hi).astype(jnp.float32).reshape(n, c)
  u = jnp.sum(jnp.where(pos, half, 0.0), axis=0)
  n_pos = pos.sum(0).astype(jnp.float32)
  n_neg = neg.sum(0).astype(jnp.float32)
  ok = (n_pos > 0) & (n_neg > 0)
  return jnp.where(ok, u / jnp.where(ok, n_pos * n_neg, 1.0), jnp.nan)


def _weighted_standardize(x, w):
  """x standardised with the mean and std of the rows weighted by w [n]."""
  w = w / jnp.maximum(w.sum(), 1e-30)
  mean = jnp.dot(w, x, precision=_HI)
  var = jnp.dot(w, (x - mean) ** 2, precision=_HI)
  std = jnp.sqrt(var)
  return (x - mean) / jnp.where(std > 0, std, 1.0)


def heldout_auroc(features: jax.Array, labels: jax.Array,
                  batches: jax.Array, *, control: int, num_classes: int,
                  num_batches: int, negatives: str = "control",
                  l1: float = 0.01, num_iters: int = 300) -> jax.Array:
  """Leave-one-batch-out ROC-AUC of every class, [B, C] (module doc).

  Args:
    features: [n, k] one run's features.
    labels: [n] int classes.
    batches: [n] int batches.
    control: the control class code.
    num_classes, num_batches: C and B (static).
    negatives: "control" (class vs control wells) or "rest" (vs all other
      wells).
    l1: L1 strength (in units of the balanced mean loss).
    num_iters: FISTA iterations.

  Returns:
    [B, C] AUROC on held-out batch b; NaN for the control class, for a
    class with no training positives, and where batch b lacks positives or
    negatives.
  """
  if negatives not in NEGATIVES:
    raise ValueError(f"negatives must be one of {NEGATIVES}, got "
                     f"{negatives!r}.")
  pos = labels[:, None] == jnp.arange(num_classes)[None, :]      # [n, C]
  if negatives == "control":
    neg = jnp.broadcast_to((labels == control)[:, None], pos.shape)
  else:
    neg = ~pos
  neg = neg & ~pos
  not_ctrl = jnp.arange(num_classes) != control

  def fold(b):
    train = batches != b
    x = _weighted_standardize(features, train.astype(features.dtype))
    p_tr = pos & train[:, None]
    n_tr = neg & train[:, None]
    cnt_p = p_tr.sum(0)
    cnt_n = n_tr.sum(0)
    w = (0.5 * p_tr / jnp.maximum(cnt_p, 1)
         + 0.5 * n_tr / jnp.maximum(cnt_n, 1)).astype(features.dtype)
    coef, icpt = fit_l1_logistic_columns(x, p_tr, w, l1, num_iters)
    scores = jnp.dot(x, coef, precision=_HI) + icpt
    auc = masked_auroc(scores, pos & ~train[:, None], neg & ~train[:, None])
    return jnp.where(not_ctrl & (cnt_p > 0) & (cnt_n > 0), auc, jnp.nan)

  return jax.lax.map(fold, jnp.arange(num_batches))


def batch_auroc(features: jax.Array, batches: jax.Array, key: jax.Array, *,
                num_batches: int, folds: int = 5, l1: float = 0.01,
                num_iters: int = 300) -> jax.Array:
  """Cross-validated macro ROC-AUC of predicting the batch [] (module doc).

  Rows are split into `folds` random folds of n // folds rows (the
  remainder always trains).
  """
  n = features.shape[0]
  if not 2 <= folds <= n:
    raise ValueError(f"folds must be in [2, n={n}], got {folds}.")
  perm = jax.random.permutation(key, n)
  m = n // folds
  cmask = jnp.ones((num_batches,), bool)

  def fold(f):
    # Fold f's rows first: one program serves every fold.
    rows = jnp.roll(perm, -f * m)
    te, tr = rows[:m], rows[m:]
    x_tr, mean, std = inputs.standardize(features[tr])
    x_te, _, _ = inputs.standardize(features[te], mean, std)
    w, b = dci_score.fit_l1_logistic(x_tr, batches[tr], cmask, l1, num_iters)
    prob = jax.nn.softmax(linear_models.logistic_logits(x_te, w, b, cmask),
                          axis=-1)
    return linear_models.roc_auc_macro(prob, batches[te], cmask)

  return jnp.mean(jax.lax.map(fold, jnp.arange(folds)))


# ---------------------------------------------------------------------------
# Stacks of runs: [R, n, k] features, labels and batches shared.


@functools.partial(jax.jit, static_argnames=(
    "control", "num_classes", "num_batches", "negatives", "num_iters"))
def heldout_auroc_runs(features, labels, batches, *, control, num_classes,
                       num_batches, negatives="control", l1=0.01,
                       num_iters=300):
  """`heldout_auroc` of each run: [R, B, C]."""
  return parallel.map_runs(
      lambda f, y, b, l: heldout_auroc(
          f, y, b, control=control, num_classes=num_classes,
          num_batches=num_batches, negatives=negatives, l1=l, num_iters=
          num_iters), features, labels, batches, l1,
      in_axes=(0, None, None, None))


@functools.partial(jax.jit, static_argnames=("num_batches", "folds",
                                             "num_iters"))
def batch_auroc_runs(features, batches, keys, *, num_batches, folds=5,
                     l1=0.01, num_iters=300):
  """`batch_auroc` of each run ([R] keys): [R]."""
  return parallel.map_runs(
      lambda f, k, b, l: batch_auroc(f, b, k, num_batches=num_batches,
                                     folds=folds, l1=l, num_iters=num_iters),
      features, keys, batches, l1, in_axes=(0, 0, None, None))


@functools.partial(jax.jit, static_argnames=(
    "control", "num_classes", "num_batches", "top_fraction"))
def sparsity_runs(features, labels, batches, *, control, num_classes,
                  num_batches, top_fraction=0.25):
  """(Hoyer sparsity [R], signal concentration [R, C]) of each run."""
  def one(f, y, b):
    return hoyer_sparsity(f), signal_concentration(
        f, y, b, control=control, num_classes=num_classes,
        num_batches=num_batches, top_fraction=top_fraction)
  return parallel.map_runs(one, features, labels, batches,
                           in_axes=(0, None, None))
