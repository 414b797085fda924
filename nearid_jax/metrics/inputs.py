"""Validation and encoding of the (codes, factors) pairs every metric takes.

Conventions shared by all supervised metrics (documented once, here):

* Codes `z` are [n, d] (one run) or [R, n, d] (R runs of the same n inputs);
  they must be finite floats. A constant latent is allowed (it carries no
  information; standardising it gives zeros, not NaN). Codes whose largest
  magnitude is outside [2^-40, 2^40] are first multiplied by a power of two
  (exact) so that float32 moments neither overflow nor underflow; every
  metric but SAP is invariant to that.
* Factors are [n, K] (shared by all runs) or [R, n, K]. Each factor column is
  encoded to classes 0..C_k-1 in increasing order of its values (as
  sklearn's LabelEncoder does); the numeric values are kept for the metrics
  that regress on them (MCC, R^2).
  - integer/bool factors, and float factors whose values are all integers,
    are used as they are;
  - float factors with non-integer values and at most `MAX_CATEGORIES`
    distinct values are treated as categorical (one class per value) with a
    warning;
  - other float factors are continuous: they are discretised into
    `NUM_FACTOR_BINS` equal-width bins (disentanglement_lib's histogram
    discretizer: np.histogram edges, np.digitize) with a warning.
* A factor with a single class carries no information and makes every
  normalised score 0/0: it is dropped with a warning (an error if no factor
  is left).
* Fewer rows than a factor has classes (in the split a metric fits on)
  raises ValueError.
* Metrics with a fit/score protocol (DCI, SAP, explicitness, R^2) either take
  an explicit test set (`z_test`, `factors_test`) or split the rows with a
  random permutation drawn from `key`: the last `round(n * (1 -
  test_fraction))` rows of the permutation fit, the first `round(n *
  test_fraction)` score. The default test_fraction = 1/3 reproduces the
  disentanglement_lib 10,000 / 5,000 proportions on 15,000 rows.
"""
from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel
from nearid_jax import validation
from nearid_jax.metrics import sorting

MAX_CATEGORIES = 64
NUM_FACTOR_BINS = 20
DEFAULT_TEST_FRACTION = 1.0 / 3.0


@dataclasses.dataclass(frozen=True)
class Factors:
  """Encoded factors.

  Attributes:
    labels: [R or 1, n, K] int32 classes 0..C_k-1.
    values: [R or 1, n, K] float32 numeric factor values.
    num_classes: tuple of K ints, C_k.
    kept: indices of the original factor columns that were kept.
  """
  labels: np.ndarray
  values: np.ndarray
  num_classes: tuple[int, ...]
  kept: tuple[int, ...]

  @property
  def max_classes(self) -> int:
    return max(self.num_classes)

  @property
  def num_factors(self) -> int:
    return len(self.num_classes)


def as_runs(name: str, z) -> tuple[jax.Array, bool]:
  """Validates codes and returns ([R, n, d] float32, batched flag).

  Raises:
    TypeError / ValueError: non-float dtype, wrong rank, NaN/Inf.
  """
  if not hasattr(z, "dtype"):
    z = np.asarray(z)
  validation.check_float(name, z)
  validation.check_ndim(name, z, (2, 3), "([n, d] for one run, [R, n, d] "
                        "for R runs)")
  batched = np.ndim(z) == 3
  validation.check_finite(name, z, run_axis=0 if batched else None,
                          row_axis=1 if batched else 0)
  z = _within_float32_range(z)
  # Arrays of an earlier stage stay on their devices; ones the caller
  # committed elsewhere join the devices the metrics run on.
  z = parallel.on_devices(jnp.asarray(z, jnp.float32))
  if not batched:
    z = z[None]
  if z.shape[1] < 2:
    raise ValueError(f"{name} has {z.shape[1]} row(s); metrics need at "
                     "least 2 samples.")
  if z.shape[2] < 1:
    raise ValueError(f"{name} has no latent dimensions (shape {z.shape}).")
  return z, batched


def _within_float32_range(z):
  """z times a power of two bringing max |z| into [0.5, 1) when it is out of
  range for float32 moments (`validation.range_exponent`); else z.

  The metrics' float32 moments square the codes: at 1e20 they overflow, at
  1e-30 they underflow, and DCI, MCC and InfoE came out 0. A power of two
  changes no mantissa, and every metric but SAP (a fixed-C linear SVM,
  scale-dependent by its definition) is invariant to a global rescaling, so
  they give their scale-1 values. One factor for all runs, so the runs keep
  their relative scales (UDR compares them).
  """
  if not validation.is_concrete(z):
    return z  # under jit: as given
  e = validation.range_exponent(float(
      np.max(np.abs(z)) if isinstance(z, np.ndarray)
      else jnp.max(jnp.abs(z))))
  if not e:
    return z
  if isinstance(z, np.ndarray):
    return np.ldexp(z, -e)
  return z * jnp.asarray(2.0 ** -e, z.dtype)


def _encode_column(col: np.ndarray, what: str, warn: bool
                   ) -> tuple[np.ndarray, np.ndarray, int]:
  """Encodes one factor column of any shape; returns (labels, values, C)."""
  values = col.astype(np.float64)
  if np.issubdtype(col.dtype, np.floating):
    uniq = np.unique(col)
    if not np.all(uniq == np.round(uniq)):
      if len(uniq) <= MAX_CATEGORIES:
        if warn:
          warnings.warn(
              f"{what} has non-integer values; treating its {len(uniq)} "
              "distinct values as classes.", stacklevel=4)
      else:
        if warn:
          warnings.warn(
              f"{what} looks continuous ({len(uniq)} distinct non-integer "
              f"values); discretising it into {NUM_FACTOR_BINS} equal-width "
              "bins for the discrete metrics.", stacklevel=4)
        flat = col.reshape(-1)
        edges = np.histogram(flat, NUM_FACTOR_BINS)[1][:-1]
        col = np.digitize(col, edges)
  uniq, labels = np.unique(col, return_inverse=True)
  return labels.reshape(col.shape).astype(np.int32), values, len(uniq)


def encode_factors(name: str, factors, n: int, num_runs: int,
                   *, warn: bool = True) -> Factors:
  """Validates and encodes factors for codes with `num_runs` runs of n rows.

  Args:
    name: argument name for messages.
    factors: [n, K] or [R, n, K] array (any real or integer dtype).
    n: number of rows the codes have.
    num_runs: R of the codes.
    warn: emit the warnings described in the module docstring.

  Returns:
    Factors.

  Raises:
    ValueError: wrong rank, mismatched n or R, NaN/Inf, no informative
      factor.
  """
  f = np.asarray(factors)
  if f.dtype == bool:
    f = f.astype(np.int32)
  if not (np.issubdtype(f.dtype, np.integer) or
          np.issubdtype(f.dtype, np.floating)):
    raise TypeError(f"{name} must be a numeric array, got dtype {f.dtype}.")
  if f.ndim == 1:
    raise ValueError(f"{name} must be [n, K] (or [R, n, K]), got shape "
                     f"{f.shape}; reshape a single factor with "
                     f"{name}[:, None].")
  validation.check_ndim(name, f, (2, 3), "([n, K] or [R, n, K])")
  if f.ndim == 2:
    f = f[None]
  if f.shape[1] != n:
    raise ValueError(f"{name} has {f.shape[1]} rows but the codes have {n}: "
                     "codes and factors must describe the same samples.")
  if f.shape[0] not in (1, num_runs):
    raise ValueError(f"{name} has {f.shape[0]} runs but the codes have "
                     f"{num_runs}; pass [n, K] factors shared by all runs or "
                     f"[{num_runs}, n, K].")
  if f.shape[2] < 1:
    raise ValueError(f"{name} has no factor columns (shape {f.shape}).")
  validation.check_finite(name, f, row_axis=1)
  labels, values, num_classes, kept = [], [], [], []
  for k in range(f.shape[2]):
    lab, val, c = _encode_column(f[..., k], f"{name}[:, {k}]", warn)
    if c < 2:
      if warn:
        warnings.warn(f"{name}[:, {k}] has a single value; dropping this "
                      "factor (no metric is defined for it).", stacklevel=3)
      continue
    for r in range(lab.shape[0]):
      if len(np.unique(lab[r])) < 2:
        raise ValueError(
            f"{name}[:, {k}] is constant in run {r} but not in others; give "
            "every run the same factors or drop this factor.")
    labels.append(lab)
    values.append(val)
    num_classes.append(c)
    kept.append(k)
  if not kept:
    raise ValueError(f"every column of {name} has a single value; the metrics "
                     "need at least one factor with two or more classes.")
  return Factors(
      labels=np.stack(labels, -1).astype(np.int32),
      values=np.stack(values, -1).astype(np.float32),
      num_classes=tuple(num_classes), kept=tuple(kept))


def check_enough_rows(n: int, fac: Factors, what: str) -> None:
  """Raises ValueError when n rows cannot cover every class of a factor."""
  worst = int(np.argmax(fac.num_classes))
  if n < fac.num_classes[worst]:
    raise ValueError(
        f"{what} has {n} rows but factor {fac.kept[worst]} has "
        f"{fac.num_classes[worst]} classes: fewer samples than classes. "
        "Pass more samples.")


@dataclasses.dataclass(frozen=True)
class Split:
  """Fit / score rows of one (or R) runs, ready for a jitted core."""
  z_train: jax.Array        # [R, n_train, d]
  z_test: jax.Array         # [R, n_test, d]
  labels_train: jax.Array   # [R or 1, n_train, K]
  labels_test: jax.Array    # [R or 1, n_test, K]
  values_train: jax.Array
  values_test: jax.Array

  def run_labels(self) -> tuple[jax.Array, jax.Array]:
    """(train, test) labels with the runs axis of z: [R, n_*, K]."""
    r = self.z_train.shape[0]
    return (jnp.broadcast_to(self.labels_train,
                             (r,) + self.labels_train.shape[1:]),
            jnp.broadcast_to(self.labels_test,
                             (r,) + self.labels_test.shape[1:]))


def split(z: jax.Array, fac: Factors, *, key, test_fraction: float,
          z_test=None, factors_test=None, what: str = "z") -> Split:
  """Splits rows into fit and score parts (or uses the given test set).

  Args:
    z: [R, n, d] codes from `as_runs`.
    fac: encoded factors for z.
    key: PRNG key for the permutation (ignored with an explicit test set).
    test_fraction: fraction of rows scored, in (0, 1).
    z_test: optional explicit test codes, [n_test, d] or [R, n_test, d].
    factors_test: their factors (required with z_test).
    what: name of the codes for messages.

  Returns:
    Split.
  """
  r, n, d = z.shape
  if z_test is not None:
    if factors_test is None:
      raise ValueError("z_test needs factors_test.")
    zt, _ = as_runs("z_test", z_test)
    if zt.shape[0] == 1 and r > 1:
      raise ValueError(f"z_test must have the same {r} runs as {what}.")
    if zt.shape[0] != r or zt.shape[2] != d:
      raise ValueError(f"z_test has shape {tuple(zt.shape)} but {what} has "
                       f"{r} run(s) of dimension {d}.")
    ft = encode_like("factors_test", factors_test, fac, zt.shape[1], r)
    check_enough_rows(n, fac, what)
    return Split(z, zt, jnp.asarray(fac.labels), jnp.asarray(ft.labels),
                 jnp.asarray(fac.values), jnp.asarray(ft.values))
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  n_test = int(round(n * test_fraction))
  if n_test < 1 or n - n_test < 2:
    raise ValueError(f"{what} has {n} rows: too few to split into fit and "
                     f"score parts with test_fraction={test_fraction}.")
  check_enough_rows(n - n_test, fac, f"the fit split of {what}")
  perm = np.asarray(jax.random.permutation(key, n))
  test_idx, train_idx = perm[:n_test], perm[n_test:]
  lab, val = fac.labels, fac.values
  return Split(z[:, train_idx], z[:, test_idx],
               jnp.asarray(lab[:, train_idx]), jnp.asarray(lab[:, test_idx]),
               jnp.asarray(val[:, train_idx]), jnp.asarray(val[:, test_idx]))


def encode_like(name: str, factors, fac: Factors, n: int,
                num_runs: int) -> Factors:
  """Encodes test factors with the classes of the training factors.

  Test values that the training factors never took are an error (no
  classifier can predict them).
  """
  f = np.asarray(factors)
  validation.check_ndim(name, f, (2, 3), "([n, K] or [R, n, K])")
  if f.ndim == 2:
    f = f[None]
  if f.shape[1] != n:
    raise ValueError(f"{name} has {f.shape[1]} rows but z_test has {n}.")
  validation.check_finite(name, f, row_axis=1)
  f = f[..., list(fac.kept)]
  if f.shape[-1] != fac.num_factors:
    raise ValueError(f"{name} must have the same factor columns as the "
                     "training factors.")
  # Encode jointly with the training values so classes line up.
  return _encode_joint(name, f, fac)


def _encode_joint(name, f, fac: Factors) -> Factors:
  labels = np.empty(f.shape, np.int32)
  for k in range(f.shape[-1]):
    train_vals = np.unique(fac.values[..., k])
    col = f[..., k].astype(np.float64)
    if len(train_vals) == fac.num_classes[k]:
      idx = np.searchsorted(train_vals, col)
      idx = np.clip(idx, 0, len(train_vals) - 1)
      if not np.all(train_vals[idx] == col.astype(np.float32)):
        raise ValueError(f"{name}[:, {k}] has values the training factors "
                         "never take; classes must match.")
      labels[..., k] = idx
    else:  # binned continuous factor: reuse the training bin edges
      edges = np.histogram(fac.values[..., k].reshape(-1),
                           NUM_FACTOR_BINS)[1][:-1]
      b = np.digitize(col, edges)
      train_bins = np.unique(np.digitize(fac.values[..., k], edges))
      labels[..., k] = np.clip(np.searchsorted(train_bins, b), 0,
                               fac.num_classes[k] - 1)
  return Factors(labels=labels, values=f.astype(np.float32),
                 num_classes=fac.num_classes, kept=fac.kept)


def class_mask(num_classes: tuple[int, ...]) -> jax.Array:
  """[K, C_max] bool: which padded class slots exist for each factor."""
  c_max = max(num_classes)
  return jnp.arange(c_max)[None, :] < jnp.asarray(num_classes)[:, None]


def class_groups(num_classes: tuple[int, ...], multiple: int = 8
                 ) -> tuple[tuple[tuple[int, ...], int], ...]:
  """Groups factors whose class counts round up to the same multiple.

  Classifiers for several factors run batched with padded class slots; padding
  every factor to the largest count (e.g. 3 -> 40 for dSprites) would double
  the work, so factors are padded only to the next multiple of `multiple`
  and batched per group.

  Returns:
    ((factor indices, padded class count), ...), static.
  """
  groups: dict[int, list[int]] = {}
  for k, c in enumerate(num_classes):
    groups.setdefault(-(-c // multiple) * multiple, []).append(k)
  return tuple((tuple(ks), width) for width, ks in sorted(groups.items()))


def map_factors(fn, labels: tuple, num_classes: tuple[int, ...]):
  """Applies fn(y_1, ..., y_m, class_mask) to every factor, group-batched.

  Args:
    fn: per-factor function of m label vectors [n_i] and a class mask [C];
      returns a pytree of arrays.
    labels: tuple of m [n_i, K] int label arrays (e.g. fit and score).
    num_classes: K static class counts.

  Returns:
    The pytree with a leading K axis, in factor order.
  """
  outs, order = [], []
  for ks, width in class_groups(num_classes):
    idx = np.asarray(ks)
    mask = jnp.arange(width)[None, :] < jnp.asarray(
        [num_classes[k] for k in ks])[:, None]
    ys = tuple(lab[:, idx] for lab in labels)
    outs.append(jax.vmap(fn, in_axes=(1,) * len(ys) + (0,))(*ys, mask))
    order.extend(ks)
  inverse = np.argsort(np.asarray(order))
  return jax.tree.map(
      lambda *a: jnp.concatenate(a, axis=0)[inverse], *outs)


def class_major_order(labels: jax.Array, num_classes: int,
                      order: jax.Array | None = None):
  """Stable class-major permutation of rows.

  Args:
    labels: [n] int classes.
    num_classes: static number of class slots.
    order: optional [n] permutation (e.g. the argsort of a latent); the
      result keeps this order inside each class.

  Returns:
    (perm, counts, start): perm[j] is the row at class-major position j
    (rows of class 0 first, in `order`), counts [C] and start [C] int32.
  """
  lab = labels if order is None else labels[order]
  perm, _ = sorting.class_major_order(lab, num_classes)
  if order is not None:
    perm = order[perm]
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels].add(1)
  start = jnp.cumsum(counts) - counts
  return perm.astype(jnp.int32), counts, start


def standardize(z: jax.Array, mean=None, std=None):
  """Per-column standardisation over rows (axis -2); zero std -> 1.

  Args:
    z: [..., n, d].
    mean, std: optional statistics to reuse ([..., 1, d]).

  Returns:
    (standardised z, mean, std).
  """
  if mean is None:
    mean = jnp.mean(z, axis=-2, keepdims=True)
  if std is None:
    std = jnp.std(z, axis=-2, keepdims=True)
    std = jnp.where(std > 0, std, 1.0)
  return (z - mean) / std, mean, std


def to_host(scores: dict, batched: bool) -> dict:
  """Converts a dict of [R] device arrays to floats (one run) or [R] numpy."""
  out = {}
  for k, v in scores.items():
    a = np.asarray(v, np.float64)
    out[k] = a if batched else float(a[0])
  return out


def default_key(key):
  return jax.random.key(0) if key is None else key
