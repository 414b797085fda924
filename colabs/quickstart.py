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
# # nearid_jax quickstart: many runs in one program
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nearid-jax/nearid_jax/blob/main/colabs/quickstart.ipynb)
#
# Train 8 seeds of an autoencoder on the synthetic data-generating process
# x = g(u) in ONE compiled program, measure how far apart their latent
# representations are (ε), and turn them into disentangled features with ICA.
# The definitions and theorems behind each step: `docs/paper.md`.
#
# **Runtime**: CPU is enough (about a minute at full size). Set
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
from nearid_jax import ica
from nearid_jax import metrics
from nearid_jax import plotting
from nearid_jax import train

SMOKE = os.environ.get("NEARID_SMOKE") == "1"  # CI sizes
# Compiled programs persist across sessions (~/.cache/nearid_jax/jax).
compile_cache.enable()
print("jax", jax.__version__, "on", jax.devices())
print("Recommended runtime: CPU (Runtime > Change runtime type > CPU)")

# %% [markdown]
# ## Configure and train
# `train.default_config()` is 8 seeds of an MLP autoencoder (16 → 64 → 64 →
# 4 → 64 → 64 → 16) on 4 Laplace factors mixed by a 2-layer LeakyReLU MLP.
# `make_train(config)` returns a pure function of a key: jit it once and all
# seeds train together.

# %%
config = train.default_config()
config.progress = False
if SMOKE:
  config.num_seeds, config.num_steps, config.data.eval_size = 3, 200, 512
state, history = jax.jit(train.make_train(config))(jax.random.key(0))
loss = np.asarray(history["loss"])  # [runs, steps]
names = [f"seed {s}" for s in range(loss.shape[0])]
print("final loss per seed:", loss[:, -1].round(5))

# %%
plotting.plot_loss_curves(np.arange(loss.shape[1]), loss.T, names,
                          title=f"{len(names)} seeds trained in one program")

# %% [markdown]
# ## Representations of held-out data
# The trainer behind `make_train` (`get_trainer`) evaluates every run on a
# fixed held-out set: the representation at each configured layer, and the
# true factors u of the same inputs.

# %%
trainer = train.get_trainer(config)
z = trainer.evaluate_in_chunks(state)["reps"]["latent"]
u = np.asarray(trainer.eval_batch["u"])
print("latents:", z.shape, "(runs, inputs, dims); factors:", u.shape)

# %% [markdown]
# ## Statistical near-identifiability: ε between runs
# ε is the error of the best map of a class from one run's latents to
# another's (fitted on half the inputs, scored on the other half), divided
# by the target's diameter. Two seeds' latents are not equal, but a linear
# or even a rigid map takes one to the other almost exactly; a signed
# permutation (which is what "the same features" would mean) does not —
# until ICA (Theorems 1 and 2 in `docs/paper.md`).

# %%
key = jax.random.key(0)
kinds = ("perm", "rigid", "linear", "ica")
eps = align.pairwise_epsilon(z, kinds, key=key)
off = ~np.eye(len(z), dtype=bool)
for kind in kinds:
  print(f"{kind:>6}: mean ε over pairs = "
        f"{np.asarray(eps[kind]['mean'])[off].mean():.3f}")

# %%
plotting.plot_epsilon_heatmaps({k: np.asarray(eps[k]["mean"]) for k in kinds},
                               names)

# %% [markdown]
# ## AE + ICA = disentanglement
# FastICA of every run's latents, in one program; then MCC (Hungarian-
# matched correlation with the true factors) before and after. The
# `disentanglement_recipe` notebook does the same on images, with InfoMEC.

# %%
sources = ica.fastica(z, jax.random.key(1)).sources
mcc = {name: np.asarray(metrics.mcc(codes, u)["mcc"])
       for name, codes in (("raw", z), ("ICA", sources))}
print(f"MCC raw {mcc['raw'].mean():.3f}, after ICA {mcc['ICA'].mean():.3f}")

# %%
plotting.plot_mcc(mcc["raw"], mcc["ICA"], names)
