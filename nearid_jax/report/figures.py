"""The report's figures, drawn with matplotlib's object API.

Each function takes a `Report` and returns a `matplotlib.figure.Figure`
(or None when there is nothing to draw); `save_all` writes the PNGs. No
pyplot state and no backend switch: a library call leaves the caller's
matplotlib as it found it.
"""
from __future__ import annotations

import os

from matplotlib.figure import Figure
import numpy as np

from nearid_jax.report import result as R

LABELS = {"identity": "identity", "perm": "signed perm", "rigid": "rigid",
          "similarity": "similarity", "linear": "linear",
          "ica": "ICA → signed perm"}


def heatmaps(report: R.Report) -> Figure | None:
  """ε per pair (row target, column source): a row of panels per group."""
  groups = [g for g in report.groups if g.statistical is not None]
  if not groups:
    return None
  kinds = list(groups[0].statistical.kinds)
  fig = Figure(figsize=(3.2 * len(kinds), 3.0 * len(groups)), dpi=110)
  axes = np.atleast_2d(fig.subplots(len(groups), len(kinds), squeeze=False))
  vmax = max(np.nanmax(g.statistical.epsilon[k]["mean"]) for g in groups
             for k in kinds)
  for row, g in zip(axes, groups):
    names = report.group_names(g)
    for ax, k in zip(row, kinds):
      im = ax.imshow(g.statistical.epsilon[k]["mean"], vmin=0,
                     vmax=vmax if np.isfinite(vmax) else None,
                     cmap="viridis")
      ax.set_title(f"{LABELS.get(k, k)}"
                   + (f"\n{R.grid_label(g.grid)}" if g.grid else ""),
                   fontsize=8)
      ticks = np.arange(len(names))
      ax.set_xticks(ticks, names, rotation=90, fontsize=6)
      ax.set_yticks(ticks, names, fontsize=6)
    fig.colorbar(im, ax=list(row), shrink=0.8, label="mean ε")
  return fig


def epsilon_by_class(report: R.Report) -> Figure:
  """Mean ε by class, between runs and to the factors, per group."""
  fig = Figure(figsize=(7, 4), dpi=110)
  ax = fig.subplots()
  kinds = [k for k in ("perm", "rigid", "similarity", "linear", "ica",
                       "identity")
           if any((g.statistical and k in g.statistical.kinds)
                  or (g.structural and k in g.structural.kinds)
                  for g in report.groups)]
  series = []
  for g in report.groups:
    tag = f" [{R.grid_label(g.grid)}]" if g.grid else ""
    if g.statistical is not None:
      series.append((f"between runs{tag}", [
          g.statistical.pairs[k]["mean"].mean.value
          if k in g.statistical.pairs else np.nan for k in kinds]))
    if g.structural is not None:
      series.append((f"to the factors{tag}", [
          np.nanmean(g.structural.epsilon[k]["mean"])
          if k in g.structural.epsilon else np.nan for k in kinds]))
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(kinds))
  for i, (label, vals) in enumerate(series):
    ax.bar(x + i * width, vals, width, label=label)
  ax.axhline(report.threshold, color="k", ls="--", lw=0.8, label="τ")
  ax.set_xticks(x + width * (len(series) - 1) / 2,
                [LABELS.get(k, k) for k in kinds], fontsize=8)
  ax.set_ylabel("mean ε")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def mcc(report: R.Report) -> Figure | None:
  """MCC per run, raw and after ICA."""
  groups = [g for g in report.groups if g.metrics is not None]
  if not groups:
    return None
  fig = Figure(figsize=(7, 3.5), dpi=110)
  ax = fig.subplots()
  names, raw, ica = [], [], []
  for g in groups:
    names += report.group_names(g)
    raw += list(g.metrics.tables["raw"]["mcc_pearson"])
    ica += list(g.metrics.tables["ica"]["mcc_pearson"])
  x = np.arange(len(names))
  ax.bar(x - 0.2, raw, 0.4, label="raw")
  ax.bar(x + 0.2, ica, 0.4, label="after ICA")
  ax.set_xticks(x, names, rotation=90, fontsize=6)
  ax.set_ylim(0, 1)
  ax.set_ylabel("MCC to the factors")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def metric_suite(report: R.Report) -> Figure | None:
  """Each metric's mean over runs, per variant (raw, ICA, controls)."""
  groups = [g for g in report.groups if g.metrics is not None
            and len(g.metrics.tables["raw"]) > 3]
  if not groups:
    return None
  fig = Figure(figsize=(8, 3.5 * len(groups)), dpi=110)
  axes = np.atleast_1d(fig.subplots(len(groups), 1, squeeze=False)[:, 0])
  for ax, g in zip(axes, groups):
    tables = g.metrics.tables
    cols = [c for c in tables["raw"] if c not in ("r2",)]
    width = 0.8 / len(tables)
    x = np.arange(len(cols))
    for i, (name, t) in enumerate(tables.items()):
      ax.bar(x + i * width, [np.nanmean(t[c]) if c in t else np.nan
                             for c in cols], width, label=name)
    ax.set_xticks(x + width * (len(tables) - 1) / 2, cols, rotation=45,
                  fontsize=7, ha="right")
    ax.set_title(R.grid_label(g.grid), fontsize=8)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def epsilon_vs_bilipschitz(report: R.Report) -> Figure | None:
  """Rigid ε per pair against max(sqrt(2L + L²)) of the pair's decoders."""
  bl = report.bi_lipschitz
  if bl is None or not np.isfinite(bl.theorem1_factor).any():
    return None
  xs, ys, kind = [], [], None
  for g in report.groups:
    s = g.statistical
    if s is None:
      continue
    kind = "rigid" if "rigid" in s.kinds else s.kinds[0]
    fac = bl.theorem1_factor[g.runs]
    ti, si = np.nonzero(~np.eye(len(g.runs), dtype=bool))
    xs.append(np.maximum(fac[ti], fac[si]))
    ys.append(s.epsilon[kind]["mean"][ti, si])
  if not xs:
    return None
  x, y = np.concatenate(xs), np.concatenate(ys)
  fig = Figure(figsize=(5, 4), dpi=110)
  ax = fig.subplots()
  ax.scatter(x, y, s=12)
  if bl.data_bound:
    l = bl.data_bound - 1
    ax.axvline(np.sqrt(2 * l + l * l), color="k", ls="--", lw=0.8,
               label="true mixing")
    ax.legend(fontsize=7)
  ax.set_xlabel("sqrt(2L + L²) (max of the pair)")
  ax.set_ylabel(f"{kind} ε")
  fig.tight_layout()
  return fig


def epsilon_vs_grid(report: R.Report) -> Figure | None:
  """Mean ε (95% interval) against the swept value, one line per class."""
  groups = [g for g in report.groups if g.statistical is not None and g.grid]
  fields = list(dict.fromkeys(f for g in groups for f in g.grid))
  if len(groups) < 2 or not fields:
    return None
  field = fields[0]  # a sweep of one field; several: the first one's axis
  fig = Figure(figsize=(5.5, 4), dpi=110)
  ax = fig.subplots()
  x = np.array([float(g.grid.get(field, np.nan)) for g in groups])
  for k in groups[0].statistical.kinds:
    iv = [g.statistical.pairs[k]["mean"].mean for g in groups]
    v = np.array([i.value for i in iv])
    err = np.abs(np.array([[i.value - i.low for i in iv],
                           [i.high - i.value for i in iv]]))
    ax.errorbar(x, v, yerr=err, marker="o", capsize=3,
                label=LABELS.get(k, k))
  ax.axhline(report.threshold, color="k", ls="--", lw=0.8, label="τ")
  ax.set_xlabel(field)
  ax.set_ylabel("mean ε over pairs")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


FIGURES = {"epsilon_heatmaps.png": heatmaps,
           "epsilon_by_class.png": epsilon_by_class,
           "mcc.png": mcc, "disentanglement.png": metric_suite,
           "epsilon_vs_bilipschitz.png": epsilon_vs_bilipschitz,
           "epsilon_vs_grid.png": epsilon_vs_grid}


def save_all(report: R.Report, workdir: str) -> list[str]:
  """Writes every figure that has something to show; returns the paths."""
  paths = []
  for name, make in FIGURES.items():
    fig = make(report)
    if fig is not None:
      path = os.path.join(workdir, name)
      fig.savefig(path)
      paths.append(path)
  return paths
