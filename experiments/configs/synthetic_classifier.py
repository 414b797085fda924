r"""Supervised classifiers on labels derived from the synthetic factors.

Labels are argmax over 8 random linear scores of u (Reizinger et al.); the
penultimate layer ("latent", width 4 = k) is the representation.

Command:
  python -m experiments.train --config=experiments/configs/synthetic_classifier.py \
      --workdir=results/synthetic_classifier
Hardware and runtime: 2-core CPU, about 20 s (3,000 steps, batch 256, 8
seeds); `:smoke` takes a few seconds after compiling.
Expected result: held-out accuracy above 0.9 for every seed; no seed
diverges.
"""
from nearid_jax import train


def get_config(arg: str | None = None):
  config = train.default_config()
  config.objective.name = "classifier"
  config.model.name = "mlp_classifier"
  config.eval.layers = ("latent", "logits")
  if arg == "smoke":
    config.num_seeds = 4
    config.num_steps = 200
    config.log_every = 50
    config.checkpoint_every = 100
    config.data.eval_size = 512
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  return config
