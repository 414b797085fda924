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
# Set `NEARID_SMOKE=1` for CI sizes.

# %%
try:
  import google.colab  # noqa: F401
  # %pip install -q "nearid_jax @ git+https://github.com/nearid-jax/nearid_jax"
except ImportError:
  pass

import os

import jax
import matplotlib.pyplot as plt
import numpy as np

from nearid_jax import align
from nearid_jax import compile_cache
from nearid_jax import ica
from nearid_jax import metrics
from nearid_jax import train

SMOKE = os.environ.get("NEARID_SMOKE") == "1"
# Compiled programs persist across sessions (~/.cache/nearid_jax/jax).
compile_cache.enable()

# %% [markdown]
# ## Configure and train
# `train.default_config()` is 8 seeds of an MLP autoencoder (16 → 64 → 64 →
# 4 → 64 → 64 → 16) on 4 Laplace factors mixed by a 2-layer LeakyReLU MLP.
# `make_train(config)` returns a pure function of a key: jit it once and all
# seeds train together.

# %%
config = train.default_config()
config.num_steps = 200 if SMOKE else 3000
config.log_every = 100
config.progress = False
state, history = jax.jit(train.make_train(config))(jax.random.key(0))
loss = np.asarray(history["loss"])  # [runs, steps]
print("final loss per seed:", loss[:, -1].round(5))

# %%
plt.figure(figsize=(6, 3.5))
plt.semilogy(loss.T, lw=0.8)
plt.xlabel("step")
plt.ylabel("reconstruction MSE")
plt.title(f"{loss.shape[0]} seeds trained in one program")
plt.show()

# %% [markdown]
# ## Representations of held-out data
# `Trainer.evaluate` returns the representation at every configured layer
# for the fixed evaluation set, with the true factors u of the same inputs.

# %%
trainer = train.Trainer(config)
evaluation = trainer.evaluate_jit(state)
z = np.asarray(evaluation["reps"]["latent"])[: trainer.runs.num_runs]
u = np.asarray(trainer.eval_batch["u"])
print("latents:", z.shape, "(runs, inputs, dims); factors:", u.shape)

# %% [markdown]
# ## Statistical near-identifiability: ε between runs
# ε is the error of the best map of a class from one run's latents to
# another's (fitted on half the inputs, scored on the other half), divided
# by the target's diameter. Two seeds' latents are not equal, but a linear
# or even a rigid map takes one to the other almost exactly; a signed
# permutation (which is what "the same features" would mean) does not —
# until ICA (the paper's Theorems 1 and 2).

# %%
key = jax.random.key(0)
kinds = ("perm", "rigid", "linear", "ica")
eps = align.pairwise_epsilon(z, kinds, key=key)
off = ~np.eye(len(z), dtype=bool)
for kind in kinds:
  print(f"{kind:>6}: mean ε over pairs = "
        f"{np.asarray(eps[kind]['mean'])[off].mean():.3f}")

fig, axes = plt.subplots(1, len(kinds), figsize=(3 * len(kinds), 3))
vmax = max(float(np.asarray(eps[k]["mean"]).max()) for k in kinds)
for ax, kind in zip(axes, kinds):
  im = ax.imshow(np.asarray(eps[kind]["mean"]), vmin=0, vmax=vmax,
                 cmap="viridis")
  ax.set_title(kind)
  ax.set_xlabel("source run")
axes[0].set_ylabel("target run")
fig.colorbar(im, ax=axes, shrink=0.8, label="ε")
plt.show()
assert np.asarray(eps["rigid"]["mean"])[off].mean() < np.asarray(
    eps["perm"]["mean"])[off].mean()

# %% [markdown]
# ## AE + ICA = disentanglement
# FastICA of every run's latents, in one program; then MCC (Hungarian-
# matched correlation with the true factors) and InfoM (modularity of the
# mutual information; the factors are continuous, so they are binned, with
# a warning) before and after.

# %%
sources = ica.fastica(z, jax.random.key(1)).sources
for name, codes in (("raw", z), ("ICA", sources)):
  mcc = np.asarray(metrics.mcc(codes, u)["mcc"])
  infom = np.asarray(metrics.infomec(codes, u, key=key)["infom"])
  print(f"{name:>3}: MCC {mcc.mean():.3f} ± {mcc.std():.3f}, "
        f"InfoM {infom.mean():.3f} ± {infom.std():.3f}")
