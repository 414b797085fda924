# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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
# x = g(u) in ONE compiled program, then look at how their latent
# representations relate to each other and to the true factors u.
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

from nearid_jax import train

SMOKE = os.environ.get("NEARID_SMOKE") == "1"

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
state, metrics = jax.jit(train.make_train(config))(jax.random.key(0))
loss = np.asarray(metrics["loss"])  # [runs, steps]
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
# for the fixed evaluation set. Two seeds' latents are not equal, but a
# linear map takes one to the other almost exactly: the paper's statistical
# near-identifiability up to linear maps.

# %%
trainer = train.Trainer(config)
evaluation = trainer.evaluate_jit(state)
z = np.asarray(evaluation["reps"]["latent"])[: trainer.runs.num_runs]
z0, z1 = z[0], z[1]
a, *_ = np.linalg.lstsq(np.c_[z1, np.ones(len(z1))], z0, rcond=None)
residual = z0 - np.c_[z1, np.ones(len(z1))] @ a
rel = np.linalg.norm(residual, axis=1).mean() / np.linalg.norm(
    z0 - z0.mean(0), axis=1).mean()
print(f"relative error of the best affine map seed1 -> seed0: {rel:.3f}")
assert rel < 0.2
