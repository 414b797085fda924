"""Structural near-identifiability: each run against the true factors.

The target is the standardised factors u (zero mean, unit variance over all
rows); each run is a source. The result carries, beside ε, what a caller
needs to score the runs with other measures (MCC, R², the metric suite of
`nearid_jax.metrics`, which the report runs): the runs' centred rows, their
ICA sources and the standardised factors, on the same split.
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp


from nearid_jax import parallel
from nearid_jax import validation
from nearid_jax.align import checks
from nearid_jax.align import maps as maps_lib
from nearid_jax.align import pairs as pairs_lib
from nearid_jax.align import stats
from nearid_jax.align.options import DEFAULT_KINDS
from nearid_jax.align.options import need_rank as _need_rank
from nearid_jax.align.options import Options


@flax.struct.dataclass
class Structural:
  """Structural ε of R runs to the factors, and the rows to score them on.

  Rows are in the split `structural` used: fit rows ("_fit") and
  evaluation rows ("_eval"), each centred by the fit-row mean. Codes are
  in the scaled coordinates of the package docstring (the codes
  themselves unless their magnitude is outside [2^-16, 2^16]) and without
  dropped dead columns.

  Attributes:
    epsilon: {kind: {"mean"/"max"/"q99": [R], "r2": [R, k]}}.
    diameter: [] diameter of the standardised factors.
    valid: [R] bool.
    codes_fit, codes_eval: [R, n_fit, d], [R, n_eval, d] the runs' rows.
    sources_eval: [R, n_eval, k] the runs' ICA sources (k components,
      fitted on the fit rows) on the evaluation rows; None without them.
    factors_fit, factors_eval: [n_fit, k], [n_eval, k] standardised
      factors.
    factor_columns: indices of the factor columns used (constant ones are
      dropped), or None for all.
    notes: tuple of str: what was dropped, and why.
  """
  epsilon: dict
  diameter: jax.Array
  valid: jax.Array
  codes_fit: jax.Array
  codes_eval: jax.Array
  sources_eval: jax.Array | None
  factors_fit: jax.Array
  factors_eval: jax.Array
  factor_columns: tuple | None = flax.struct.field(pytree_node=False)
  notes: tuple = flax.struct.field(pytree_node=False, default=())

  def __getitem__(self, name: str):
    """res["epsilon"], res["diameter"], res["valid"] (the mapping view)."""
    if name not in ("epsilon", "diameter", "valid"):
      raise KeyError(f"{name!r}; Structural has fields epsilon, diameter, "
                     "valid, codes_fit, codes_eval, sources_eval, "
                     "factors_fit, factors_eval, factor_columns, notes.")
    return getattr(self, name)


@parallel.host_call
def structural(zs, factors, kinds: Sequence[str] = DEFAULT_KINDS, *, key,
               fit_fraction: float = 0.5, diameter: str = "max",
               dims: str = "pad", ridge: float = 0.0,
               perm_scale: bool = False, ica_options: dict | None = None,
               diameter_rows: int = 10_000,
               with_sources: bool = True) -> Structural:
  """Structural near-identifiability: each run against the true factors.

  The target is the standardised factors u (zero mean, unit variance over
  all rows); each run is a source. For "ica" the run is ICA'd (k
  components, fitted on the fit rows) and matched to u by signed
  permutation. Constant factor columns are dropped with a warning and a
  note (`notes`, `factor_columns`); so are dead latents as in
  `pairwise_epsilon`.

  Args:
    zs: [R, n, d] float array (or a list of [n, d]).
    factors: [n, k] float array, the ground-truth factors u.
    kinds: alignment classes ("identity" needs d = k).
    key: a `jax.random.key`.
    fit_fraction, diameter, dims, ridge, perm_scale, ica_options,
      diameter_rows: as in `epsilon`.
    with_sources: also return the runs' ICA sources (computed for "ica"
      anyway), e.g. for MCC after ICA.

  Returns:
    A `Structural`; `res["epsilon"]["rigid"]["mean"]` is [R]. Jittable:
    under jit invalid runs come back NaN with valid=False instead of
    raising.

  Raises:
    ValueError: as `pairwise_epsilon`, for `factors` too; "ica" with d < k.

  Examples:
    >>> import jax
    >>> u = jax.random.laplace(jax.random.key(0), (400, 2))
    >>> res = structural(u[None] * 3.0, u, ("rigid", "linear"),
    ...                  key=jax.random.key(1), with_sources=False)
    >>> float(res.epsilon["linear"]["mean"][0]) < 1e-5
    True
  """
  kinds = checks.check_kinds(kinds)
  checks.check_options(fit_fraction, diameter, dims, ridge, diameter_rows)
  zs = checks.as_stack("zs", zs)
  concrete = validation.is_concrete(zs) and validation.is_concrete(factors)
  u, kept, notes = checks.standardise_factors(factors, concrete)
  for note in notes:
    checks.warn(note)
  r, n, d = zs.shape
  nu, k = u.shape
  if nu != n:
    raise ValueError(f"factors has {nu} rows but zs has {n}; they must "
                     "describe the same inputs, row for row.")
  n_fit = checks.n_fit_rows(n, max(d, k), fit_fraction, "zs/factors")
  e_s = stats.scale_exponent(zs)
  zero = jnp.zeros((), jnp.int32)

  def prep(z, e, other):
    return stats.prepare(
        z, key, e, n_fit=n_fit, diameter=diameter,
        diameter_rows=int(diameter_rows),
        ridge=float(ridge) if "linear" in kinds else None,
        pca=dims == "pca" and z.shape[-1] != other)
  src = prep(zs, e_s, k)
  need_rank = _need_rank(kinds, ridge)
  if concrete:
    zs, src, _, dead_notes = checks.screen(
        "zs", zs, src, lambda z: prep(z, e_s, k), need_rank, True)
    notes += dead_notes
    d = zs.shape[2]
  if "ica" in kinds and d < k:
    raise ValueError(f"'ica' needs at least as many dimensions as factors, "
                     f"got d={d} < k={k}.")
  if "identity" in kinds and d != k:
    raise ValueError(f"'identity' needs d = k, got d={d}, k={k}.")
  tgt = prep(u[None], zero, d)
  valid_s = src.valid(need_rank)
  valid_t = tgt.valid(False)
  ica_t = ica_s = None
  if "ica" in kinds or with_sources:
    ica_s, iv = maps_lib.run_ica(src, key, k, ica_options, "zs", concrete)
    if "ica" in kinds:
      valid_s &= iv
    ica_t = maps_lib.factor_ica(tgt)
  opts = Options(kinds, float(ridge), bool(perm_scale), dims, n_fit)
  pt = jnp.zeros((r,), jnp.int32)
  ps = jnp.arange(r, dtype=jnp.int32)
  chunk, rows = pairs_lib.chunks(r, n - n_fit, k, d, len(kinds), None)
  # u is standardised (scale exponent 0): the source's factor is the ratio.
  rel = jnp.ldexp(jnp.ones((), zs.dtype), e_s)
  with_ica = "ica" in kinds
  out = pairs_lib.pairs(tgt, src, ica_t if with_ica else None,
                        ica_s if with_ica else None, pt, ps, valid_t, valid_s,
                        rel, opts=opts, chunk=chunk, rows=rows)
  eps = {kk: {s: out[s][:, j] for s in ("mean", "max", "q99", "r2")}
         for j, kk in enumerate(kinds)}
  sources = None
  if ica_s is not None:
    sources = jnp.einsum("rnd,rkd->rnk", src.xe, ica_s.unmixing,
                         precision=jax.lax.Precision.HIGHEST)
  return Structural(
      epsilon=eps, diameter=tgt.diameter[0], valid=valid_s,
      codes_fit=src.xf, codes_eval=src.xe, sources_eval=sources,
      factors_fit=tgt.xf[0], factors_eval=tgt.xe[0],
      factor_columns=None if kept is None else tuple(int(c) for c in kept),
      notes=tuple(notes))


