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
