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
# # Statistical near-identifiability, layer by layer (the paper's Table 1)
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nearid-jax/nearid_jax/blob/main/colabs/table1_statistical_identifiability.ipynb)
#
# Table 1 of Nelson et al. (ICLR 2026) asks of two trained models: how well
# does the best map of each class (signed permutation, rigid, linear, and
# signed permutation after ICA) take one's representation onto the
# other's? Here we train several runs of an autoencoder in one program and
# answer it for every ordered pair of runs, at several layers — the
# encoder's hidden layer, the latent bottleneck and the decoder's first
# layer — with the ICA efficiency (the share of the perm–rigid gap that ICA
# closes). Definitions: `docs/paper.md` §1 and §3.
#
# **Runtime**: CPU is enough (a few minutes at full size). Set
# `NEARID_SMOKE=1` for the CI sizes. The first cell installs nearid_jax on
# Colab without touching Colab's own JAX; locally, use
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
from nearid_jax import train

SMOKE = os.environ.get("NEARID_SMOKE") == "1"  # CI sizes
# Compiled programs persist across sessions (~/.cache/nearid_jax/jax).
compile_cache.enable()
print("jax", jax.__version__, "on", jax.devices())
print("Recommended runtime: CPU (Runtime > Change runtime type > CPU)")

# %% [markdown]
# ## Several runs, several layers
# The default synthetic autoencoder (16 → 64 → 64 → 4 → 64 → 64 → 16,
# LeakyReLU), one run per seed, all trained in one compiled program.
# `config.eval.layers` names the layers whose representations we keep.

# %%
config = train.default_config()
config.progress = False
config.eval.layers = ("enc_1", "latent", "dec_0")
if SMOKE:
  config.num_seeds, config.num_steps, config.data.eval_size = 3, 200, 1024
  config.eval.layers = ("enc_1", "latent")
state, history = jax.jit(train.make_train(config))(jax.random.key(0))
trainer = train.get_trainer(config)
reps = trainer.evaluate_in_chunks(state)["reps"]
for layer, z in reps.items():
  print(f"{layer:>7}: {z.shape} (runs, inputs, dims)")

# %% [markdown]
# ## ε per alignment class, every ordered pair of runs
# `align.pairwise_epsilon` fits each map on half of the inputs and scores
# it on the other half; `eps[kind]["mean"][i, j]` is run j mapped onto run
# i, divided by run i's diameter.

# %%
kinds = ("perm", "rigid", "linear", "ica")
key = jax.random.key(1)
eps = {layer: align.pairwise_epsilon(z, kinds, key=key)
       for layer, z in reps.items()}
off = ~np.eye(config.num_seeds, dtype=bool)  # the pairs, not the diagonal
table = {layer: {k: (float(np.nanmean(np.asarray(e[k]["mean"])[off])),
                     float(np.nanstd(np.asarray(e[k]["mean"])[off])))
                 for k in kinds}
         for layer, e in eps.items()}
print("| layer | perm | rigid | linear | ICA (efficiency) |")
print("|---|---|---|---|---|")
for layer, t in table.items():
  eff = align.ica_efficiency(t["perm"][0], t["rigid"][0], t["ica"][0])
  print(f"| {layer} | {t['perm'][0]:.3f} | {t['rigid'][0]:.3f} | "
        f"{t['linear'][0]:.3f} | {t['ica'][0]:.3f} ({100 * eff:.0f}%) |")

# %%
plotting.plot_epsilon_by_class(
    table, title="mean ε over pairs of runs (± sd), by layer")

# %% [markdown]
# Read it as the paper does. The classes are nested (a signed permutation
# is a rigid map, a rigid map is linear), so ε(linear) ≤ ε(rigid) ≤ ε(perm)
# up to the noise of the fit/score split. A small rigid ε is Theorem 1's prediction for layers followed by a
# near-bi-Lipschitz decoder; ICA's efficiency says how much of the
# remaining rotation ICA resolves (Theorem 2): high at the latent, whose
# coordinates mix independent non-Gaussian factors, lower in the wide
# hidden layers.

# %%
plotting.plot_epsilon_heatmaps(
    {k: np.asarray(eps["latent"][k]["mean"]) for k in kinds},
    [f"seed {s}" for s in range(config.num_seeds)],
    title="latent layer: ε for every ordered pair of runs")
