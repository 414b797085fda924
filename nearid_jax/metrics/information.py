"""Mutual information estimators used by MIG, modularity and InfoMEC.

All functions are pure and jittable; batch them over runs with `jax.vmap`.
Information is in nats.

* `histogram_discretize`: disentanglement_lib's histogram discretizer,
  `np.digitize(x, np.histogram(x, num_bins)[1][:-1])`, per latent: equal-width
  bins between the latent's min and max, the maximum falling in the last bin.
* `discrete_mutual_info`: `sklearn.metrics.mutual_info_score` for every
  (latent, factor) pair from one contingency matmul.
* `knn_mutual_info_cd`: `sklearn.feature_selection.mutual_info_classif`
  (Ross 2014 kNN estimator between a continuous variable and a discrete one)
  for one latent and one factor. sklearn breaks ties by adding Gaussian noise
  of relative size 1e-10; in float32 that noise vanishes, so we keep it as
  an explicit infinitesimal tie-breaker: points are ordered by (value,
  noise) and distances compared lexicographically as (|dx|, noise part).
  This reproduces sklearn on data with exact ties (e.g. discrete codes) in
  distribution, and exactly on tie-free data (up to float32 rounding).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma
import numpy as np

from nearid_jax.metrics import sorting


def histogram_discretize(z: jax.Array, num_bins: int = 20) -> jax.Array:
  """Equal-width bins per column, like disentanglement_lib.

  Args:
    z: [n, d] float array.
    num_bins: number of bins.

  Returns:
    [n, d] int32 bin indices in 0..num_bins-1 (constant columns: all in the
    last bin, as np.digitize gives).
  """
  lo = jnp.min(z, axis=0)
  hi = jnp.max(z, axis=0)
  # np.histogram's edges: linspace(lo, hi, num_bins + 1); keep the left ones.
  frac = jnp.arange(num_bins, dtype=z.dtype) / num_bins
  edges = lo[None, :] + frac[:, None] * (hi - lo)[None, :]  # [bins, d]
  # np.digitize(x, edges) = #edges <= x (edges increasing); minus 1 -> 0-based.
  counts = jnp.sum(z[:, None, :] >= edges[None, :, :], axis=1)
  return (jnp.maximum(counts, 1) - 1).astype(jnp.int32)


def _xlogy_ratio(p_xy, p_x, p_y):
  safe = jnp.where(p_xy > 0, p_xy, 1.0)
  return jnp.where(p_xy > 0,
                   p_xy * (jnp.log(safe) - jnp.log(jnp.where(p_xy > 0, p_x, 1.0))
                           - jnp.log(jnp.where(p_xy > 0, p_y, 1.0))), 0.0)


def discrete_mutual_info(codes: jax.Array, labels: jax.Array,
                         num_codes: int,
                         num_classes: int | tuple[int, ...]) -> jax.Array:
  """Mutual information between every discrete latent and every factor.

  Equals `sklearn.metrics.mutual_info_score(labels[:, k], codes[:, j])` for
  every pair (clipped at 0 like sklearn).

  The contingency counts of all pairs are one matmul of the latents' one-hot
  bins [n, d * B] with the factors' one-hot classes packed side by side
  [n, sum_k C_k] (not each padded to the largest class count, which for
  dSprites-like factors doubles the work).

  Args:
    codes: [n, d] int array in 0..num_codes-1.
    labels: [n, K] int array, factor k in 0..C_k-1.
    num_codes: number of latent bins (static).
    num_classes: the K class counts C_k (static), or one padded count for
      all factors.

  Returns:
    [d, K] float32 mutual information in nats.
  """
  n, d = codes.shape
  k = labels.shape[1]
  if isinstance(num_classes, int):
    num_classes = (num_classes,) * k
  oz = jax.nn.one_hot(codes, num_codes, dtype=jnp.float32).reshape(
      n, d * num_codes)
  of = jnp.concatenate([jax.nn.one_hot(labels[:, i], c, dtype=jnp.float32)
                        for i, c in enumerate(num_classes)], axis=1)
  counts = jnp.dot(oz.T, of, precision=jax.lax.Precision.HIGHEST).reshape(
      d, num_codes, -1)                                   # [d, B, sum C]
  p_xy = counts / n
  p_x = jnp.sum(oz, axis=0).reshape(d, num_codes, 1) / n
  p_y = jnp.sum(of, axis=0)[None, None, :] / n
  cell = jnp.sum(_xlogy_ratio(p_xy, p_x, p_y), axis=1)   # [d, sum C]
  factor_of_col = np.repeat(np.arange(k), num_classes)
  mi = jnp.dot(cell, jax.nn.one_hot(factor_of_col, k, dtype=jnp.float32),
               precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(mi, 0.0)


def discrete_entropy(labels: jax.Array, num_classes: int) -> jax.Array:
  """Entropy in nats of each factor column ([n, K] int) -> [K]."""
  p = jnp.mean(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32), axis=0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0),
                  axis=-1)


def _lex_less(p1, s1, p2, s2):
  return (p1 < p2) | ((p1 == p2) & (s1 < s2))


def sort_with_tiebreak(x: jax.Array, noise: jax.Array):
  """Global order of a latent by (value, noise): (order, sorted x, noise)."""
  order = sorting.lexsort2(noise, x)
  return order, x[order], noise[order]


def digamma_table(n: int) -> jax.Array:
  """[n + 1] float32 digamma(0..n) (entry 0 is -inf), gathered by the kNN MI."""
  return digamma(jnp.arange(n + 1, dtype=jnp.float32))


def knn_mutual_info_cd(x: jax.Array, noise: jax.Array, labels: jax.Array,
                       num_classes: int, n_neighbors: int = 10,
                       sorted_x=None, psi=None) -> jax.Array:
  """Ross (2014) kNN estimate of I(x; label), as sklearn computes it.

  For each point, r = distance to its k-th nearest neighbour among points of
  the same class (k = min(n_neighbors, class count - 1)); m = number of
  points of any class strictly closer than r (the point itself included);
  I = psi(N) + <psi(k)> - <psi(N_class)> - <psi(m)>, over points whose class
  has at least 2 members, clipped at 0.

  Cost, given the latent's global order (`sorted_x`, shared by all
  factors): one int32 sort (the class-major order), then per point a
  bisection for the k-th neighbour (log2(k + 1) steps: the k nearest
  same-class points are the a nearest on the left and k - a on the right,
  and a is the last count at which the a-th left distance is below the
  (k + 1 - a)-th right one) and one bisection for m, on the side away from
  the k-th neighbour only: between the point and the k-th neighbour every
  point is inside (distance grows monotonically along the global order), and
  on the other side the boundary lies between the last same-class point
  taken and the first not taken, usually a few positions apart. The loop
  runs until the widest such gap is closed.

  Args:
    x: [n] float continuous variable.
    noise: [n] float standard normal draws, the infinitesimal tie-breaker.
    labels: [n] int classes in 0..num_classes-1.
    num_classes: static upper bound on the classes.
    n_neighbors: k.
    sorted_x: optional `sort_with_tiebreak(x, noise)`.
    psi: optional `digamma_table(n)` (shared by all calls of one size).

  Returns:
    float32 scalar, nats.
  """
  n = x.shape[0]
  kk = n_neighbors
  if sorted_x is None:
    sorted_x = sort_with_tiebreak(x, noise)
  if psi is None:
    psi = digamma_table(n)
  gorder, gx, gn = sorted_x
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels].add(1)
  start = jnp.cumsum(counts) - counts
  # Everything below is indexed by class-major position j (the classes'
  # members contiguous, in the global (value, noise) order); g[j] is the
  # point's global position.
  gl = labels[gorder]
  g, cls = sorting.class_major_order(gl, num_classes)
  cx, cn = gx[g], gn[g]
  ccount = counts[cls]
  cstart = start[cls]
  cend = cstart + ccount
  ck = jnp.minimum(kk, ccount - 1)
  j = jnp.arange(n, dtype=jnp.int32)
  neg_inf = jnp.array(-jnp.inf, x.dtype)

  def side(t, direction):
    """Distance (value part, noise part) to the t-th same-class point on a
    side (t >= 0; t = 0 gives -inf, past the class's end +inf)."""
    q = j + direction * t
    valid = (q >= cstart) & (q < cend)
    qc = jnp.clip(q, 0, n - 1)
    if direction > 0:
      p, s = cx[qc] - cx, cn[qc] - cn
    else:
      p, s = cx - cx[qc], cn - cn[qc]
    p = jnp.where(valid, p, jnp.inf)
    s = jnp.where(valid, s, jnp.inf)
    return jnp.where(t == 0, neg_inf, p), jnp.where(t == 0, neg_inf, s)

  # a = number of the k nearest same-class points on the left: the largest
  # a in [0, k] with left(a) < right(k + 1 - a) (true at a = 0, monotone).
  def kth_step(_, carry):
    lo, hi = carry
    mid = (lo + hi) // 2
    ok = _lex_less(*side(mid, -1), *side(ck + 1 - mid, +1))
    go = hi - lo > 1
    return jnp.where(go & ok, mid, lo), jnp.where(go & ~ok, mid, hi)

  a, _ = jax.lax.fori_loop(0, max(1, int(kk).bit_length()), kth_step,
                           (jnp.zeros_like(j), ck + 1))
  b = ck - a
  lp, ls = side(a, -1)
  rp, rs = side(b, +1)
  kth_left = _lex_less(rp, rs, lp, ls)
  r_p = jnp.where(kth_left, lp, rp)
  r_s = jnp.where(kth_left, ls, rs)

  # m on the far side (away from the k-th neighbour), by bisection of the
  # offset from the point: `near` is inside (the last same-class point
  # taken there, or the point itself), `far` is not (the first one not
  # taken, or one past the array's end).
  d = jnp.where(kth_left, 1, -1).astype(jnp.int32)
  taken = jnp.where(kth_left, b, a)
  g_at = lambda q: g[jnp.clip(q, 0, n - 1)]
  near = jnp.abs(g_at(j + d * taken) - g)
  q_far = j + d * (taken + 1)
  far = jnp.where((q_far >= cstart) & (q_far < cend),
                  jnp.abs(g_at(q_far) - g),
                  jnp.where(d > 0, n - g, g + 1))
  # Points of single-member classes are left out of the estimate: no search.
  far = jnp.where(ck > 0, far, near + 1)

  def inside(off):
    q = g + d * off
    qc = jnp.clip(q, 0, n - 1)
    p = jnp.where(d > 0, gx[qc] - cx, cx - gx[qc])
    s = jnp.where(d > 0, gn[qc] - cn, cn - gn[qc])
    return _lex_less(p, s, r_p, r_s) & (q >= 0) & (q < n)

  def m_step(carry):
    lo, hi = carry
    mid = (lo + hi) // 2
    go = hi - lo > 1
    ok = inside(mid)
    return jnp.where(go & ok, mid, lo), jnp.where(go & ~ok, mid, hi)

  off, _ = jax.lax.while_loop(lambda c: jnp.any(c[1] - c[0] > 1), m_step,
                              (near, far))
  # The near side: every point strictly between the point and its k-th
  # neighbour (at global position g_k).
  g_k = jnp.where(kth_left, g_at(j - a), g_at(j + b))
  inc = (counts > 1).astype(jnp.int32)
  prefix = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(inc[gl])])
  lo_pos = jnp.where(kth_left, g_k + 1, g - off)
  hi_pos = jnp.where(kth_left, g + off + 1, g_k)
  m = prefix[hi_pos] - prefix[lo_pos]

  cinc = ccount > 1
  w = cinc.astype(jnp.float32)
  n_inc = jnp.sum(w)
  mean = lambda a: jnp.sum(jnp.where(cinc, a, 0.0)) / jnp.maximum(n_inc, 1.0)
  mi = (digamma(jnp.maximum(n_inc, 1.0)) + mean(psi[ck]) - mean(psi[ccount])
        - mean(psi[jnp.clip(m, 0, n)]))
  return jnp.where(n_inc > 0, jnp.maximum(mi, 0.0), 0.0)


def knn_mutual_info_matrix(z: jax.Array, noise: jax.Array,
                           labels: jax.Array, num_classes: int,
                           n_neighbors: int = 10) -> jax.Array:
  """[d, K] kNN mutual information of every latent with every factor.

  Args:
    z: [n, d] float codes.
    noise: [n, d] standard normal tie-breakers.
    labels: [n, K] int classes.
    num_classes: static (padded) number of classes.
    n_neighbors: k.
  """
  psi = digamma_table(z.shape[0])

  def per_latent(xe):
    x, e = xe
    srt = sort_with_tiebreak(x, e)
    return jax.vmap(lambda y: knn_mutual_info_cd(
        x, e, y, num_classes, n_neighbors, sorted_x=srt, psi=psi),
                    in_axes=1)(labels)

  # Latents one after another (factors batched): one latent's [K, n]
  # intermediates stay in cache, where all d latents' [d, K, n] did not
  # (1.6x faster on CPU for d = 20, K = 6, n = 10,000).
  return jax.lax.map(per_latent, (z.T, noise.T))
