"""Batch effects in cell-microscopy embeddings: the paper's Base / PCA /
PCA+ICA / PCA+Rand comparison (Nelson et al. 2026, cell experiment).

`analyse(x, genes, batches, control=...)` fits the four transforms
(`transforms`) on the control wells (or all wells), applies them to every
well, and scores each (`evaluation`): held-out-batch gene AUROC (higher is
better), batch-prediction AUROC (lower is better), Hoyer sparsity and the
concentration of each gene's signal in its top features. The paper's
finding: PCA+ICA > PCA ≈ PCA+Rand > Base on held-out batches, with the
sparsest, most concentrated features for PCA+ICA.

    res = analyse(x, table.metadata["gene"], table.metadata["experiment_name"],
                  control="EMPTY_control", key=jax.random.key(0))
    res.scores["pca_ica"].gene_auroc      # [R, B, C]
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from nearid_jax import validation
from nearid_jax.batch_effects import evaluation
from nearid_jax.batch_effects import transforms
from nearid_jax.batch_effects.evaluation import batch_auroc
from nearid_jax.batch_effects.evaluation import heldout_auroc
from nearid_jax.batch_effects.evaluation import hoyer
from nearid_jax.batch_effects.evaluation import hoyer_sparsity
from nearid_jax.batch_effects.evaluation import signal_concentration
from nearid_jax.batch_effects.transforms import KINDS
from nearid_jax.batch_effects.transforms import LABELS
from nearid_jax.batch_effects.transforms import Transform
from nearid_jax.batch_effects.transforms import apply
from nearid_jax.batch_effects.transforms import fit

__all__ = [
    "Analysis", "KINDS", "LABELS", "Scores", "Transform", "analyse", "apply",
    "batch_auroc", "fit", "heldout_auroc", "hoyer", "hoyer_sparsity",
    "signal_concentration",
]
FIT_ON = ("control", "all")
# float32 embeddings resolve about 1e-7 of the largest variance; directions
# below this share are noise, not signal.
_RANK_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Scores:
  """One transform's scores (R runs, B batches, C classes).

  Attributes:
    gene_auroc: [R, B, C] held-out-batch AUROC (NaN: control class, or
      batch b lacks the class or its negatives).
    batch_auroc: [R] cross-validated batch-prediction AUROC.
    hoyer: [R] mean Hoyer sparsity.
    concentration: [R, C] signal concentration (NaN for the control).
  """
  gene_auroc: np.ndarray
  batch_auroc: np.ndarray
  hoyer: np.ndarray
  concentration: np.ndarray


@dataclasses.dataclass(frozen=True)
class Analysis:
  """Everything `analyse` computed.

  Attributes:
    scores: kind -> Scores.
    transforms: kind -> the fitted Transform (leading [R] axis).
    class_names: [C] class values (sorted); code c is class_names[c].
    batch_names: [B] batch values (sorted).
    control: code of the control class.
    fit_on: "control" or "all".
    n_components: PCA components used (the fit rows' numerical rank unless
      given).
  """
  scores: dict[str, Scores]
  transforms: dict[str, Transform]
  class_names: list[str]
  batch_names: list[str]
  control: int
  fit_on: str
  n_components: int


def _check_design(classes, batches, control, fit_on, negatives, what,
                  batch_what):
  """Host checks of the well design; raises ValueError naming the culprit."""
  class_names, y = np.unique(classes, return_inverse=True)
  batch_names, b = np.unique(batches, return_inverse=True)
  if len(batch_names) < 2:
    raise ValueError(f"need wells from >= 2 {batch_what} values for a "
                     f"leave-one-batch-out classifier, got "
                     f"{list(batch_names)}.")
  ctrl = np.flatnonzero(class_names == control)
  if not ctrl.size:
    need = [w for w, on in ((f"fit_on='{fit_on}'", fit_on == "control"),
                            (f"negatives='{negatives}'",
                             negatives == "control")) if on]
    raise ValueError(
        f"no control wells: no {what} equals {control!r} (values: "
        f"{_few(class_names)})" + (f"; {' and '.join(need)} need(s) them"
                                   if need else "")
        + ". Set the control value, or fit on all wells (fit_on='all') "
        "with negatives='rest'.")
  control_code = int(ctrl[0])
  present = np.zeros((len(class_names), len(batch_names)), bool)
  present[y, b] = True
  single = [c for c in range(len(class_names))
            if c != control_code and present[c].sum() < 2]
  if single:
    where = [f"{str(class_names[c])!r} (only in "
             f"{str(batch_names[present[c]][0])!r})" for c in single]
    raise ValueError(
        f"{what} {', '.join(where[:10])}{' ...' if len(where) > 10 else ''} "
        f"occur(s) in one {batch_what} only: a leave-one-batch-out "
        "classifier can neither train nor test it there. Drop these wells "
        "or choose a coarser batch column.")
  return class_names, y, batch_names, b, control_code


def analyse(x, classes: Sequence, batches: Sequence, *, control,
            key: jax.Array, kinds: Sequence[str] = KINDS,
            fit_on: str = "control", n_components: int | None = None,
            negatives: str = "control", l1: float = 0.01,
            num_iters: int = 300, batch_folds: int = 5,
            top_fraction: float = 0.25, what: str = "gene",
            batch_what: str = "batch") -> Analysis:
  """Fits every transform and scores it (see the module docs).

  Args:
    x: [n, d] or [R, n, d] float embeddings of n wells (R runs, e.g. seeds
      of one model, sharing the wells).
    classes: [n] class of each well (gene; the control value included).
    batches: [n] batch of each well (experiment or plate).
    control: the class value of control wells.
    key: a `jax.random.key` (ICA starts, random rotations, batch folds).
    kinds: transforms among KINDS.
    fit_on: "control" (fit each transform on the control wells) or "all".
    n_components: PCA components (None: the numerical rank of the fit
      rows, at most d).
    negatives: "control" or "rest" (see `evaluation.heldout_auroc`).
    l1: L1 strength of the classifiers.
    num_iters: FISTA iterations of the classifiers.
    batch_folds: folds of the batch-prediction cross-validation.
    top_fraction: q of the signal concentration.
    what, batch_what: names of the class and batch columns in messages.

  Returns:
    An `Analysis`.

  Raises:
    TypeError: x is not floating point.
    ValueError: NaN/Inf embeddings (rows named), lengths that differ, fewer
      than 2 batches, no control wells, a class in one batch only (named),
      too few fit rows for the components, unknown options.

  Examples:
    >>> import jax, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> genes = np.repeat(["ctrl", "A", "B"], 40)
    >>> batches = np.tile(["e1", "e2"], 60)
    >>> x = rng.normal(size=(120, 4)).astype(np.float32)
    >>> x[genes == "A", 0] += 2.0
    >>> res = analyse(x, genes, batches, control="ctrl",
    ...               key=jax.random.key(0), kinds=("base", "pca"))
    >>> res.scores["pca"].gene_auroc.shape        # [R, B, C]
    (1, 2, 3)
    >>> bool(np.nanmean(res.scores["base"].gene_auroc[0, :, 0]) > 0.8)
    True
  """
  validation.check_float("x", x)
  validation.check_ndim("x", x, (2, 3), "([n, d] or [R, n, d] runs)")
  x = np.asarray(x, np.float32)
  x = x[None] if x.ndim == 2 else x
  r, n, d = x.shape
  validation.check_finite("x", x, run_axis=0, row_axis=1)
  classes, batches = np.asarray(classes), np.asarray(batches)
  if classes.shape != (n,) or batches.shape != (n,):
    raise ValueError(f"classes and batches must have one value per well "
                     f"(n={n}), got shapes {classes.shape} and "
                     f"{batches.shape}.")
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got "
                     f"{tuple(kinds)}.")
  if fit_on not in FIT_ON:
    raise ValueError(f"fit_on must be one of {FIT_ON}, got {fit_on!r}.")
  if negatives not in evaluation.NEGATIVES:
    raise ValueError(f"negatives must be one of {evaluation.NEGATIVES}, "
                     f"got {negatives!r}.")
  class_names, y, batch_names, b, ctrl = _check_design(
      classes, batches, control, fit_on, negatives, what, batch_what)
  fit_rows = (y == ctrl) if fit_on == "control" else np.ones(n, bool)
  m = int(fit_rows.sum())
  rank = _numerical_rank(x[:, fit_rows])
  k = min(rank, m - 1) if n_components is None else int(n_components)
  which = f"{'control ' if fit_on == 'control' else ''}wells"
  if not 2 <= k <= d:
    raise ValueError(f"n_components must be in [2, d={d}], got {k} "
                     f"({m} fit {which}, covariance rank {rank}).")
  if m <= k:
    raise ValueError(
        f"{m} {which} to fit a {k}-component PCA: need more than {k}. Pass "
        f"n_components < {m} or fit_on='all'.")
  if k > rank:
    raise ValueError(
        f"the {m} fit {which} span only {rank} of {d} dimensions (covariance"
        f" eigenvalues below {_RANK_RTOL:g} x the largest), fewer than "
        f"n_components={k}; pass n_components <= {rank} or None (the rank).")
  num_c, num_b = len(class_names), len(batch_names)
  k_fit, k_batch = jax.random.split(key)
  yj, bj = jax.numpy.asarray(y, np.int32), jax.numpy.asarray(b, np.int32)
  scores, fitted = {}, {}
  for i, kind in enumerate(kinds):
    t = fit(x[:, fit_rows], kind, jax.random.fold_in(k_fit, i),
            n_components=k)
    f = apply(t, x)
    gene = evaluation.heldout_auroc_runs(
        f, yj, bj, control=ctrl, num_classes=num_c, num_batches=num_b,
        negatives=negatives, l1=l1, num_iters=num_iters)
    batch = evaluation.batch_auroc_runs(
        f, bj, jax.random.split(k_batch, r), num_batches=num_b,
        folds=batch_folds, l1=l1, num_iters=num_iters)
    hoy, conc = evaluation.sparsity_runs(
        f, yj, bj, control=ctrl, num_classes=num_c, num_batches=num_b,
        top_fraction=top_fraction)
    scores[kind] = Scores(np.asarray(gene), np.asarray(batch),
                          np.asarray(hoy), np.asarray(conc))
    fitted[kind] = t
  return Analysis(scores, fitted, [str(c) for c in class_names],
                  [str(v) for v in batch_names], ctrl, fit_on, k)


def _numerical_rank(x_fit: np.ndarray) -> int:
  """Smallest numerical rank over runs of the fit rows' covariance.

  Embeddings after a LayerNorm, e.g. a ViT's mean patch token, lie in a
  hyperplane (rank d - 1): whitening the null direction would blow noise
  up, so PCA keeps only the directions above _RANK_RTOL x the largest
  eigenvalue.
  """
  xc = x_fit.astype(np.float64) - x_fit.mean(1, keepdims=True)
  lam = np.linalg.eigvalsh(np.einsum("rni,rnj->rij", xc, xc))
  return int(min((l > _RANK_RTOL * l[-1]).sum() for l in lam))


def _few(values, k: int = 8) -> str:
  v = [str(s) for s in list(values)[:k + 1]]
  return ", ".join(v[:k]) + (", ..." if len(v) > k else "")
