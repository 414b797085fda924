r"""Masked autoencoders on the synthetic process (half the coordinates hidden).

Command:
  python -m experiments.train --config=experiments/configs/synthetic_mae.py \
      --workdir=results/synthetic_mae
Hardware and runtime: 2-core CPU, about 25 s (3,000 steps, batch 256, 8
seeds); `:smoke` takes a few seconds after compiling.
Expected result: the masked-coordinate MSE falls well below the data variance
(the hidden coordinates are predictable because D = 16 > k = 4); no seed
diverges.
"""
from nearid_jax import train


def get_config(arg: str | None = None):
  config = train.default_config()
  config.objective.name = "masked_autoencoder"
  config.objective.mask_ratio = 0.5
  if arg == "smoke":
    config.num_seeds = 4
    config.num_steps = 200
    config.log_every = 50
    config.checkpoint_every = 100
    config.data.eval_size = 512
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  return config
