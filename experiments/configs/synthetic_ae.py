r"""Autoencoders on the synthetic process: 8 seeds in one program.

Command:
  python -m experiments.train --config=experiments/configs/synthetic_ae.py \
      --workdir=results/synthetic_ae
Hardware and runtime: 2-core CPU, about 20 s (3,000 steps, batch 256, 8
seeds); `:smoke` (200 steps) takes a few seconds after compiling.
Expected result: every seed reaches a held-out MSE near 5e-4 (the data have
per-coordinate variance 0.02-0.3); no seed diverges. The representations in
representations.npz are near-identifiable up to linear maps across seeds
(see experiments.identifiability).
"""
from nearid_jax import train


def get_config(arg: str | None = None):
  config = train.default_config()
  config.objective.name = "autoencoder"
  if arg == "smoke":
    config.num_seeds = 4
    config.num_steps = 200
    config.log_every = 50
    config.checkpoint_every = 100
    config.data.eval_size = 512
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  return config
