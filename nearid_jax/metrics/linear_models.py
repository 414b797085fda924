"""The small estimators the metrics fit on device, with sklearn's objectives.

Each reproduces the optimisation problem of the scikit-learn estimator the
reference metric uses, so that the metric agrees with the reference up to
solver tolerance:

* `fit_logistic`: `LogisticRegression(solver="lbfgs")` (multinomial): mean
  sample-weighted cross-entropy + l2 / 2 * ||W||^2 (sklearn: l2 = 1 / (C *
  sum of sample weights); 0 for penalty=None), intercept unpenalised, L-BFGS
  from zero with max |gradient| <= tol or max_iter iterations
  (`lbfgs_minimize`; converged fits agree with sklearn's to solver
  tolerance, fits stopped by max_iter on separable data may differ
  slightly, as two L-BFGS runs with different line searches do).
* `fit_linear_svc_1d`: `LinearSVC(C, class_weight="balanced")` on a single
  feature (liblinear L2-regularised squared hinge, intercept regularised as a
  constant feature; one-vs-rest where the positive class is weighted by its
  class weight and the rest by C alone; two classes: one problem, both sides
  weighted). Solved exactly by Newton's method on sorted prefix sums, so each
  step costs O(log n).
* `fit_lasso_gram`: `Lasso(alpha)` on centred data by cyclic coordinate
  descent on the Gram matrix (1/(2n)) ||y - Xw||^2 + alpha ||w||_1.
* `roc_auc_macro`: `roc_auc_score` on one-vs-rest binarised labels, macro
  average, ties by average rank.

Everything is pure and jittable; batch with `jax.vmap`. Padded class slots
(factors have different numbers of classes) are masked out.

Why our own L-BFGS and not `optax.lbfgs` (with `optax.scale_by_zoom_linesearch`,
optax 0.2.8): `python -m benchmarks.lbfgs` fits the metrics' logistic
problems (l2 = 1/n, 4 runs under `jax.jit(jax.vmap(...))`, same stopping
rule) with both. Both reach sklearn's objective to within 1e-5 (optax's
strong-Wolfe search sometimes a little lower), but ours stays closer to
sklearn's fitted probabilities (max difference 2e-6 to 4e-3 vs optax's 1e-3
to 1e-2) and optax took 2.8-3.9x as long at (n, p, C) = (5000, 10, 10),
(5000, 10, 40), (10000, 20, 40) and 0.66x at (10000, 20, 10) (2 shared CPU
cores, under contention, ratio taken in the same run).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from nearid_jax.metrics import inputs
from nearid_jax.metrics import sorting

_HI = jax.lax.Precision.HIGHEST


def logistic_logits(x, w, b, class_mask):
  """[n, C] logits with absent classes at -inf."""
  logits = jnp.dot(x, w, precision=_HI) + b
  return jnp.where(class_mask, logits, -jnp.inf)


def lbfgs_minimize(fun, x0: jax.Array, max_iter: int = 100,
                   tol: float = 1e-4, memory: int = 10) -> jax.Array:
  """Minimises a smooth function of a flat vector by L-BFGS.

  A lean L-BFGS (two-loop recursion, `memory` pairs, Armijo backtracking
  from the unit step, curvature pairs kept only when s.y > 0) stopping when
  max |gradient| <= tol or after max_iter iterations, like scipy's L-BFGS-B
  with gtol = tol as sklearn calls it. Written with while loops over flat
  arrays so that it stays cheap under `jax.vmap` and compiles quickly.

  Args:
    fun: scalar function of [P] parameters.
    x0: [P] start.
    max_iter: iterations.
    tol: gradient tolerance (max norm).
    memory: stored curvature pairs.

  Returns:
    [P] parameters.
  """
  p = x0.shape[0]
  dtype = x0.dtype
  vg = jax.value_and_grad(fun)
  f0, g0 = vg(x0)

  def direction(g, s_hist, y_hist, rho, k):
    count = jnp.minimum(k, memory)

    def first(j, carry):
      q, alpha = carry
      idx = (k - 1 - j) % memory
      a = jnp.where(j < count, rho[idx] * jnp.dot(s_hist[idx], q), 0.0)
      return q - a * y_hist[idx], alpha.at[idx].set(a)

    q, alpha = jax.lax.fori_loop(0, memory, first,
                                 (g, jnp.zeros((memory,), dtype)),
                                 unroll=True)
    newest = (k - 1) % memory
    yy = jnp.dot(y_hist[newest], y_hist[newest])
    gamma = jnp.where((k > 0) & (yy > 0),
                      jnp.dot(s_hist[newest], y_hist[newest]) /
                      jnp.where(yy > 0, yy, 1.0), 1.0)
    r = gamma * q

    def second(j, r):
      idx = (k - count + j) % memory
      b = rho[idx] * jnp.dot(y_hist[idx], r)
      return jnp.where(j < count, r + s_hist[idx] * (alpha[idx] - b), r)

    return -jax.lax.fori_loop(0, memory, second, r, unroll=True)

  def cond(c):
    _, _, g, _, _, _, k, _ = c
    return (k < max_iter) & (jnp.max(jnp.abs(g)) > tol)

  def body(c):
    # k counts iterations (every one, so the loop always ends); m counts the
    # curvature pairs stored.
    x, f, g, s_hist, y_hist, rho, k, m = c
    d = direction(g, s_hist, y_hist, rho, m)
    # Without curvature pairs: move a unit distance along -g (as L-BFGS-B's
    # first step).
    d = jnp.where(m == 0, -g / jnp.maximum(jnp.linalg.norm(g), 1e-12), d)
    gtd = jnp.dot(g, d)
    d = jnp.where(gtd < 0, d, -g)
    gtd = jnp.where(gtd < 0, gtd, -jnp.dot(g, g))

    def ls_cond(s):
      t, fn, _, i = s
      return ~(fn <= f + 1e-4 * t * gtd) & (i < 40)

    def ls_body(s):
      t, _, _, i = s
      t = 0.5 * t
      fn, gn = vg(x + t * d)
      return t, fn, gn, i + 1

    f1, g1 = vg(x + d)
    t, fn, gn, _ = jax.lax.while_loop(
        ls_cond, ls_body, (jnp.array(1.0, dtype), f1, g1, jnp.array(0)))
    ok = fn <= f + 1e-4 * t * gtd
    x_new = jnp.where(ok, x + t * d, x)
    f_new = jnp.where(ok, fn, f)
    g_new = jnp.where(ok, gn, g)
    sv, yv = x_new - x, g_new - g
    sy = jnp.dot(sv, yv)
    keep = ok & (sy > 1e-10 * jnp.dot(yv, yv))
    idx = m % memory
    s_hist = jnp.where(keep, s_hist.at[idx].set(sv), s_hist)
    y_hist = jnp.where(keep, y_hist.at[idx].set(yv), y_hist)
    rho = jnp.where(keep, rho.at[idx].set(1.0 / jnp.where(keep, sy, 1.0)),
                    rho)
    # A failed line search, or a step that no longer moves x, ends the run
    # (no descent left at float precision).
    moved = ok & jnp.any(sv != 0)
    k_new = jnp.where(moved, k + 1, max_iter)
    return (x_new, f_new, g_new, s_hist, y_hist, rho, k_new,
            m + keep.astype(m.dtype))

  init = (x0, f0, g0, jnp.zeros((memory, p), dtype),
          jnp.zeros((memory, p), dtype), jnp.zeros((memory,), dtype),
          jnp.array(0), jnp.array(0))
  return jax.lax.while_loop(cond, body, init)[0]


def fit_logistic(x: jax.Array, y: jax.Array, class_mask: jax.Array,
                 sample_weight: jax.Array | None = None, l2: float = 0.0,
                 max_iter: int = 100, tol: float = 1e-4):
  """Multinomial logistic regression (sklearn lbfgs objective).

  Args:
    x: [n, p] float features.
    y: [n] int labels in 0..C-1.
    class_mask: [C] bool, classes that exist.
    sample_weight: [n] float or None (ones).
    l2: L2 strength on the coefficients (not the intercept), in units of the
      mean loss: sklearn's 1 / (C * sum(sample_weight)).
    max_iter: L-BFGS iterations.
    tol: stop when max |gradient| <= tol.

  Returns:
    (w [p, C], b [C]).
  """
  n, p = x.shape
  c = class_mask.shape[0]
  sw = jnp.ones((n,), x.dtype) if sample_weight is None else sample_weight
  sw = sw / jnp.sum(sw)

  def loss(flat):
    w = flat[:p * c].reshape(p, c)
    b = flat[p * c:]
    logp = jax.nn.log_softmax(logistic_logits(x, w, b, class_mask), axis=-1)
    ce = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return jnp.sum(sw * ce) + 0.5 * l2 * jnp.sum(w * w)

  flat = lbfgs_minimize(loss, jnp.zeros((p * c + c,), x.dtype),
                        max_iter=max_iter, tol=tol)
  return flat[:p * c].reshape(p, c), flat[p * c:]


def balanced_weights(y: jax.Array, class_mask: jax.Array) -> jax.Array:
  """sklearn class_weight='balanced' per sample: n / (C_present * n_c)."""
  n = y.shape[0]
  counts = jnp.zeros(class_mask.shape, jnp.float32).at[y].add(1.0)
  present = counts > 0
  cw = n / (jnp.sum(present) * jnp.where(present, counts, 1.0))
  return cw[y]


def _count_less(sorted_x, lo, hi, t):
  """#{i in [lo, hi): sorted_x[i] < t} for sorted segments (vectorised)."""
  steps = max(1, int(sorted_x.shape[0]).bit_length())

  def body(_, carry):
    a, b = carry  # invariant: x[a-1] < t (or a == lo), x[b] >= t (or b==hi)
    mid = (a + b) // 2
    go_right = (mid < b) & (sorted_x[jnp.clip(mid, 0, sorted_x.shape[0] - 1)]
                            < t)
    return jnp.where(go_right, mid + 1, a), jnp.where(go_right, b, mid)

  a, _ = jax.lax.fori_loop(0, steps + 1, body, (lo, hi))
  return a - lo


def fit_linear_svc_1d(x: jax.Array, y: jax.Array, class_mask: jax.Array,
                      c_reg: float = 0.01, num_iters: int = 20,
                      order: jax.Array | None = None):
  """LinearSVC(C=c_reg, class_weight='balanced') on one feature.

  Args:
    x: [n] float feature.
    y: [n] int labels in 0..C-1.
    class_mask: [C] bool slots that may hold classes (classes absent from y
      are ignored, as sklearn only sees the classes present).
    c_reg: sklearn's C.
    num_iters: maximum Newton iterations (each with step halving); the
      piecewise-quadratic objective usually converges in under ten.
    order: optional argsort of x (shared when fitting many factors).

  Returns:
    (w [C], b [C], shift, binary): decision_c(x) = w_c * (x - shift) + b_c;
    for two present classes `binary` is True and only the slot of the
    second (larger) class holds the decision (positive -> that class).
  """
  n = x.shape[0]
  c = class_mask.shape[0]
  counts = jnp.zeros((c,), x.dtype).at[y].add(1.0)
  present = (counts > 0) & class_mask
  n_present = jnp.sum(present)
  binary = n_present == 2
  cw = jnp.where(present, n / (n_present * jnp.where(present, counts, 1.0)),
                 0.0)
  # Shifted feature for conditioning; regulariser rewritten accordingly.
  mu = jnp.mean(x)
  xs = x - mu

  feats = lambda v: jnp.stack([jnp.ones_like(v), v, v * v], -1)
  gorder = sorting.stable_argsort(xs) if order is None else order
  gx = xs[gorder]
  gpre = jnp.concatenate([jnp.zeros((1, 3), x.dtype),
                          jnp.cumsum(feats(gx), axis=0)])
  # Class-major order, sorted by x inside each class.
  corder, icounts, start = inputs.class_major_order(y, c, gorder)
  cx = xs[corder]
  cpre = jnp.concatenate([jnp.zeros((1, 3), x.dtype),
                          jnp.cumsum(feats(cx), axis=0)])
  end = start + icounts
  idx_sorted = jnp.argsort(jnp.where(present, jnp.arange(c), c))
  c0 = idx_sorted[0]  # smallest present class: the negative one if binary

  def block_sum(k, t, below):
    """Stats of class k members with x < t (below) or x >= t."""
    cnt = _count_less(cx, start[k], end[k], t)
    cut = cpre[start[k] + cnt]
    return jnp.where(below, cut - cpre[start[k]], cpre[end[k]] - cut)

  def all_sum(t, below):
    cnt = _count_less(gx, jnp.array(0), jnp.array(n), t)
    cut = gpre[cnt]
    return jnp.where(below, cut, gpre[n] - cut)

  def active_stats(k, w, b):
    """(pos stats, neg stats) over the active (margin-violating) points."""
    big = jnp.array(jnp.inf, x.dtype)
    safe_w = jnp.where(w == 0, 1.0, w)
    # Positive side active where w x + b < 1.
    tp = (1.0 - b) / safe_w
    tp = jnp.where(w == 0, jnp.where(b < 1.0, big, -big), tp)
    pos_below = w >= 0
    # Negative side active where w x + b > -1.
    tn = (-1.0 - b) / safe_w
    tn = jnp.where(w == 0, jnp.where(b > -1.0, -big, big), tn)
    neg_below = w < 0
    pos = block_sum(k, tp, pos_below)
    neg_bin = block_sum(c0, tn, neg_below)
    neg_ovr = all_sum(tn, neg_below) - block_sum(k, tn, neg_below)
    neg = jnp.where(binary, neg_bin, neg_ovr)
    return pos, neg

  def objective_parts(k, theta):
    w, b = theta[0], theta[1]
    a_pos = c_reg * cw[k]
    a_neg = jnp.where(binary, c_reg * cw[c0], c_reg)
    pos, neg = active_stats(k, w, b)
    m0p, m1p, m2p = pos[0], pos[1], pos[2]
    m0n, m1n, m2n = neg[0], neg[1], neg[2]
    bb = b - mu * w  # the unshifted intercept is what is regularised
    f = (0.5 * (w * w + bb * bb)
         + a_pos * ((1 - b) ** 2 * m0p - 2 * (1 - b) * w * m1p + w * w * m2p)
         + a_neg * ((1 + b) ** 2 * m0n + 2 * (1 + b) * w * m1n + w * w * m2n))
    gw = (w - mu * bb + a_pos * (-2 * ((1 - b) * m1p - w * m2p))
          + a_neg * (2 * ((1 + b) * m1n + w * m2n)))
    gb = (bb + a_pos * (-2 * ((1 - b) * m0p - w * m1p))
          + a_neg * (2 * ((1 + b) * m0n + w * m1n)))
    hww = 1 + mu * mu + 2 * a_pos * m2p + 2 * a_neg * m2n
    hwb = -mu + 2 * a_pos * m1p + 2 * a_neg * m1n
    hbb = 1 + 2 * a_pos * m0p + 2 * a_neg * m0n
    return f, jnp.stack([gw, gb]), (hww, hwb, hbb)

  def solve_one(k):
    def newton(carry):
      theta, _, it = carry
      f, g, (hww, hwb, hbb) = objective_parts(k, theta)
      det = hww * hbb - hwb * hwb
      step = -jnp.stack([hbb * g[0] - hwb * g[1],
                         -hwb * g[0] + hww * g[1]]) / det

      def halve_cond(s):
        _, fn, i = s
        return (fn > f) & (i < 30)

      def halve_body(s):
        t, _, i = s
        t = 0.5 * t
        return t, objective_parts(k, theta + t * step)[0], i + 1

      t, fn, _ = jax.lax.while_loop(
          halve_cond, halve_body,
          (jnp.array(1.0, x.dtype), objective_parts(k, theta + step)[0],
           jnp.array(0)))
      moved = jnp.where(fn <= f, t * step, 0.0)
      return theta + moved, jnp.max(jnp.abs(moved)), it + 1

    def not_done(carry):
      theta, size, it = carry
      return (it < num_iters) & (size > 1e-7 * (1.0 + jnp.max(jnp.abs(
          theta))))

    theta, _, _ = jax.lax.while_loop(
        not_done, newton,
        (jnp.zeros((2,), x.dtype), jnp.array(jnp.inf, x.dtype),
         jnp.array(0)))
    return theta

  theta = jax.vmap(solve_one)(jnp.arange(c))
  w = jnp.where(present, theta[:, 0], 0.0)
  b = jnp.where(present, theta[:, 1], -jnp.inf)
  return w, b, mu, binary, present


def predict_linear_svc_1d(params, x: jax.Array) -> jax.Array:
  """Class predictions of `fit_linear_svc_1d` parameters on [n] features."""
  w, b, mu, binary, present = params
  c = w.shape[0]
  dec = w[None, :] * (x - mu)[:, None] + b[None, :]     # [n, C]
  multi = jnp.argmax(dec, axis=-1)
  order = jnp.argsort(jnp.where(present, jnp.arange(c), c))
  c0, c1 = order[0], order[1]
  bin_pred = jnp.where(dec[:, c1] > 0, c1, c0)
  return jnp.where(binary, bin_pred, multi)


def fit_lasso_gram(gram: jax.Array, xty: jax.Array, alpha: float,
                   max_sweeps: int = 1000, tol: float = 1e-6) -> jax.Array:
  """Lasso coefficients by cyclic coordinate descent on the Gram matrix.

  Minimises (1/2) w^T G w - w^T c + alpha ||w||_1 per output column, which is
  sklearn's Lasso objective with G = X^T X / n, c = X^T y / n on centred
  data. Columns with G_jj = 0 keep w_j = 0 (as sklearn skips them).

  Args:
    gram: [p, p] float.
    xty: [p, q] float.
    alpha: L1 strength.
    max_sweeps: maximum coordinate sweeps.
    tol: stop when the largest coefficient change in a sweep is below tol
      times the largest coefficient (or tol when all are zero).

  Returns:
    [p, q] coefficients.
  """
  p, q = xty.shape
  diag = jnp.diag(gram)

  def sweep(w):
    def coord(j, carry):
      w, delta = carry
      rho = xty[j] - jnp.dot(gram[j], w, precision=_HI) + diag[j] * w[j]
      new = jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - alpha, 0.0)
      new = jnp.where(diag[j] > 0, new / jnp.where(diag[j] > 0, diag[j], 1.0),
                      0.0)
      delta = jnp.maximum(delta, jnp.max(jnp.abs(new - w[j])))
      return w.at[j].set(new), delta

    return jax.lax.fori_loop(0, p, coord, (w, jnp.zeros((), w.dtype)))

  def cond(carry):
    w, delta, it = carry
    return (it < max_sweeps) & (delta > tol * jnp.maximum(jnp.max(jnp.abs(w)),
                                                           1.0))

  def body(carry):
    w, _, it = carry
    w, delta = sweep(w)
    return w, delta, it + 1

  w, _, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros((p, q), xty.dtype),
                   jnp.array(jnp.inf, xty.dtype), jnp.array(0)))
  return w


def average_ranks_x2(x: jax.Array) -> jax.Array:
  """Twice the 1-based average ranks of [n] values (ties share), as int32.

  A tie group occupying sorted positions lo..hi-1 has mean 1-based rank
  (lo + 1 + hi) / 2.
  """
  key = sorting.sortable_int32(x)
  lo, hi = sorting.rank_bounds(jnp.sort(key)[None], jnp.zeros(key.shape, jnp.int32),
                        key)
  return lo + hi + 1


def roc_auc_macro(scores: jax.Array, y: jax.Array,
                  class_mask: jax.Array) -> jax.Array:
  """Macro one-vs-rest ROC-AUC over the classes present in y.

  AUC_c = (sum of the average ranks of class c's rows in column c - n_c (n_c
  + 1) / 2) / (n_c (n - n_c)) (Mann-Whitney; ties by average rank, as
  sklearn's roc_auc_score). Each row is ranked only in its own class's
  column: C sorted columns and one bisection per row, not C argsorts.

  Args:
    scores: [n, C] predicted class scores (e.g. probabilities).
    y: [n] int labels.
    class_mask: [C] bool slots that may hold classes.

  Returns:
    Scalar; classes with no positive or no negative row are left out of the
    average (sklearn would refuse them).
  """
  n, c = scores.shape
  keys = sorting.sortable_int32(scores)
  own = jnp.take_along_axis(keys, y[:, None], axis=1)[:, 0]
  lo, hi = sorting.rank_bounds(jnp.sort(keys.T, axis=-1), y, own)
  n_pos = jnp.zeros((c,), jnp.int32).at[y].add(1)
  n_neg = n - n_pos
  # Twice the Mann-Whitney U, summed as rank2 - (n_c + 1) per positive row
  # (= sum of rank2 - n_c (n_c + 1)), which keeps the int32 partial sums
  # small.
  u2 = jnp.zeros((c,), jnp.int32).at[y].add(lo + hi + 1 - (n_pos[y] + 1))
  auc = u2.astype(jnp.float32) / (
      2.0 * jnp.maximum(n_pos, 1).astype(jnp.float32)
      * jnp.maximum(n_neg, 1).astype(jnp.float32))
  ok = (n_pos > 0) & (n_neg > 0) & class_mask
  return jnp.sum(jnp.where(ok, auc, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
