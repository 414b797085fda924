"""BetaVAE and FactorVAE scores: the disentanglement_lib protocols, on device.

Both metrics intervene on the data: they need observations drawn with one
factor held fixed. They take

* `encode_fn(obs) -> z`: a JAX-traceable function mapping [m, ...]
  observations to codes [m, d] (one run) or [R, m, d] (R runs scored on the
  same observations);
* `sample_fn`: either a function `sample_fn(key, factor, values) -> obs`
  that draws m = len(values) observations, row i with factor `factor` (an
  int32 scalar, traced under jit: index with it, do not branch on it in
  Python) at class index `values[i]` and every other factor uniformly at
  random, plus `factor_sizes`; or a ground-truth dataset object (anything
  with `sample_fixed(key, n, factor, value)` returning (obs, indices,
  values) and `factor_sizes`, such as the `nearid_jax.data` datasets), which
  is adapted automatically.

BetaVAE score (Higgins et al. 2017; disentanglement_lib
`compute_beta_vae_sklearn`): each point picks a factor k uniformly, draws a
batch of `batch_size` = 64 pairs that share the value of factor k row by row
(everything else independent), and its feature is mean_batch |z(x1) -
z(x2)| [d]; a multinomial `LogisticRegression()` (L2, C = 1, lbfgs, 100
iterations, raw features) predicts k from the feature; the scores are its
accuracy on the `num_train` = 10,000 training points and on `num_eval` =
5,000 fresh points.

FactorVAE score (Kim & Mnih 2018; disentanglement_lib `compute_factor_vae`):
the per-latent variance over `num_variance_estimate` = 10,000 random
observations (ddof 1) standardises the codes; latents with std <
`prune_threshold` = 0.05 are inactive (no active latent: scores 0). Each
point picks a factor k and one value, draws a batch of 64 observations with
factor k at that value, and votes for the active latent with the smallest
variance / global variance; the majority-vote classifier (latent -> factor)
is scored on the votes of the 10,000 training and 5,000 evaluation points.

Where disentanglement_lib draws the factor of each point independently, we
do too (keys from `key`); points are then generated factor by factor in
chunks of `points_per_chunk`, so `encode_fn` sees [points_per_chunk *
batch_size, ...] observations per call.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel
from nearid_jax import validation
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models


def as_sampler(sample_fn, factor_sizes=None
               ) -> tuple[Callable, tuple[int, ...]]:
  """Returns (sample_fn(key, factor, values) -> obs, factor_sizes).

  Args:
    sample_fn: a sampling function (then `factor_sizes` is required) or a
      dataset with `sample_fixed(key, n, factor, value)` and `factor_sizes`.
    factor_sizes: K factor cardinalities for a plain function.

  Raises:
    ValueError: missing or invalid factor sizes.
  """
  if hasattr(sample_fn, "sample_fixed"):
    sizes = tuple(int(s) for s in sample_fn.factor_sizes)
    try:
      fn = _dataset_sampler(sample_fn)
    except TypeError:  # unhashable dataset: no caching of compiled samplers
      fn = _dataset_sampler.__wrapped__(sample_fn)
  else:
    if factor_sizes is None:
      raise ValueError("factor_sizes is required when sample_fn is a "
                       "function; pass the K factor cardinalities.")
    sizes = tuple(int(s) for s in factor_sizes)
    fn = sample_fn
  if not sizes or min(sizes) < 1:
    raise ValueError(f"factor_sizes must be K >= 1 positive ints, got "
                     f"{sizes}.")
  return fn, sizes


@functools.lru_cache(maxsize=32)
def _dataset_sampler(ds):
  """Per-row fixed values from a dataset's scalar-value `sample_fixed`."""

  def fn(key, factor, values):
    keys = jax.random.split(key, values.shape[0])
    one = lambda k, v: ds.sample_fixed(k, 1, factor, v)[0][0]
    return jax.vmap(one)(keys, values)

  return fn


def _encode(encode_fn, obs, m):
  z = jnp.asarray(encode_fn(obs))
  if z.ndim == 2:
    z = z[None]
  if z.ndim != 3 or z.shape[1] != m:
    raise ValueError(f"encode_fn must map [{m}, ...] observations to "
                     f"[{m}, d] or [R, {m}, d] codes, got shape {z.shape}.")
  return z.astype(jnp.float32)


def _factor_counts(key, num_points, num_factors):
  ks = np.asarray(jax.random.randint(key, (num_points,), 0, num_factors))
  return np.bincount(ks, minlength=num_factors)


def _chunks(count, per_chunk):
  full, rest = divmod(int(count), per_chunk)
  return [per_chunk] * full + ([rest] if rest else [])


def _chunk_stats(key, global_var, factor, size, *, encode_fn, sample_fn,
                 points, batch_size, mode):
  """Per-point statistic for `points` points that fix `factor`.

  mode "beta": [R, points, d] mean |z1 - z2|; mode "factor": [R, points, d]
  batch variances (ddof 1) divided by the global variances.
  """
  m = points * batch_size
  k_val, k1, k2 = jax.random.split(key, 3)
  if mode == "beta":
    values = jax.random.randint(k_val, (m,), 0, size)
    z1 = _encode(encode_fn, sample_fn(k1, factor, values), m)
    z2 = _encode(encode_fn, sample_fn(k2, factor, values), m)
    r, _, d = z1.shape
    diff = jnp.abs(z1 - z2).reshape(r, points, batch_size, d)
    return jnp.mean(diff, axis=2)
  values = jnp.repeat(jax.random.randint(k_val, (points,), 0, size),
                      batch_size)
  z = _encode(encode_fn, sample_fn(k1, factor, values), m)
  r, _, d = z.shape
  local = jnp.var(z.reshape(r, points, batch_size, d), axis=2, ddof=1)
  return local / global_var[:, None, :]


@functools.partial(jax.jit, static_argnames=(
    "encode_fn", "sample_fn", "points", "batch_size", "mode"))
def _all_chunk_stats(key, global_var, factors, index, sizes, keep, *,
                     encode_fn, sample_fn, points, batch_size, mode):
  """`_chunk_stats` of every chunk in one call: [R, len(keep), d].

  The chunks run one after another (lax.map: memory stays that of one
  chunk) inside one compiled program: generating them with one call each
  cost more in dispatch than in work (about 1.7 ms a chunk for a linear
  encoder). Chunk i of factor k draws from fold_in(fold_in(key, k), i).
  keep: flat indices of the points kept (the last chunk of a factor is
  partly unused).
  """
  keys = jax.vmap(lambda f, i: jax.random.fold_in(
      jax.random.fold_in(key, f), i))(factors, index)
  out = jax.lax.map(
      lambda a: _chunk_stats(a[0], global_var, a[1], a[2],
                             encode_fn=encode_fn, sample_fn=sample_fn,
                             points=points, batch_size=batch_size,
                             mode=mode), (keys, factors, sizes))
  out = jnp.moveaxis(out, 0, 1)                   # [R, chunks, points, d]
  out = out.reshape(out.shape[0], -1, out.shape[-1])
  return out[:, keep]


def _generate(encode_fn, sample_fn, sizes, key, num_points, batch_size,
              per_chunk, mode, global_var=None):
  """Statistics [R, num_points, d] and factor labels [num_points]."""
  k_count, k_draw = jax.random.split(key)
  counts = _factor_counts(k_count, num_points, len(sizes))
  per_chunk = max(1, min(per_chunk, int(counts.max())))
  index, factors, keep, labels = [], [], [], []
  gv = global_var if global_var is not None else jnp.ones((1, 1))
  for factor, count in enumerate(counts):
    for i, pts in enumerate(_chunks(count, per_chunk)):
      index.append(i)
      keep.append(len(factors) * per_chunk + np.arange(pts))
      factors.append(factor)
      labels.append(np.full((pts,), factor, np.int32))
  # Pad with unused chunks to the most any split of num_points over the
  # factors can need, so that the compiled program depends on the protocol
  # only, not on the random factor counts.
  most = (int(num_points) + len(sizes) * (per_chunk - 1)) // per_chunk
  pad = most - len(factors)
  index += list(range(-pad, 0))
  factors = np.asarray(factors + [0] * pad, np.int32)
  stats = _all_chunk_stats(
      k_draw, gv, jnp.asarray(factors), jnp.asarray(index, jnp.int32),
      jnp.asarray(np.asarray(sizes, np.int32)[factors]),
      jnp.asarray(np.concatenate(keep)), encode_fn=encode_fn,
      sample_fn=sample_fn, points=per_chunk, batch_size=batch_size,
      mode=mode)
  return stats, jnp.asarray(np.concatenate(labels))


def _beta_vae_run(x_tr, y_tr, x_ev, y_ev, num_factors, max_iter):
  mask = jnp.ones((num_factors,), bool)
  w, b = linear_models.fit_logistic(x_tr, y_tr, mask, l2=1.0 / x_tr.shape[0],
                                    max_iter=max_iter)
  acc = lambda x, y: jnp.mean(jnp.argmax(
      linear_models.logistic_logits(x, w, b, mask), -1) == y)
  return {"train_accuracy": acc(x_tr, y_tr), "eval_accuracy": acc(x_ev, y_ev)}


@functools.partial(parallel.jit,
                   static_argnames=("num_factors", "max_iter"))
def beta_vae_accuracy(x_tr, y_tr, x_ev, y_ev, num_factors, max_iter=100):
  """The BetaVAE classifier step on given features (batched over runs).

  Args:
    x_tr: [R, num_train, d] training features.
    y_tr: [num_train] int factor labels.
    x_ev: [R, num_eval, d] evaluation features.
    y_ev: [num_eval] labels.
    num_factors: K.
    max_iter: L-BFGS iterations.

  Returns:
    dict of [R] "train_accuracy", "eval_accuracy".
  """
  return parallel.map_runs(
      lambda *a: _beta_vae_run(*a, num_factors, max_iter), x_tr, y_tr, x_ev,
      y_ev, in_axes=(0, None, 0, None))


def _check_protocol(batch_size, num_train, num_eval):
  if batch_size < 2:
    raise ValueError(f"batch_size must be >= 2, got {batch_size}.")
  if num_train < 1 or num_eval < 1:
    raise ValueError("num_train and num_eval must be >= 1.")


def beta_vae_score(encode_fn, sample_fn, key, *, factor_sizes=None,
                   batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000, points_per_chunk: int = 64,
                   max_iter: int = 100) -> dict:
  """BetaVAE score with the disentanglement_lib protocol.

  Args:
    encode_fn: JAX-traceable [m, ...] -> [m, d] or [R, m, d] codes.
    sample_fn: fixed-factor sampler or dataset (module docstring).
    key: PRNG key for every random choice.
    factor_sizes: K factor cardinalities (only for a plain sample_fn).
    batch_size: pairs per point (64).
    num_train: training points (10,000).
    num_eval: evaluation points (5,000).
    points_per_chunk: points generated per jitted call.
    max_iter: L-BFGS iterations of the classifier.

  Returns:
    {"train_accuracy", "eval_accuracy"}: floats, or [R] arrays when
    encode_fn returns [R, m, d].

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> def sample(key, factor, values):
    ...   u = jax.random.randint(key, (values.shape[0], 2), 0, 4)
    ...   return u.at[:, factor].set(values).astype(jnp.float32)
    >>> s = beta_vae_score(lambda x: x, sample, jax.random.key(0),
    ...                    factor_sizes=(4, 4), num_train=200, num_eval=100)
    >>> s["eval_accuracy"]
    1.0
  """
  _check_protocol(batch_size, num_train, num_eval)
  fn, sizes = as_sampler(sample_fn, factor_sizes)
  k_tr, k_ev = jax.random.split(key)
  x_tr, y_tr = _generate(encode_fn, fn, sizes, k_tr, num_train, batch_size,
                         points_per_chunk, "beta")
  x_ev, y_ev = _generate(encode_fn, fn, sizes, k_ev, num_eval, batch_size,
                         points_per_chunk, "beta")
  validation.check_finite("encode_fn(observations)", x_tr, run_axis=0)
  out = beta_vae_accuracy(x_tr, y_tr, x_ev, y_ev, len(sizes), max_iter)
  return inputs.to_host(out, _batched(encode_fn, fn, sizes))


def _batched(encode_fn, fn, sizes):
  obs = jax.eval_shape(fn, jax.random.key(0), jnp.int32(0),
                       jax.ShapeDtypeStruct((2,), jnp.int32))
  z = jax.eval_shape(encode_fn, obs)
  return len(z.shape) == 3


def _votes(ratio, labels, active, num_factors):
  """[R, K, d] vote counts from per-point variance ratios [R, P, d]."""
  ratio = jnp.where(active[:, None, :], ratio, jnp.inf)
  arg = jnp.argmin(ratio, axis=-1)                           # [R, P]
  d = ratio.shape[-1]
  onehot = jax.nn.one_hot(arg, d, dtype=jnp.float32)        # [R, P, d]
  lab = jax.nn.one_hot(labels, num_factors, dtype=jnp.float32)  # [P, K]
  return jnp.einsum("pk,rpd->rkd", lab, onehot)


def factor_vae_accuracy(train_votes, eval_votes):
  """Majority-vote classifier accuracies from [R, K, d] vote counts."""
  cls = jnp.argmax(train_votes, axis=1)                      # [R, d]
  pick = lambda v: jnp.take_along_axis(v, cls[:, None, :], axis=1)[:, 0]
  acc = lambda v: jnp.sum(pick(v), -1) / jnp.maximum(jnp.sum(v, (1, 2)), 1)
  return acc(train_votes), acc(eval_votes)


def factor_vae_score(encode_fn, sample_fn, key, *, factor_sizes=None,
                     batch_size: int = 64, num_train: int = 10_000,
                     num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000,
                     prune_threshold: float = 0.05,
                     points_per_chunk: int = 64) -> dict:
  """FactorVAE score with the disentanglement_lib protocol.

  Args:
    encode_fn: JAX-traceable [m, ...] -> [m, d] or [R, m, d] codes.
    sample_fn: fixed-factor sampler or dataset (module docstring).
    key: PRNG key for every random choice.
    factor_sizes: K factor cardinalities (only for a plain sample_fn).
    batch_size: observations per point (64).
    num_train: training points (10,000).
    num_eval: evaluation points (5,000).
    num_variance_estimate: observations for the global variances (10,000).
    prune_threshold: latents with global std below it are inactive (0.05).
    points_per_chunk: points generated per jitted call.

  Returns:
    {"train_accuracy", "eval_accuracy", "num_active_dims"}.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> def sample(key, factor, values):
    ...   u = jax.random.randint(key, (values.shape[0], 2), 0, 4)
    ...   return u.at[:, factor].set(values).astype(jnp.float32)
    >>> s = factor_vae_score(lambda x: x[:, ::-1], sample, jax.random.key(0),
    ...                      factor_sizes=(4, 4), num_train=100, num_eval=50,
    ...                      num_variance_estimate=500)
    >>> s["eval_accuracy"]
    1.0
  """
  _check_protocol(batch_size, num_train, num_eval)
  if num_variance_estimate < 2:
    raise ValueError("num_variance_estimate must be >= 2.")
  fn, sizes = as_sampler(sample_fn, factor_sizes)
  batched = _batched(encode_fn, fn, sizes)
  k_var, k_vals, k_tr, k_ev = jax.random.split(key, 4)
  # Factor 0 at uniformly random values = the unconstrained distribution.
  values = jax.random.randint(k_vals, (num_variance_estimate,), 0, sizes[0])
  z = _encode(encode_fn, fn(k_var, jnp.int32(0), values),
              num_variance_estimate)
  validation.check_finite("encode_fn(observations)", z, run_axis=0)
  global_var = jnp.var(z, axis=1, ddof=1)                    # [R, d]
  active = jnp.sqrt(global_var) >= prune_threshold
  safe_var = jnp.where(global_var > 0, global_var, 1.0)
  r_tr, y_tr = _generate(encode_fn, fn, sizes, k_tr, num_train, batch_size,
                         points_per_chunk, "factor", safe_var)
  r_ev, y_ev = _generate(encode_fn, fn, sizes, k_ev, num_eval, batch_size,
                         points_per_chunk, "factor", safe_var)
  k = len(sizes)
  acc_tr, acc_ev = factor_vae_accuracy(_votes(r_tr, y_tr, active, k),
                                       _votes(r_ev, y_ev, active, k))
  any_active = jnp.any(active, axis=1)
  out = {"train_accuracy": jnp.where(any_active, acc_tr, 0.0),
         "eval_accuracy": jnp.where(any_active, acc_ev, 0.0),
         "num_active_dims": jnp.sum(active, axis=1).astype(jnp.float32)}
  return inputs.to_host(out, batched)

