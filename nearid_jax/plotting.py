"""Figures researchers would rather look at than read (matplotlib, Agg)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def plot_loss_curves(steps: np.ndarray, losses: np.ndarray,
                     run_names: Sequence[str], path: str, *,
                     diverged: Sequence[bool] | None = None,
                     title: str = "Training loss per run") -> str:
  """Plots one loss curve per run on a log scale and saves a PNG.

  Args:
    steps: [T] logged steps.
    losses: [T, R] loss per logged step and run (NaN where missing).
    run_names: R legend labels.
    path: output PNG path.
    diverged: optional [R] flags; diverged runs are drawn dashed and marked.
    title: figure title.

  Returns:
    `path`.
  """
  losses = np.asarray(losses, np.float64)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  cmap = plt.get_cmap("viridis", max(len(run_names), 2))
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
  fig.savefig(path)
  plt.close(fig)
  return path


# --- near-identifiability report (nearid_jax.report) -------------------------

_KIND_LABELS = {"identity": "identity", "perm": "signed perm",
                "rigid": "rigid", "similarity": "similarity",
                "linear": "linear", "ica": "ICA → signed perm"}


def plot_epsilon_heatmaps(matrices: dict[str, np.ndarray],
                          run_names: Sequence[str], path: str, *,
                          title: str = "mean ℓ2 error / target diameter"
                          ) -> str:
  """One heatmap of the [R, R] ε matrix per alignment class, shared scale.

  Args:
    matrices: {kind: [R, R]} with rows the target run, columns the source
      (NaN for invalid runs, drawn blank).
    run_names: R tick labels.
    path: output PNG path.
    title: figure title.

  Returns:
    `path`.
  """
  kinds = list(matrices)
  vals = np.concatenate([np.asarray(m, np.float64).ravel()
                         for m in matrices.values()])
  vmax = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
  fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds) + 1, 3.4),
                           dpi=120, squeeze=False)
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
  fig.savefig(path, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_epsilon_by_class(summary: dict[str, dict[str, tuple[float, float]]],
                          path: str, *,
                          title: str = "ε by alignment class, before and "
                                       "after ICA") -> str:
  """Bars of mean ε (± spread) per class, for each group of measurements.

  Args:
    summary: {group: {kind: (mean, spread)}}, e.g. {"between runs": ...,
      "to the true factors": ...}; "ica" is drawn hatched (after ICA).
    path: output PNG path.
    title: figure title.

  Returns:
    `path`.
  """
  groups = list(summary)
  kinds = []
  for g in groups:
    kinds += [k for k in summary[g] if k not in kinds]
  width = 0.8 / max(len(groups), 1)
  fig, ax = plt.subplots(figsize=(1.4 * len(kinds) + 2, 3.8), dpi=120)
  x = np.arange(len(kinds))
  colours = plt.get_cmap("tab10")
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
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_mcc(mcc_raw: np.ndarray, mcc_ica: np.ndarray,
             run_names: Sequence[str], path: str, *,
             title: str = "MCC to the true factors, before and after ICA"
             ) -> str:
  """Paired bars of MCC per run: the raw representation and its ICA."""
  x = np.arange(len(run_names))
  fig, ax = plt.subplots(figsize=(0.5 * len(run_names) + 3, 3.6), dpi=120)
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
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_epsilon_vs_bilipschitz(factor: np.ndarray, eps: np.ndarray,
                                path: str, *, kind: str = "rigid",
                                data_factor: float | None = None,
                                title: str = "ε against the decoders' "
                                             "bi-Lipschitz estimate") -> str:
  """Scatter of pairwise ε against sqrt(2L + L²) (Theorem 1).

  Args:
    factor: [P] sqrt(2L + L²) per pair, L the larger of the two runs'.
    eps: [P] ε of the pair.
    path: output PNG path.
    kind: the alignment class of `eps` (axis label).
    data_factor: the true mixing's sqrt(2L + L²), drawn as a line.
    title: figure title.

  Returns:
    `path`.
  """
  fig, ax = plt.subplots(figsize=(5, 3.8), dpi=120)
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
  fig.savefig(path)
  plt.close(fig)
  return path


def plot_metric_suite(raw: dict[str, np.ndarray], ica: dict[str, np.ndarray],
                      path: str, *,
                      title: str = "Disentanglement metrics, before and "
                                   "after ICA") -> str:
  """Paired bars (mean ± sd over runs) of each metric, raw and after ICA.

  Args:
    raw: column -> [R] values of the raw representation.
    ica: column -> [R] values after ICA (same columns, missing ones empty).
    path: output PNG path.
    title: figure title.

  Returns:
    `path`.
  """
  cols = list(raw)
  x = np.arange(len(cols))
  stats = lambda d: (np.array([np.nanmean(d.get(c, [np.nan])) for c in cols]),  # noqa: E731
                     np.array([np.nanstd(d.get(c, [np.nan])) for c in cols]))
  fig, ax = plt.subplots(figsize=(0.55 * len(cols) + 3, 3.8), dpi=120)
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
  fig.savefig(path)
  plt.close(fig)
  return path
