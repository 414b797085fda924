"""Figures researchers would rather look at than read.

Every function builds a `matplotlib.figure.Figure` with the object API,
writes it to `path` when one is given (PNG, any backend: no display is
needed) and returns it. Nothing here touches pyplot or the process's
backend, so a notebook keeps its inline backend, and a returned figure
shows itself in Jupyter or Colab when it ends a cell.

Examples:
  >>> import numpy as np
  >>> fig = plot_loss_curves(np.arange(3), np.ones((3, 2)), ["a", "b"])
  >>> type(fig).__mro__[1].__name__, len(fig.axes)
  ('Figure', 1)
"""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib
from matplotlib import figure as mpl_figure
import numpy as np


class _Figure(mpl_figure.Figure):
  """A Figure that IPython renders as PNG without pyplot being imported."""

  def _repr_png_(self) -> bytes:
    buf = io.BytesIO()
    self.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _figure(figsize, **kwargs) -> _Figure:
  return _Figure(figsize=figsize, dpi=120, **kwargs)


def _save(fig: mpl_figure.Figure, path: str | None, **kwargs
          ) -> mpl_figure.Figure:
  if path is not None:
    fig.savefig(path, **kwargs)
  return fig


def _cmap(name: str, n: int | None = None):
  cmap = matplotlib.colormaps[name]
  return cmap.resampled(n) if n else cmap


def plot_loss_curves(steps: np.ndarray, losses: np.ndarray,
                     run_names: Sequence[str], path: str | None = None, *,
                     diverged: Sequence[bool] | None = None,
                     title: str = "Training loss per run") -> mpl_figure.Figure:
  """Plots one loss curve per run on a log scale and saves a PNG.

  Args:
    steps: [T] logged steps.
    losses: [T, R] loss per logged step and run (NaN where missing).
    run_names: R legend labels.
    path: output PNG path (None: only return the figure).
    diverged: optional [R] flags; diverged runs are drawn dashed and marked.
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  losses = np.asarray(losses, np.float64)
  fig = _figure((7, 4.5))
  ax = fig.subplots()
  cmap = _cmap("viridis", max(len(run_names), 2))
  for r, name in enumerate(run_names):
    bad = diverged is not None and diverged[r]
    ax.plot(steps, losses[:, r], color=cmap(r), lw=1.2,
            ls="--" if bad else "-",
            label=f"{name} (diverged)" if bad else name)
  positive = losses[np.isfinite(losses) & (losses > 0)]
  if positive.size and positive.max() / positive.min() > 20:
    ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(run_names) <= 16:
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return _save(fig, path)


# --- near-identifiability report (nearid_jax.report) -------------------------

_KIND_LABELS = {"identity": "identity", "perm": "signed perm",
                "rigid": "rigid", "similarity": "similarity",
                "linear": "linear", "ica": "ICA → signed perm"}


def plot_epsilon_heatmaps(matrices: dict[str, np.ndarray],
                          run_names: Sequence[str], path: str | None = None, *,
                          title: str = "mean ℓ2 error / target diameter"
                          ) -> mpl_figure.Figure:
  """One heatmap of the [R, R] ε matrix per alignment class, shared scale.

  Args:
    matrices: {kind: [R, R]} with rows the target run, columns the source
      (NaN for invalid runs, drawn blank).
    run_names: R tick labels.
    path: output PNG path (None: only return the figure).
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  kinds = list(matrices)
  vals = np.concatenate([np.asarray(m, np.float64).ravel()
                         for m in matrices.values()])
  vmax = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
  fig = _figure((3.2 * len(kinds) + 1, 3.4))
  axes = fig.subplots(1, len(kinds), squeeze=False)
  im = None
  for ax, kind in zip(axes[0], kinds):
    im = ax.imshow(np.asarray(matrices[kind], np.float64), vmin=0,
                   vmax=vmax, cmap="magma_r")
    ax.set_title(_KIND_LABELS.get(kind, kind), fontsize=9)
    ticks = np.arange(len(run_names))
    small = len(run_names) <= 12
    ax.set_xticks(ticks if small else [])
    ax.set_yticks(ticks if small else [])
    if small:
      ax.set_xticklabels(run_names, rotation=90, fontsize=6)
      ax.set_yticklabels(run_names, fontsize=6)
    ax.set_xlabel("source run", fontsize=8)
  axes[0][0].set_ylabel("target run", fontsize=8)
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path, bbox_inches="tight")


def plot_epsilon_by_class(summary: dict[str, dict[str, tuple[float, float]]],
                          path: str | None = None, *,
                          title: str = "ε by alignment class, before and "
                                       "after ICA") -> mpl_figure.Figure:
  """Bars of mean ε (± spread) per class, for each group of measurements.

  Args:
    summary: {group: {kind: (mean, spread)}}, e.g. {"between runs": ...,
      "to the true factors": ...}; "ica" is drawn hatched (after ICA).
    path: output PNG path (None: only return the figure).
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  groups = list(summary)
  kinds = []
  for g in groups:
    kinds += [k for k in summary[g] if k not in kinds]
  width = 0.8 / max(len(groups), 1)
  fig = _figure((1.4 * len(kinds) + 2, 3.8))
  ax = fig.subplots()
  x = np.arange(len(kinds))
  colours = _cmap("tab10")
  for gi, g in enumerate(groups):
    means = [summary[g].get(k, (np.nan, np.nan))[0] for k in kinds]
    spread = [summary[g].get(k, (np.nan, np.nan))[1] for k in kinds]
    bars = ax.bar(x + (gi - (len(groups) - 1) / 2) * width, means, width,
                  yerr=spread, capsize=3, color=colours(gi), label=g)
    for k, bar in zip(kinds, bars):
      if k == "ica":
        bar.set_hatch("//")
  ax.set_xticks(x)
  ax.set_xticklabels([_KIND_LABELS.get(k, k) for k in kinds], fontsize=8)
  ax.set_ylabel("mean ℓ2 error / diameter")
  ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def plot_mcc(mcc_raw: np.ndarray, mcc_ica: np.ndarray,
             run_names: Sequence[str], path: str | None = None, *,
             title: str = "MCC to the true factors, before and after ICA"
             ) -> mpl_figure.Figure:
  """Paired bars of MCC per run: the raw representation and its ICA."""
  x = np.arange(len(run_names))
  fig = _figure((0.5 * len(run_names) + 3, 3.6))
  ax = fig.subplots()
  ax.bar(x - 0.2, mcc_raw, 0.4, label="raw representation")
  ax.bar(x + 0.2, mcc_ica, 0.4, label="after ICA", hatch="//")
  ax.set_xticks(x)
  ax.set_xticklabels(run_names, rotation=45, ha="right", fontsize=7)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("MCC (Pearson, Hungarian-matched)")
  ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  return _save(fig, path)


def plot_epsilon_vs_bilipschitz(factor: np.ndarray, eps: np.ndarray,
                                path: str | None = None, *,
                                kind: str = "rigid",
                                data_factor: float | None = None,
                                title: str = "ε against the decoders' "
                                             "bi-Lipschitz estimate"
                                ) -> mpl_figure.Figure:
  """Scatter of pairwise ε against sqrt(2L + L²) (Theorem 1).

  Args:
    factor: [P] sqrt(2L + L²) per pair, L the larger of the two runs'.
    eps: [P] ε of the pair.
    path: output PNG path (None: only return the figure).
    kind: the alignment class of `eps` (axis label).
    data_factor: the true mixing's sqrt(2L + L²), drawn as a line.
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  fig = _figure((5, 3.8))
  ax = fig.subplots()
  ax.scatter(factor, eps, s=14, alpha=0.7)
  if data_factor is not None and np.isfinite(data_factor):
    ax.axvline(data_factor, color="grey", ls="--", lw=1,
               label="true mixing g")
    ax.legend(fontsize=8)
  ax.set_xlabel("sqrt(2L + L²), 1 + L = max(σ_max, 1/σ_min) of the decoder")
  ax.set_ylabel(f"{_KIND_LABELS.get(kind, kind)} ε (mean ℓ2 / diameter)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)


def plot_metric_suite(raw: dict[str, np.ndarray], ica: dict[str, np.ndarray],
                      path: str | None = None, *,
                      title: str = "Disentanglement metrics, before and "
                                   "after ICA") -> mpl_figure.Figure:
  """Paired bars (mean ± sd over runs) of each metric, raw and after ICA.

  Args:
    raw: column -> [R] values of the raw representation.
    ica: column -> [R] values after ICA (same columns, missing ones empty).
    path: output PNG path (None: only return the figure).
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  cols = list(raw)
  x = np.arange(len(cols))
  stats = lambda d: (np.array([np.nanmean(d.get(c, [np.nan])) for c in cols]),  # noqa: E731
                     np.array([np.nanstd(d.get(c, [np.nan])) for c in cols]))
  fig = _figure((0.55 * len(cols) + 3, 3.8))
  ax = fig.subplots()
  for off, d, label, hatch in ((-0.2, raw, "raw representation", None),
                               (0.2, ica, "after ICA", "//")):
    m, s = stats(d)
    ax.bar(x + off, m, 0.4, yerr=s, capsize=2, label=label, hatch=hatch)
  ax.set_xticks(x)
  ax.set_xticklabels(cols, rotation=45, ha="right", fontsize=7)
  ax.set_ylim(0, 1.2)
  ax.set_ylabel("score (higher is better)")
  ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, loc="upper left", ncol=2)
  fig.tight_layout()
  return _save(fig, path)


def plot_model_comparison(scores: dict[str, dict[str, np.ndarray]],
                          path: str | None = None, *,
                          ylabel: str = "score (higher is better)",
                          title: str = "Disentanglement by model"
                          ) -> mpl_figure.Figure:
  """Grouped bars (mean ± sd over runs): one group per metric, one bar per
  model, e.g. AE, β-VAE and AE + ICA scored by InfoM, InfoE and InfoC.

  Args:
    scores: {model: {metric: [R] values (or a float)}}; a metric missing
      for a model is left out of its group.
    path: output PNG path (None: only return the figure).
    ylabel: y-axis label.
    title: figure title.

  Returns:
    The figure (written to `path` first when given).

  Examples:
    >>> fig = plot_model_comparison({"AE": {"infom": [0.3, 0.4]},
    ...                              "AE + ICA": {"infom": [0.8, 0.7]}})
    >>> len(fig.axes[0].patches)
    2
  """
  models = list(scores)
  metric_names = []
  for m in models:
    metric_names += [k for k in scores[m] if k not in metric_names]
  width = 0.8 / max(len(models), 1)
  fig = _figure((1.1 * len(metric_names) * max(len(models), 2) / 2 + 2, 3.8))
  ax = fig.subplots()
  x = np.arange(len(metric_names))
  colours = _cmap("tab10")
  for i, m in enumerate(models):
    vals = [np.atleast_1d(np.asarray(scores[m].get(k, np.nan), np.float64))
            for k in metric_names]
    ax.bar(x + (i - (len(models) - 1) / 2) * width,
           [np.nanmean(v) for v in vals], width,
           yerr=[np.nanstd(v) for v in vals], capsize=3, color=colours(i),
           label=m)
  ax.set_xticks(x)
  ax.set_xticklabels(metric_names, fontsize=8)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


# --- batch effects (nearid_jax.batch_effects, nearid_jax.paper.cells) --------


def plot_batch_effect_auroc(summary: dict, genes: Sequence[str],
                            path: str | None = None, *,
                            title: str = "Gene vs control, leave one batch out"
                            ) -> mpl_figure.Figure:
  """Grouped bars: held-out-batch AUROC per gene and transform, 95% intervals.

  Args:
    summary: `nearid_jax.paper.cells.summarise(analysis)`: per transform a
      "label" and "per_gene_auroc" {gene: {"mean", "lo", "hi"}}.
    genes: the genes to draw, in order.
    path: output PNG path (None: only return the figure).
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  fig = _figure((max(6.0, 0.6 * len(genes) + 2), 4))
  ax = fig.subplots()
  kinds = list(summary)
  w = 0.8 / len(kinds)
  xs = np.arange(len(genes))
  for i, k in enumerate(kinds):
    iv = [summary[k]["per_gene_auroc"][g] for g in genes]
    mean = np.array([v["mean"] for v in iv])
    err = np.array([(v["hi"] - v["lo"]) / 2 if np.isfinite(v["lo"]) else 0.0
                    for v in iv])
    ax.bar(xs + (i - (len(kinds) - 1) / 2) * w, mean, w, yerr=err,
           label=summary[k]["label"], capsize=2)
  ax.axhline(0.5, color="gray", lw=0.8, ls="--")
  ax.set_xticks(xs, genes, rotation=45, ha="right", fontsize=7)
  ax.set_ylabel("held-out-batch AUROC")
  ax.set_ylim(0.2, 1.0)
  ax.legend(fontsize=7, ncol=len(kinds))
  ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path)


def plot_wells_2d(features: dict[str, np.ndarray], batches: Sequence,
                  path: str | None = None, *,
                  title: str = "Wells (run 0), top-2 PCs of each transform's "
                               "features; colour = batch"
                  ) -> mpl_figure.Figure:
  """Wells on the top-2 principal components of each feature set, coloured
  by batch: a batch effect shows as colours that separate.

  Args:
    features: {panel title: [n, k] features of the same n wells}.
    batches: [n] batch of each well.
    path: output PNG path (None: only return the figure).
    title: figure title.

  Returns:
    The figure (written to `path` first when given).
  """
  names, codes = np.unique(np.asarray(batches), return_inverse=True)
  fig = _figure((3.2 * len(features), 3.4))
  axes = fig.subplots(1, len(features), squeeze=False)[0]
  for ax, (label, f) in zip(axes, features.items()):
    f = np.asarray(f, np.float64)
    f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-12)
    _, _, vt = np.linalg.svd(f, full_matrices=False)
    p = f @ vt[:2].T
    ax.scatter(p[:, 0], p[:, 1], c=codes, cmap="tab10", s=4, alpha=0.7,
               vmin=0, vmax=max(9, len(names) - 1))
    ax.set_title(label, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)
