"""The report's science: `compute(config, runs)` -> a typed `Report`.

Per grid point (a `Group`; pairs across grid points compare different
models, so they are never pooled):

  * near-dead latents (standard deviation, in float64, below
    `config.dead_latent_spread` of the run's largest) are dropped from the
    maps, with a note naming them; runs left with different widths are
    compared pair by pair (`align.epsilon` with `config.dims`);
  * statistical ε between every ordered pair (`align.pairwise_epsilon`),
    with the mean over pairs, its 95% bootstrap interval, the worst pair
    and the number of pairs above the threshold;
  * ICA efficiency as a ratio of the mean errors, with a bootstrap interval;
  * structural ε of each run to the standardised factors
    (`align.structural`), similarity class included;
  * MCC, R² and the metric suite, raw and after ICA with
    `config.ica.components` components, plus the PCA controls when that is
    fewer than the latents;
  * the verdict (`verdict.decide`).

Nothing here writes files; `render` and `figures` present the result.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nearid_jax import align
from nearid_jax import ica as ica_lib
from nearid_jax import metrics as metrics_lib
from nearid_jax.report import config as config_lib
from nearid_jax.report import result as R
from nearid_jax.report import verdict as verdict_lib
from nearid_jax.report.runs import Runs

Q99_ROWS = 2048  # rows whose pairwise distances give the q99 diameter
# Offsets folded into the report key, one per independent draw.
_ROWS, _ICA, _ROTATION, _SUITE, _BOOT, _Q99 = 11, 9, 10, 8, 12, 13


def compute(config: ml_collections.ConfigDict, runs: Runs, *,
            bi_lipschitz: R.BiLipschitz | None = None) -> R.Report:
  """Measures every grid point of `runs` and decides the verdicts.

  Sections about one run at a time (structural ε, MCC, R², the metric
  suite except UDR) are computed once for all valid runs and sliced per
  grid point; pairs (statistical ε, efficiency, UDR) stay within a point.

  Args:
    config: see `config.default_config` (the `train` part is not read).
    runs: the runs (see `Runs.from_workdir`, `Runs.from_arrays`).
    bi_lipschitz: per-run decoder estimates, if computed.

  Returns:
    A `Report` (timing and config filled by the caller).

  Raises:
    ValueError: fewer than 2 valid runs in all, or no usable latent left.
  """
  runs = runs.clean()
  if runs.valid.sum() < 2:
    raise ValueError(f"only {int(runs.valid.sum())} of {runs.num_runs} "
                     "run(s) finished without diverging (and with finite "
                     "representations); ε needs at least 2.")
  key = jax.random.key(config.seed)
  notes = list(runs.notes)
  run_notes: dict[int, list[str]] = {}
  z_live: dict[int, np.ndarray] = {}
  for i in np.flatnonzero(runs.valid):
    live = live_latents(runs.z[i], config.dead_latent_spread)
    if not live.any():
      run_notes[i] = [f"run {runs.names[i]}: every latent is (near-)constant;"
                      " run left out."]
      continue
    if not live.all():
      sd = np.std(runs.z[i].astype(np.float64), axis=0)
      dead = np.flatnonzero(~live)
      run_notes[i] = [
          f"run {runs.names[i]}: latent(s) {dead.tolist()} near-dead "
          f"(spread {', '.join(f'{sd[j] / sd.max():.1e}' for j in dead)} of "
          f"the largest, below {config.dead_latent_spread:g}); dropped for "
          "the ε maps."]
    z_live[int(i)] = runs.z[i][:, live]
  usable = sorted(z_live)
  if not usable:
    raise ValueError("no valid run has a usable latent (every latent is "
                     "(near-)constant).")
  structural = metrics = variants = None
  try:
    structural = _structural(config, [z_live[i] for i in usable], runs.u,
                             key, notes)
  except ValueError as e:
    notes.append(f"structural ε not computed: {e}")
  try:
    metrics, variants = _metrics(config, runs.z[usable], runs.u, key)
  except ValueError as e:
    notes.append(f"metrics not computed: {e}")
  groups = []
  for grid, idx in runs.groups():
    members = [int(i) for i in idx if int(i) in z_live]
    pos = [usable.index(i) for i in members]
    groups.append(_group(
        config, runs, grid, idx, members, [z_live[i] for i in members], key,
        _take_structural(structural, pos), _take_metrics(
            config, metrics, variants, pos),
        [n for i in idx for n in run_notes.get(int(i), [])]))
  r, n, d = runs.z.shape
  settings = {
      "n_rows": int(n), "dim": int(d), "num_factors": int(runs.u.shape[1]),
      "n_fit": int(round(config.fit_fraction * n)),
      "n_eval": int(n - round(config.fit_fraction * n)),
      "diameter": config.diameter, "dims": config.dims,
      "perm_scale": bool(config.perm_scale), "ridge": float(config.ridge),
      "kinds": list(config.kinds),
      "structural_kinds": list(config.structural_kinds),
      "dead_latent_spread": float(config.dead_latent_spread),
      "bootstrap": int(config.bootstrap),
      "convention": "epsilon[i][j]: source run j mapped onto target run i, "
                    "divided by the diameter of run i",
  }
  infos = [R.RunInfo(i, runs.names[i], int(runs.seed[i]),
                     bool(runs.valid[i]), runs.grid[i]) for i in range(r)]
  return R.Report(runs=infos, layer=config.layer,
                  threshold=float(config.threshold), groups=groups,
                  bi_lipschitz=bi_lipschitz, settings=settings,
                  notes=notes, config={})


def live_latents(z: np.ndarray, spread: float) -> np.ndarray:
  """[d] bool: latents whose standard deviation exceeds `spread` × the max.

  Moments in float64, so the decision is relative to the data's own scale.

  Examples:
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(100, 3)) * [1, 1e-4, 2]
    >>> live_latents(z, 1e-2).tolist()
    [True, False, True]
  """
  sd = np.std(np.asarray(z, np.float64), axis=0)
  return sd > spread * sd.max() if sd.max() > 0 else np.zeros_like(sd, bool)


def _take_structural(st: R.Structural | None, pos) -> R.Structural | None:
  if st is None or not pos:
    return None
  return dataclasses.replace(st, epsilon={
      k: {s: v[pos] for s, v in d.items()} for k, d in st.epsilon.items()})


def _take_metrics(config, m: R.Metrics | None, variants, pos
                  ) -> R.Metrics | None:
  """The group's rows of the per-run tables, plus UDR among its runs."""
  if m is None or not pos:
    return None
  tables = {v: {c: x[pos] for c, x in t.items()} for v, t in m.tables.items()}
  if "udr" in config.metrics and len(pos) >= 2:
    for v, t in tables.items():
      t["udr"] = np.asarray(metrics_lib.udr(
          jnp.asarray(variants[v][pos], jnp.float32))["udr"], np.float64)
  return dataclasses.replace(m, tables=tables)


def _group(config, runs: Runs, grid: dict, idx: np.ndarray,
           members: list[int], z_live: list[np.ndarray], key,
           structural: R.Structural | None, metrics: R.Metrics | None,
           notes: list[str]) -> R.Group:
  notes = list(notes)
  left_out = sorted(int(i) for i in idx if int(i) not in members)
  statistical = efficiency = None
  if len(members) < 2:
    notes.append(f"statistical ε needs ≥ 2 runs per grid point; this point "
                 f"has {len(members)}, so only the structural section and "
                 "the metrics are computed.")
  else:
    try:
      statistical = _statistical(config, z_live, key)
    except ValueError as e:
      notes.append(f"statistical ε not computed: {e}")
  if statistical is not None and {"perm", "rigid", "ica"} <= set(
      statistical.kinds):
    efficiency = ica_efficiency(statistical.epsilon, _fold(key, _BOOT),
                                int(config.bootstrap))
  verdict = verdict_lib.decide(statistical, efficiency, structural, metrics,
                               float(config.threshold),
                               names=[runs.names[i] for i in members])
  return R.Group(grid=dict(grid), runs=members, left_out=left_out,
                 statistical=statistical, efficiency=efficiency,
                 structural=structural, metrics=metrics, verdict=verdict,
                 notes=notes)


def _fold(key, i):
  return jax.random.fold_in(key, i)


def _common(config) -> dict:
  ica = {k: v for k, v in config.ica.to_dict().items() if k != "components"}
  return dict(fit_fraction=config.fit_fraction, diameter=config.diameter,
              ridge=config.ridge, perm_scale=config.perm_scale,
              ica_options=ica)


# --- statistical ε ---------------------------------------------------------


def _statistical(config, zs: list[np.ndarray], key) -> R.Statistical:
  kinds = tuple(config.kinds)
  common = _common(config)
  dims = np.array([z.shape[1] for z in zs])
  r = len(zs)
  if len(set(dims.tolist())) == 1:
    pw = align.pairwise_epsilon(np.stack(zs), kinds, key=key, **common)
    eps = {k: {s: np.asarray(pw[k][s], np.float64) for s in R.STATS}
           for k in kinds}
    r2 = {k: np.asarray(pw[k]["r2"], np.float64).mean(-1) for k in kinds}
    diameter = np.asarray(pw.diameter, np.float64)
    ica_k = int(dims[0])
  else:  # different widths after dropping near-dead latents: pair by pair
    eps = {k: {s: np.zeros((r, r)) for s in R.STATS} for k in kinds}
    r2 = {k: np.ones((r, r)) for k in kinds}
    diameter = np.full(r, np.nan)
    for i in range(r):
      for j in range(r):
        if i == j:
          continue
        res = align.epsilon(zs[i], zs[j], kinds, key=key, dims=config.dims,
                            **common)
        for k in kinds:
          for s in R.STATS:
            eps[k][s][i, j] = float(res[k][s])
          r2[k][i, j] = float(np.mean(np.asarray(res[k]["r2"])))
        diameter[i] = float(res[kinds[0]]["diameter"])
    ica_k = int(dims.min())
  q99 = np.array([diameter_q99(z, _fold(key, _Q99)) for z in zs])
  boot = _fold(key, _BOOT)
  pairs = {k: {s: pair_summary(eps[k][s], float(config.threshold), boot,
                               int(config.bootstrap)) for s in R.STATS}
           for k in kinds}
  return R.Statistical(kinds=kinds, epsilon=eps, r2=r2, pairs=pairs,
                       diameter=diameter, diameter_q99=q99,
                       ica_components=ica_k, dims=dims)


def diameter_q99(z: np.ndarray, key) -> float:
  """99th percentile of the pairwise distances (≤ 2048 rows, float64).

  Examples:
    >>> import jax, numpy as np
    >>> z = np.array([[0.0], [1.0], [3.0]])
    >>> round(diameter_q99(z, jax.random.key(0)), 3)
    2.98
  """
  z = np.asarray(z, np.float64)
  if len(z) > Q99_ROWS:
    z = z[np.asarray(jax.random.permutation(key, len(z))[:Q99_ROWS])]
  z = z - z.mean(axis=0)
  sq = np.sum(z * z, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2 * z @ z.T
  iu = np.triu_indices(len(z), 1)
  return float(np.quantile(np.sqrt(np.maximum(d2[iu], 0)), 0.99))


def _off_diagonal(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                            np.ndarray]:
  """(values, targets, sources) of the off-diagonal entries."""
  ti, si = np.nonzero(~np.eye(len(mat), dtype=bool))
  return np.asarray(mat, np.float64)[ti, si], ti, si


def _resample(key, count: int, b: int) -> np.ndarray:
  """[b, count] indices drawn with replacement."""
  return np.asarray(jax.random.randint(key, (b, count), 0, count))


def _interval(samples: np.ndarray, value: float) -> R.Interval:
  lo, hi = np.nanpercentile(samples, [2.5, 97.5])
  return R.Interval(float(value), float(lo), float(hi))


def pair_summary(mat: np.ndarray, threshold: float, key,
                 bootstrap: int = 1000) -> R.PairSummary:
  """Mean (95% bootstrap interval), worst pair and exceedances of [R, R].

  The interval resamples ordered pairs; pairs that share a run are not
  independent, so it is narrower than a resampling of runs would give.

  Args:
    mat: [R, R] ε (diagonal ignored; NaN entries skipped).
    threshold: τ.
    key: a `jax.random.key` for the resampling.
    bootstrap: resamples.

  Returns:
    A `PairSummary` (NaN values and count 0 when no pair is finite).

  Examples:
    >>> import jax, numpy as np
    >>> m = np.array([[0, .01, .02], [.03, 0, .2], [.01, .02, 0]])
    >>> s = pair_summary(m, 0.05, jax.random.key(0))
    >>> round(s.mean.value, 4), s.worst, s.worst_pair, s.exceed
    (0.0483, 0.2, (1, 2), 1)
  """
  vals, ti, si = _off_diagonal(mat)
  ok = np.isfinite(vals)
  vals, ti, si = vals[ok], ti[ok], si[ok]
  if not vals.size:
    nan = float("nan")
    return R.PairSummary(R.Interval(nan, nan, nan), nan, nan, (-1, -1), 0, 0)
  w = int(np.argmax(vals))
  means = vals[_resample(key, vals.size, bootstrap)].mean(axis=1)
  return R.PairSummary(
      mean=_interval(means, vals.mean()), std=float(vals.std()),
      worst=float(vals[w]), worst_pair=(int(ti[w]), int(si[w])),
      exceed=int(np.sum(vals > threshold)), count=int(vals.size))


def ica_efficiency(epsilon: dict, key, bootstrap: int = 1000
                   ) -> R.Efficiency:
  """(mean perm − mean ICA) / (mean perm − mean rigid) of the mean-ℓ2 ε.

  The paper's percentages are ratios of the mean errors; a mean of per-pair
  ratios is dominated by pairs whose perm and rigid errors nearly coincide.
  The interval resamples ordered pairs (the same pairs for all three).

  Args:
    epsilon: {kind: {"mean": [R, R]}} with "perm", "rigid" and "ica".
    key: a `jax.random.key` for the resampling.
    bootstrap: resamples.

  Returns:
    An `Efficiency`.

  Examples:
    >>> import jax, numpy as np
    >>> e = {k: {"mean": np.full((2, 2), v) * (1 - np.eye(2))}
    ...      for k, v in (("perm", .2), ("rigid", .1), ("ica", .125))}
    >>> round(ica_efficiency(e, jax.random.key(0)).value.value, 6)
    0.75
  """
  p, ti, _ = _off_diagonal(epsilon["perm"]["mean"])
  g, _, _ = _off_diagonal(epsilon["rigid"]["mean"])
  c, _, _ = _off_diagonal(epsilon["ica"]["mean"])
  ok = np.isfinite(p) & np.isfinite(g) & np.isfinite(c)
  p, g, c = p[ok], g[ok], c[ok]
  per_pair = align.ica_efficiency(epsilon["perm"]["mean"],
                                  epsilon["rigid"]["mean"],
                                  epsilon["ica"]["mean"])
  per_pair = np.where(np.eye(len(per_pair), dtype=bool), np.nan, per_pair)

  def ratio(pm, gm, cm):
    gap = pm - gm
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(gap != 0, (pm - cm) / np.where(gap != 0, gap, 1),
                      np.nan)
  if not p.size:
    nan = float("nan")
    return R.Efficiency(R.Interval(nan, nan, nan), per_pair)
  idx = _resample(key, p.size, bootstrap)
  samples = ratio(p[idx].mean(1), g[idx].mean(1), c[idx].mean(1))
  value = float(ratio(p.mean(), g.mean(), c.mean()))
  return R.Efficiency(_interval(samples, value), per_pair)


# --- structural ε ----------------------------------------------------------


def _structural(config, zs: list[np.ndarray], u: np.ndarray, key,
                notes: list[str]) -> R.Structural:
  k = u.shape[1]
  wanted = tuple(config.structural_kinds)
  r = len(zs)
  eps = {kind: {s: np.full(r, np.nan) for s in R.STATS} for kind in wanted}
  common = _common(config)
  diameter = float("nan")
  dims = np.array([z.shape[1] for z in zs])
  for d in sorted(set(dims.tolist())):
    idx = np.flatnonzero(dims == d)
    kinds = tuple(kk for kk in wanted
                  if not (kk == "ica" and d < k)
                  and not (kk == "identity" and d != k))
    skipped = sorted(set(wanted) - set(kinds))
    if skipped:
      notes.append(f"structural {skipped} skipped for run(s) with d = {d} "
                   f"usable latents (K = {k} factors): 'ica' needs d ≥ K, "
                   "'identity' d = K.")
    if not kinds:
      continue
    res = align.structural(np.stack([zs[i] for i in idx]), u, kinds, key=key,
                           dims=config.dims, with_sources=False, **common)
    for kind in kinds:
      for s in R.STATS:
        eps[kind][s][idx] = np.asarray(res["epsilon"][kind][s], np.float64)
    diameter = float(res["diameter"])
    notes.extend(n for n in getattr(res, "notes", ()) if n not in notes)
  return R.Structural(kinds=wanted, epsilon=eps, diameter=diameter,
                      ica_components=k)


# --- metrics ---------------------------------------------------------------


def merge_column_notes(messages: Sequence[str]) -> list[str]:
  """One note per message kind, columns merged.

  Examples:
    >>> merge_column_notes(["factors[:, 0] looks continuous",
    ...                     "factors[:, 2] looks continuous"])
    ['factors[:, 0, 2] looks continuous']
  """
  merged: dict[str, list[str]] = {}
  for m in messages:
    match = re.match(r"factors\[:, (\d+)\](.*)", m, re.S)
    key, col = (match.group(2), match.group(1)) if match else (m, None)
    cols = merged.setdefault(key, [])
    if col is not None and col not in cols:
      cols.append(col)
  return [f"factors[:, {', '.join(c)}]{k}" if c else k
          for k, c in merged.items()]


def pca_controls(z: np.ndarray, k: int, key) -> tuple[np.ndarray, np.ndarray]:
  """PCA to k whitened components, and the same randomly rotated.

  The controls beside ICA with k < d components: what whitening alone, and
  whitening plus an arbitrary rotation, give (docs/paper.md's "PCA" and
  "PCA+Rand").

  Args:
    z: [R, n, d].
    k: components.
    key: a `jax.random.key` for the rotation (one per run).

  Returns:
    ([R, n, k] whitened, [R, n, k] whitened @ Q with Q random orthogonal).

  Examples:
    >>> import jax, numpy as np
    >>> z = np.random.default_rng(0).normal(size=(1, 200, 3))
    >>> w, rot = pca_controls(z, 2, jax.random.key(0))
    >>> np.allclose(np.cov(w[0].T, bias=True), np.eye(2), atol=1e-6)
    True
  """
  z = np.asarray(z, np.float64)
  xc = z - z.mean(axis=1, keepdims=True)
  cov = np.einsum("rnd,rne->rde", xc, xc) / z.shape[1]
  lam, vec = np.linalg.eigh(cov)
  lam, vec = lam[:, ::-1][:, :k], vec[:, :, ::-1][:, :, :k]
  white = np.einsum("rnd,rdk->rnk", xc, vec) / np.sqrt(lam)[:, None, :]
  g = np.asarray(jax.random.normal(key, (z.shape[0], k, k)), np.float64)
  q, rr = np.linalg.qr(g)
  q = q * np.sign(np.diagonal(rr, axis1=1, axis2=2))[:, None, :]
  return white, np.einsum("rnk,rkj->rnj", white, q)


def _metrics(config, z: np.ndarray, u: np.ndarray, key
             ) -> tuple[R.Metrics, dict[str, np.ndarray]]:
  r, n, d = z.shape
  kf = u.shape[1]
  k = config_lib.ica_components(config.ica.components, kf, d)
  if config.metrics_rows == "half":
    rows = np.sort(np.asarray(jax.random.permutation(_fold(key, _ROWS), n)
                              [:n // 2]))
    z, u = z[:, rows], u[rows]
    n = len(rows)
  ica_opts = {kk: v for kk, v in config.ica.to_dict().items()
              if kk != "components"}
  # One key per run position in the report, so a run's ICA does not depend
  # on which runs it is computed with.
  keys = jax.random.split(_fold(key, _ICA), r)
  res = ica_lib.fastica(jnp.asarray(z), keys, n_components=k, **ica_opts)
  variants = {"raw": z, "ica": np.asarray(res.sources)}
  if k < d:
    variants["pca"], variants["pca_rotated"] = pca_controls(
        z, k, _fold(key, _ROTATION))
  k_suite = _fold(key, _SUITE)
  tables: dict[str, dict[str, np.ndarray]] = {}
  caught_all: list[str] = []
  # UDR compares runs: computed per grid point (`_take_metrics`).
  suite = tuple(m for m in config.metrics if m != "udr")
  for name, v in variants.items():
    v = jnp.asarray(v, jnp.float32)
    t = {"mcc_pearson": np.asarray(metrics_lib.mcc(v, u, method="pearson")
                                   ["mcc"], np.float64),
         "mcc_spearman": np.asarray(metrics_lib.mcc(v, u, method="spearman")
                                    ["mcc"], np.float64)}
    if name == "raw":
      t["r2"] = np.asarray(metrics_lib.r2(v, u, key=_fold(key, 7))["r2"],
                           np.float64)
    if suite:
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        t.update(metrics_lib.evaluate_all(
            v, u, key=k_suite, metrics=suite,
            dci_estimator=config.dci_estimator))
        if "infomec" in suite and config.infoe_converged_iter:
          t["infoe_converged"] = np.asarray(metrics_lib.infomec(
              v, u, key=k_suite, max_iter=int(config.infoe_converged_iter)
          )["infoe"], np.float64)
      caught_all += [str(w.message) for w in caught]
    tables[name] = {c: np.atleast_1d(np.asarray(x, np.float64))
                    for c, x in t.items()}
  return R.Metrics(tables=tables, rows=int(n), ica_components=k,
                   dci_estimator=config.dci_estimator,
                   infoe_converged_iter=int(config.infoe_converged_iter)
                   if "infomec" in suite else 0,
                   notes=merge_column_notes(caught_all)), variants
