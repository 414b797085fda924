# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Batch effects in cell microscopy: Base / PCA / PCA+ICA / PCA+Rand
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nearid-jax/nearid_jax/blob/main/colabs/cell_batch_effects.ipynb)
#
# Embeddings of Cell Painting wells from a foundation model (OpenPhenom,
# your own MAE, …) carry batch effects: wells of one experiment or plate
# look alike whatever their perturbation. The paper's cell experiment
# (`docs/paper.md`) compares four ways to post-process the embeddings,
# each fitted on the control wells only:
#
# * **Base** — the embeddings as they are;
# * **PCA** — PCA whitening on the controls (TVN-style batch correction);
# * **PCA+ICA** — PCA whitening, then FastICA: independent coordinates;
# * **PCA+Rand** — PCA whitening, then a random rotation (the control for
#   ICA: same whitening, arbitrary axes).
#
# and scores each: the AUROC of a sparse classifier telling each gene's
# wells from controls **in a batch it never saw** (higher is better), how
# well the batch itself can be predicted (lower is better), and how sparse
# and concentrated each gene's signal is. The paper's finding:
# PCA+ICA > PCA ≈ PCA+Rand > Base on held-out batches.
#
# **Runtime**: CPU is enough for ~10⁴ wells × 384 dims; a GPU helps beyond.
# Set `NEARID_SMOKE=1` for the CI sizes. The first cell installs
# nearid_jax on Colab without touching Colab's own JAX; locally, use
# `pip install -e ".[notebook]"` in the repository.

# %%
# Where Colab installs nearid_jax from: the repository, or your fork of it.
REPO_URL = "https://github.com/nearid-jax/nearid_jax"

try:
  import google.colab  # noqa: F401
  # --no-deps keeps Colab's preinstalled jax/flax/optax/orbax as they are
  # (never downgraded); the second line adds the two packages Colab lacks.
  # %pip install -q --no-deps "nearid_jax @ git+{REPO_URL}"
  # %pip install -q ml_collections tensorboardX
except ImportError:
  pass

import csv
import os

import jax
import numpy as np

from nearid_jax import batch_effects
from nearid_jax import compile_cache
from nearid_jax import plotting
from nearid_jax.data import embeddings
from nearid_jax.paper import cells

SMOKE = os.environ.get("NEARID_SMOKE") == "1"  # CI sizes
# Compiled programs persist across sessions (~/.cache/nearid_jax/jax).
compile_cache.enable()
print("jax", jax.__version__, "on", jax.devices())
print("Recommended runtime: CPU (Runtime > Change runtime type > CPU)")

# %% [markdown]
# ## Your embeddings and metadata
# Set `EMBEDDINGS` (`.parquet`, `.npz` with arrays `well_id` and
# `embeddings`, `.csv` or `.npy`) and `METADATA` (a CSV with `well_id`,
# `gene`, `experiment_name`, … — the RxRx3-core layout). Rows are joined
# on `well_id`; controls are the wells whose `gene` is `EMPTY_control`.
#
# Left empty, this cell writes a stand-in pair: 9 independent biological
# "programs" (Laplace-distributed) mixed linearly into 32 embedding
# dimensions, each of 8 genes shifting one program, strong nuisance
# variation along 3 directions that also shifts with the experiment (the
# batch effect), plus a little noise in every dimension.

# %%
EMBEDDINGS, METADATA = "", ""
CONTROL = "EMPTY_control"

if not EMBEDDINGS:
  rng = np.random.default_rng(0)
  genes = [f"GENE{i}" for i in range(8)]
  wells_per = (24 if SMOKE else 96)  # per gene and experiment
  experiments = [f"exp-{e}" for e in range(4)]
  rows = [(g, e) for e in experiments for g in [CONTROL] * 3 + genes
          for _ in range(wells_per)]
  gene_col = np.array([g for g, _ in rows])
  exp_col = np.array([e for _, e in rows])
  programs = rng.laplace(size=(len(rows), 9))
  for i, g in enumerate(genes):
    programs[gene_col == g, i] += 1.5
  x = programs @ rng.normal(size=(9, 32))
  # Nuisance (cell count, focus, …) along 3 directions, per well and per
  # experiment (the batch effect), then measurement noise in all 32 dims.
  nuisance = rng.normal(size=(3, 32))
  x += 5.0 * rng.normal(size=(len(rows), 3)) @ nuisance
  for e in experiments:
    x[exp_col == e] += 3.0 * rng.normal(size=3) @ nuisance
  x += 0.3 * rng.normal(size=x.shape)
  ids = np.array([f"well_{i:05d}" for i in range(len(rows))])
  np.savez("wells.npz", well_id=ids, embeddings=x.astype(np.float32))
  with open("metadata.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["well_id", "gene", "experiment_name"])
    w.writerows(zip(ids, gene_col, exp_col))
  EMBEDDINGS, METADATA = "wells.npz", "metadata.csv"

table = embeddings.read_table(EMBEDDINGS, METADATA,
                              required_columns=("gene", "experiment_name"))
print(f"{len(table)} wells x {table.dim} dims; experiments: "
      f"{sorted(set(map(str, table.metadata['experiment_name'])))}")

# %% [markdown]
# ## The four transforms, scored on held-out batches
# `batch_effects.analyse` fits every transform on the control wells and
# scores it; `x` may also be `[R, n, d]` — several seeds of one model —
# for intervals over runs. `cells.summarise` turns the scores into means
# with 95% t-intervals.
#
# `N_COMPONENTS` is how many principal components of the controls the
# whitening keeps. Keep those above the noise floor (the stand-in has
# 9 + 3 = 12): whitening pure-noise directions blows them up to unit
# variance and costs every whitened transform AUROC — try `None` (all of
# the numerical rank, 32 here) to see it.

# %%
N_COMPONENTS = 12
res = batch_effects.analyse(
    table.embeddings, table.metadata["gene"],
    table.metadata["experiment_name"], control=CONTROL,
    key=jax.random.key(0), n_components=N_COMPONENTS,
    num_iters=100 if SMOKE else 300)
summary = cells.summarise(res)
print(f"{'transform':>10}  gene AUROC ↑  batch AUROC ↓  Hoyer  concentration")
for k, v in summary.items():
  print(f"{v['label']:>10}  {v['gene_auroc']['mean']:11.3f}  "
        f"{v['batch_auroc']['mean']:13.3f}  {v['hoyer']['mean']:5.3f}  "
        f"{v['concentration']['mean']:13.3f}")
print("ordering:", cells.ordering(summary))

# %%
genes = [c for i, c in enumerate(res.class_names) if i != res.control]
plotting.plot_batch_effect_auroc(summary, genes)

# %% [markdown]
# Each gene against the controls of a batch the classifier never saw.
# A bar near 0.5 means the gene's signal did not carry across batches.
#
# ## What the batch effect looks like
# The wells on the top two principal components of each transform's
# features, coloured by experiment: in Base the experiments separate;
# after whitening on the controls they overlap.

# %%
plotting.plot_wells_2d(cells.first_run_features(res, table.embeddings[None]),
                       table.metadata["experiment_name"])

# %% [markdown]
# ## From images instead of embeddings
# To train the paper's masked autoencoder on the Cell Painting simulator
# (several seeds in one program) and run the same analysis on its
# latents, use the experiment binary — a GPU is recommended for the full
# config:
#
# ```
# python -m experiments.reproduce \
#     --config=experiments/configs/paper/cells.py:smoke --workdir=/tmp/cells
# ```
#
# or point it at your own table with
# `--config.embeddings=PATH --config.metadata=PATH`.
