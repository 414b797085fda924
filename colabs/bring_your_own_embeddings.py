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
# # Bring your own embeddings: how identifiable are two models?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nearid-jax/nearid_jax/blob/main/colabs/bring_your_own_embeddings.ipynb)
#
# You have two models — two seeds, two checkpoints, a small and a base
# model, from PyTorch, TensorFlow or JAX — and their embeddings of the same
# inputs. No ground-truth factors are needed to ask whether the two
# representations are the same up to a signed permutation, a rigid map or
# a linear map, and whether ICA finds a common coordinate system
# (statistical near-identifiability, `docs/paper.md` §1 and §3).
#
# **Runtime**: CPU is enough; a GPU helps beyond ~10⁵ rows × 10³ dims.
# Set `NEARID_SMOKE=1` for the CI sizes. The first cell installs nearid_jax
# on Colab without touching Colab's own JAX; locally, use
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

import os

import jax
import numpy as np

from nearid_jax import align
from nearid_jax import compile_cache
from nearid_jax import plotting
from nearid_jax.data import embeddings

SMOKE = os.environ.get("NEARID_SMOKE") == "1"  # CI sizes
# Compiled programs persist across sessions (~/.cache/nearid_jax/jax).
compile_cache.enable()
print("jax", jax.__version__, "on", jax.devices())
print("Recommended runtime: CPU (Runtime > Change runtime type > CPU)")

# %% [markdown]
# ## Your two files
# Set `PATH_A` and `PATH_B` to your embeddings: `.npz` (arrays `well_id`
# and `embeddings`; any id column name via `id_column=`), `.csv` (an id
# column and numeric feature columns), `.parquet`, or `.npy` (with `ids=`).
# Export them from any framework, e.g. `np.savez(path, well_id=ids,
# embeddings=model(x).detach().cpu().numpy())` in PyTorch. Both files must
# embed the same inputs in the same row order (the ids are checked).
#
# Left empty, this cell writes two stand-in files: 8-dimensional
# embeddings of the same inputs by two "models" that each mix the same 8
# independent (Laplace) factors linearly, plus a little noise — what a
# pair of seeds looks like when Theorem 1 applies with a linear decoder.

# %%
PATH_A, PATH_B = "", ""

if not PATH_A:
  rng = np.random.default_rng(0)
  n, d = (2_000, 8) if SMOKE else (20_000, 8)
  ids = np.array([f"input_{i:05d}" for i in range(n)])
  u = rng.laplace(size=(n, d))
  for path, mix_seed in (("model_a.npz", 1), ("model_b.npz", 2)):
    mixing = np.random.default_rng(mix_seed).normal(size=(d, d))
    np.savez(path, well_id=ids,
             embeddings=u @ mixing + 0.05 * rng.normal(size=(n, d)))
  PATH_A, PATH_B = "model_a.npz", "model_b.npz"

ids_a, z_a = embeddings.read_embeddings(PATH_A)
ids_b, z_b = embeddings.read_embeddings(PATH_B)
assert np.array_equal(ids_a, ids_b), "the files' rows are not the same inputs"
print(f"A: {z_a.shape}, B: {z_b.shape}")

# %% [markdown]
# ## ε of the best map of each class
# Each map is fitted on half of the rows and scored on the other half; ε
# is the mean Euclidean error divided by the diameter of A's embeddings
# (`max` and `q99` give the worst-case and 99th-percentile errors).
# Different widths (a small vs a base model) work too: `dims="pad"` or
# `"pca"` for the rigid and permutation classes.

# %%
kinds = ("perm", "rigid", "linear", "ica")
res = align.epsilon(z_a, z_b, kinds, key=jax.random.key(0))
for k in kinds:
  print(f"{k:>6}: ε mean {float(res[k]['mean']):.3f}, "
        f"max {float(res[k]['max']):.3f}")
eff = align.ica_efficiency(res["perm"]["mean"], res["rigid"]["mean"],
                           res["ica"]["mean"])
print(f"ICA efficiency: {100 * float(eff):.0f}% of the perm-rigid gap")

# %%
plotting.plot_epsilon_by_class(
    {"B mapped onto A": {k: (float(res[k]["mean"]), 0.0) for k in kinds}},
    title="ε by alignment class: your two embeddings")

# %% [markdown]
# Reading the stand-in result: the two "models" are linear mixtures of the
# same factors, so a linear map is near-exact, a rigid map or a signed
# permutation is not — and ICA, which un-mixes each model into independent
# coordinates, makes the signed permutation near-exact again (Theorem 2).
# With more than two models, stack them and use `align.pairwise_epsilon`
# for every ordered pair in one program.
