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

from nearid_jax.metrics import inputs


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
                         num_codes: int, num_classes: int) -> jax.Array:
  """Mutual information between every discrete latent and every factor.

  Equals `sklearn.metrics.mutual_info_score(labels[:, k], codes[:, j])` for
  every pair (clipped at 0 like sklearn).

  Args:
    codes: [n, d] int array in 0..num_codes-1.
    labels: [n, K] int array in 0..num_classes-1 (pad unused classes).
    num_codes: number of latent bins (static).
    num_classes: padded number of factor classes (static).

  Returns:
    [d, K] float32 mutual information in nats.
  """
  n = codes.shape[0]
  oz = jax.nn.one_hot(codes, num_codes, dtype=jnp.float32)   # [n, d, B]
  of = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [n, K, C]
  counts = jnp.einsum("ndb,nkc->dkbc", oz, of,
                      precision=jax.lax.Precision.HIGHEST)
  p_xy = counts / n
  p_x = jnp.sum(p_xy, axis=3, keepdims=True)
  p_y = jnp.sum(p_xy, axis=2, keepdims=True)
  mi = jnp.sum(_xlogy_ratio(p_xy, p_x, p_y), axis=(2, 3))
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
  order = jnp.lexsort((noise, x))
  return order, x[order], noise[order]


def knn_mutual_info_cd(x: jax.Array, noise: jax.Array, labels: jax.Array,
                       num_classes: int, n_neighbors: int = 10,
                       sorted_x=None) -> jax.Array:
  """Ross (2014) kNN estimate of I(x; label), as sklearn computes it.

  For each point, r = distance to its k-th nearest neighbour among points of
  the same class (k = min(n_neighbors, class count - 1)); m = number of
  points of any class strictly closer than r (the point itself included);
  I = psi(N) + <psi(k)> - <psi(N_class)> - <psi(m)>, over points whose class
  has at least 2 members, clipped at 0.

  Cost: one stable integer sort plus O(k + log n) vectorised gathers per
  point, given the latent's global order (`sorted_x`, shared by all factors).

  Args:
    x: [n] float continuous variable.
    noise: [n] float standard normal draws, the infinitesimal tie-breaker.
    labels: [n] int classes in 0..num_classes-1.
    num_classes: static upper bound on the classes.
    n_neighbors: k.
    sorted_x: optional `sort_with_tiebreak(x, noise)`.

  Returns:
    float32 scalar, nats.
  """
  n = x.shape[0]
  kk = n_neighbors
  if sorted_x is None:
    sorted_x = sort_with_tiebreak(x, noise)
  gorder, gx, gn = sorted_x
  gl = labels[gorder]
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels].add(1)
  gcount = counts[gl]
  ginc = gcount > 1
  gk = jnp.minimum(kk, gcount - 1)

  # Class-major order that keeps the (value, noise) order inside each class:
  # a class's members are then contiguous, neighbours adjacent.
  corder, _, start = inputs.class_major_order(gl, num_classes)
  cx, cn = gx[corder], gn[corder]
  cstart = start[gl[corder]]
  cend = cstart + gcount[corder]
  idx = jnp.arange(n)

  # k-th nearest same-class neighbour: merge the left run (distances growing
  # leftwards) with the right run (growing rightwards), k steps.
  def cand(pos, direction):
    valid = (pos >= cstart) & (pos < cend)
    q = jnp.clip(pos, 0, n - 1)
    if direction > 0:
      p, s = cx[q] - cx, cn[q] - cn
    else:
      p, s = cx - cx[q], cn - cn[q]
    return jnp.where(valid, p, jnp.inf), jnp.where(valid, s, jnp.inf)

  ck = gk[corder]

  def merge_step(t, carry):
    lp, rp, r_p, r_s = carry
    lpv, lsv = cand(lp, -1)
    rpv, rsv = cand(rp, +1)
    take_left = _lex_less(lpv, lsv, rpv, rsv)
    p = jnp.where(take_left, lpv, rpv)
    s = jnp.where(take_left, lsv, rsv)
    hit = ck == t + 1
    r_p = jnp.where(hit, p, r_p)
    r_s = jnp.where(hit, s, r_s)
    return (jnp.where(take_left, lp - 1, lp), jnp.where(take_left, rp, rp + 1),
            r_p, r_s)

  zeros = jnp.zeros((n,), x.dtype)
  _, _, r_p_c, r_s_c = jax.lax.fori_loop(
      0, kk, merge_step, (idx - 1, idx + 1, zeros, zeros))
  rp = zeros.at[corder].set(r_p_c)     # back to global order
  rs = zeros.at[corder].set(r_s_c)

  # m: included points strictly inside the radius. Distance grows
  # monotonically away from a point in the global order: binary search each
  # side for the number of inside positions.
  prefix = jnp.concatenate([jnp.zeros((1,), jnp.int32),
                            jnp.cumsum(ginc.astype(jnp.int32))])
  steps = max(1, int(n).bit_length()) + 1

  def inside(q, direction):
    qc = jnp.clip(q, 0, n - 1)
    if direction > 0:
      p, s = gx[qc] - gx, gn[qc] - gn
    else:
      p, s = gx - gx[qc], gn - gn[qc]
    return _lex_less(p, s, rp, rs) & (q >= 0) & (q < n)

  def search(direction):
    def body(_, carry):
      lo, hi = carry  # lo positions are inside, hi is not
      mid = (lo + hi) // 2
      ok = inside(idx + direction * mid, direction) | (mid == 0)
      return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(
        0, steps, body, (jnp.zeros((n,), jnp.int32),
                         jnp.full((n,), n, jnp.int32)))
    return lo

  t_right = search(+1)
  t_left = search(-1)
  m = prefix[idx + t_right + 1] - prefix[idx - t_left]

  w = ginc.astype(jnp.float32)
  n_inc = jnp.sum(w)
  safe = lambda a: jnp.where(ginc, a, 1).astype(jnp.float32)
  mean = lambda a: jnp.sum(w * a) / jnp.maximum(n_inc, 1.0)
  mi = (digamma(jnp.maximum(n_inc, 1.0)) + mean(digamma(safe(gk)))
        - mean(digamma(safe(gcount))) - mean(digamma(safe(m))))
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
  def per_latent(x, e):
    srt = sort_with_tiebreak(x, e)
    return jax.vmap(lambda y: knn_mutual_info_cd(
        x, e, y, num_classes, n_neighbors, sorted_x=srt), in_axes=1)(labels)

  return jax.vmap(per_latent, in_axes=(1, 1))(z, noise)
