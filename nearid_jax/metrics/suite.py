"""The whole metric suite for R runs in one call, as a table.

`evaluate_all` returns a plain dict {column: [R] float64 array} (one row
per run), which binaries log or save as JSON, and `to_markdown` renders it.
Columns (each present when its metric ran):

  infom, infoe, infoc                      InfoMEC (Hsu et al.)
  dci_disentanglement, dci_completeness,
  dci_informativeness_train, dci_informativeness_test
  mig, sap, modularity, explicitness_train, explicitness_test
  mcc_pearson, mcc_spearman, r2
  udr                                      only with R >= 2 runs
  beta_vae_train, beta_vae_eval,
  factor_vae_train, factor_vae_eval        only with encode_fn and sample_fn

All fit/score metrics share one split drawn from `key`.
"""
from __future__ import annotations

import warnings

import jax
import numpy as np

from nearid_jax.metrics import dci_score
from nearid_jax.metrics import infomec_score
from nearid_jax.metrics import inputs
from nearid_jax.metrics import intervention_scores
from nearid_jax.metrics import mcc_score
from nearid_jax.metrics import mig_score
from nearid_jax.metrics import modularity_score
from nearid_jax.metrics import r2_score
from nearid_jax.metrics import sap_score
from nearid_jax.metrics import udr_score

ALL_METRICS = ("infomec", "dci", "mig", "sap", "modularity_explicitness",
               "mcc", "r2", "udr", "beta_vae", "factor_vae")


def evaluate_all(z, factors, *, key=None, metrics=ALL_METRICS,
                 dci_estimator: str = "logistic", udr_method: str = "lasso",
                 encode_fn=None, sample_fn=None, factor_sizes=None,
                 test_fraction: float = inputs.DEFAULT_TEST_FRACTION,
                 intervention_kwargs: dict | None = None) -> dict:
  """Computes the metric suite for one or R runs.

  Args:
    z: [n, d] codes or [R, n, d] for R runs of the same n inputs.
    factors: [n, K] or [R, n, K] ground-truth factors.
    key: PRNG key (default key(0)); split into the kNN noise, the shared
      fit/score split and the interventional metrics' sampling.
    metrics: names from ALL_METRICS to compute (udr needs R >= 2, beta_vae
      and factor_vae need encode_fn and sample_fn; otherwise skipped).
    dci_estimator: "logistic" (on device) or "gbt" (sklearn reference).
    udr_method: "lasso" or "spearman".
    encode_fn: JAX-traceable observations -> codes, for beta_vae/factor_vae.
    sample_fn: fixed-factor sampler or dataset for beta_vae/factor_vae.
    factor_sizes: factor cardinalities for a plain sample_fn.
    test_fraction: score fraction of the shared split.
    intervention_kwargs: extra arguments of the BetaVAE/FactorVAE scores
      (e.g. smaller num_train for smoke runs).

  Returns:
    dict column -> [R] float64 array (R = 1 for [n, d] input).

  Raises:
    ValueError: unknown metric names, or any input error of the metrics.

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).integers(0, 4, (600, 2))
    >>> t = evaluate_all(u[:, ::-1].astype(np.float32), u,
    ...                  metrics=("mig", "mcc"))
    >>> sorted(t), float(t["mig"][0]) > 0.99
    (['mcc_pearson', 'mcc_spearman', 'mig'], True)
  """
  unknown = set(metrics) - set(ALL_METRICS)
  if unknown:
    raise ValueError(f"unknown metrics {sorted(unknown)}; choose from "
                     f"{ALL_METRICS}.")
  key = inputs.default_key(key)
  k_noise, k_split, k_beta, k_factor = jax.random.split(key, 4)
  zr, _ = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  # Validate and warn once; the metrics below re-encode silently.
  inputs.encode_factors("factors", factors, n, r)
  table = {}

  def add(prefix, scores, rename=None):
    for name, val in scores.items():
      col = (rename or {}).get(name, f"{prefix}{name}")
      if col is None:
        continue
      table[col] = np.atleast_1d(np.asarray(val, np.float64))

  split_kw = dict(key=k_split, test_fraction=test_fraction)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    if "infomec" in metrics:
      add("", infomec_score.infomec(zr, factors, key=k_noise),
          {"num_active": None})
    if "dci" in metrics:
      add("dci_", dci_score.dci(zr, factors, estimator=dci_estimator,
                                **split_kw))
    if "mig" in metrics:
      add("", mig_score.mig(zr, factors))
    if "sap" in metrics:
      add("", sap_score.sap(zr, factors, **split_kw))
    if "modularity_explicitness" in metrics:
      add("", modularity_score.modularity_explicitness(zr, factors,
                                                       **split_kw))
    if "mcc" in metrics:
      add("", mcc_score.mcc(zr, factors, method="pearson"),
          {"mcc": "mcc_pearson"})
      add("", mcc_score.mcc(zr, factors, method="spearman"),
          {"mcc": "mcc_spearman"})
    if "r2" in metrics:
      add("", r2_score.r2(zr, factors, **split_kw))
  if "udr" in metrics and r >= 2:
    add("", udr_score.udr(zr, method=udr_method), {"pairwise": None})
  if encode_fn is not None and sample_fn is not None:
    kw = dict(intervention_kwargs or {})
    if "beta_vae" in metrics:
      s = intervention_scores.beta_vae_score(
          encode_fn, sample_fn, k_beta, factor_sizes=factor_sizes, **kw)
      add("", s, {"train_accuracy": "beta_vae_train",
                  "eval_accuracy": "beta_vae_eval"})
    if "factor_vae" in metrics:
      s = intervention_scores.factor_vae_score(
          encode_fn, sample_fn, k_factor, factor_sizes=factor_sizes, **kw)
      add("", s, {"train_accuracy": "factor_vae_train",
                  "eval_accuracy": "factor_vae_eval",
                  "num_active_dims": None})
  bad = [c for c, v in table.items() if not np.all(np.isfinite(v))]
  if bad:
    warnings.warn(f"non-finite metric values in columns {bad}; please report "
                  "this with the inputs that produced it.", RuntimeWarning,
                  stacklevel=2)
  return table


def to_markdown(table: dict, run_names=None, digits: int = 3,
                summary: bool = True) -> str:
  """Renders an `evaluate_all` table as markdown (runs as rows).

  Args:
    table: dict column -> [R] array.
    run_names: optional R row labels (default "run 0", ...).
    digits: decimals.
    summary: append mean and std rows when R > 1.

  Returns:
    A markdown table string.
  """
  cols = list(table)
  r = len(next(iter(table.values()))) if cols else 0
  names = list(run_names) if run_names is not None else [
      f"run {i}" for i in range(r)]
  fmt = lambda v: f"{v:.{digits}f}"
  lines = ["| run | " + " | ".join(cols) + " |",
           "|---|" + "---|" * len(cols)]
  for i in range(r):
    lines.append(f"| {names[i]} | " + " | ".join(
        fmt(table[c][i]) for c in cols) + " |")
  if summary and r > 1:
    lines.append("| mean | " + " | ".join(
        fmt(np.mean(table[c])) for c in cols) + " |")
    lines.append("| std | " + " | ".join(
        fmt(np.std(table[c])) for c in cols) + " |")
  return "\n".join(lines)
