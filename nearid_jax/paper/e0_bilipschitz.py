"""The warm-up: rigid ε between runs tracks the decoder's bi-Lipschitz bound.

PAPER.md §4 (warm-up) and Theorem 1: autoencoders whose 3-layer decoder
uses LeakyReLU with slope α; as α falls the decoder is less bi-Lipschitz
(1 + L grows, the bound ≈ 1/α³), and the rigid alignment error between
runs should grow with sqrt(2L + L²).

For each dataset (`config.datasets`: "synthetic", the built-in process,
and "digits", scikit-learn's bundled 8x8 digits as the offline MNIST), one
program trains every (α, seed) run (`grid.negative_slope` = config.alphas
× `num_seeds`). Per α, over its seeds:

  * eps_rigid: each run's mean rigid ε to the other runs of its α
    (`align.pairwise_epsilon`, mean ℓ2 / diameter of the target run);
  * one_plus_l: the run's decoder estimate 1 + L
    (`align.decoder_bi_lipschitz` at its own latent codes);
  * factor: sqrt(2L + L²) (`align.theorem1_factor`).

Summaries: the Spearman correlation over α between the per-α mean ε and
mean factor (the paper's claim: positive), and over runs (seeds as
points). The plot (`e0_bilipschitz.png`) shows ε against sqrt(2L + L²)
with each run a point coloured by α, and the bound ε = c · sqrt(2L + L²)
drawn with c the smallest constant that covers every run (Theorem 1's
c_D is not computable; the line shows the bound's form, and the points'
distance below it its slack).
"""
from __future__ import annotations

import os
from typing import Any

import jax
from matplotlib import figure
import ml_collections
import numpy as np

from nearid_jax import align
from nearid_jax.paper import aggregate
from nearid_jax.paper import runs as runs_lib

NAME = "e0_bilipschitz"


def _configs(config) -> dict[str, ml_collections.ConfigDict]:
  out = {}
  for name in config.datasets:
    if name not in config.models:
      raise ValueError(f"config.datasets: {name!r} has no trainer config in "
                       f"config.models (known: {sorted(config.models)}).")
    cfg = config.models[name].copy_and_resolve_references()
    cfg.grid.negative_slope = tuple(float(a) for a in config.alphas)
    out[name] = cfg
  return out


def _check(config):
  alphas = [float(a) for a in config.alphas]
  if len(alphas) < 2 or any(not 0 < a <= 1 for a in alphas):
    raise ValueError(f"config.alphas: need at least 2 slopes in (0, 1], got "
                     f"{alphas}.")
  if len(set(alphas)) != len(alphas):
    raise ValueError(f"config.alphas: repeated slopes {alphas}.")


def analyse(trained: runs_lib.Trained, alphas, key, points: int
            ) -> dict[str, Any]:
  """Per-run ε and 1 + L of one dataset's runs, grouped by α."""
  z = trained.z["latent"]
  r = z.shape[0]
  eps = np.full(r, np.nan)
  for g in range(len(alphas)):
    idx = trained.runs_at(g)
    if len(idx) < 2:
      continue
    res = align.pairwise_epsilon(z[idx], ("rigid",),
                                 key=jax.random.fold_in(key, g))
    mat = np.asarray(res["rigid"]["mean"], np.float64)
    off = ~np.eye(len(idx), dtype=bool)
    eps[idx] = np.nanmean(np.where(off, mat, np.nan), axis=1)
  one_plus_l = runs_lib.decoder_one_plus_l(trained, points)
  factor = align.theorem1_factor(one_plus_l)
  return {"alpha": np.asarray(alphas)[trained.grid_index], "eps": eps,
          "one_plus_l": one_plus_l, "factor": factor}


def _plot(per_dataset: dict[str, dict], path: str) -> None:
  names = list(per_dataset)
  fig = figure.Figure(figsize=(5 * len(names), 4), layout="constrained")
  axes = fig.subplots(1, len(names), squeeze=False)[0]
  for ax, name in zip(axes, names):
    d = per_dataset[name]
    ok = np.isfinite(d["eps"]) & np.isfinite(d["factor"])
    sc = ax.scatter(d["factor"][ok], d["eps"][ok], c=d["alpha"][ok],
                    cmap="viridis", s=25)
    fig.colorbar(sc, ax=ax, label="LeakyReLU slope α")
    if ok.any() and np.any(d["factor"][ok] > 0):
      pos = ok & (d["factor"] > 0)
      c = float(np.max(d["eps"][pos] / d["factor"][pos]))
      xs = np.linspace(0, float(np.max(d["factor"][ok])) * 1.05, 50)
      ax.plot(xs, c * xs, "k--", label=f"bound c·√(2L+L²), c = {c:.3g}")
      ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("√(2L + L²) of the decoder")
    ax.set_ylabel("rigid ε between runs (mean ℓ2 / diameter)")
    ax.set_title(name)
  fig.savefig(path, dpi=110)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the α sweep on every dataset, measures, writes the results.

  Writes results.json, results.md and e0_bilipschitz.png to `workdir`
  (training under workdir/train/<dataset>, resumed when rerun).

  Raises:
    ValueError: for bad alphas or a dataset without a trainer config.
  """
  _check(config)
  alphas = [float(a) for a in config.alphas]
  configs = _configs(config)
  key = jax.random.key(config.seed)
  records, per_dataset, trained_all = [], {}, {}
  for i, (name, cfg) in enumerate(configs.items()):
    trained = runs_lib.train_model(name, cfg, workdir)
    trained_all[name] = trained
    d = analyse(trained, alphas, jax.random.fold_in(key, i),
                config.bi_lipschitz_points)
    per_dataset[name] = d
    table = f"e0_{name}"
    means_eps, means_fac = [], []
    for g, a in enumerate(alphas):
      sel = trained.grid_index == g
      row = f"α={a:g}"
      for col in ("eps", "one_plus_l", "factor"):
        records.append(aggregate.record(table, row, col, d[col][sel],
                                        dataset=name, alpha=a))
      means_eps.append(np.nanmean(d["eps"][sel]) if np.isfinite(
          d["eps"][sel]).any() else np.nan)
      means_fac.append(np.nanmean(d["factor"][sel]) if np.isfinite(
          d["factor"][sel]).any() else np.nan)
    rho_alpha = aggregate.spearman(means_fac, means_eps)
    rho_runs = aggregate.spearman(d["factor"], d["eps"])
    records.append(aggregate.point(table, "spearman over α", "rho",
                                   rho_alpha, len(alphas), dataset=name))
    records.append(aggregate.point(table, "spearman over runs", "rho",
                                   rho_runs, int(np.isfinite(d["eps"]).sum()),
                                   dataset=name))
  _plot(per_dataset, os.path.join(workdir, "e0_bilipschitz.png"))
  md = _markdown(records, alphas, list(configs))
  speed = runs_lib.speed_rows(trained_all, configs, None)
  md += "\n\n## Speed\n\n" + runs_lib.speed_markdown(speed) + "\n"
  return aggregate.write_results(
      workdir, NAME, records, md, alphas=alphas, speed=speed,
      plots=["e0_bilipschitz.png"],
      runs={n: {"seed": t.seed, "alpha": per_dataset[n]["alpha"],
                "eps": per_dataset[n]["eps"],
                "one_plus_l": per_dataset[n]["one_plus_l"]}
            for n, t in trained_all.items()})


def _markdown(records, alphas, datasets) -> str:
  parts = ["# Warm-up: rigid ε between runs vs the decoder's bi-Lipschitz "
           "bound", "",
           "Mean ± 95% t-interval over seeds. ε: mean rigid ε of each run to "
           "the other runs of its α (mean ℓ2 / diameter); 1 + L: decoder "
           "Jacobian estimate; √(2L+L²): Theorem 1's factor. Paper "
           "(qualitative, MNIST): ε tracks √(2L + L²).", ""]
  rows = [f"α={a:g}" for a in alphas]
  for name in datasets:
    table = f"e0_{name}"
    parts += [f"## {name}", "",
              aggregate.markdown_table(
                  records, table, rows, ("eps", "one_plus_l", "factor"),
                  ("rigid ε", "1 + L", "√(2L+L²)"), row_header="slope"),
              ""]
    for row in ("spearman over α", "spearman over runs"):
      r = aggregate.find(records, table=table, row=row)
      parts.append(f"* {row} (√(2L+L²) vs ε): {aggregate.fmt(r)} "
                   f"(n = {r['n']})")
    parts.append("")
  return "\n".join(parts)
