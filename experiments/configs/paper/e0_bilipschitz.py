r"""The warm-up (PAPER.md §4): rigid ε between runs vs the decoder's bound.

Autoencoders whose 3-layer decoder (two LeakyReLU hidden layers and a
linear output) uses slope α, α swept over 6 values with 8 seeds each (one
program per dataset: α is the trainer's grid axis), on the synthetic
process and on scikit-learn's bundled 8x8 digits (the offline MNIST
stand-in). Per α: the rigid ε of each run to the other runs of its α and
each decoder's 1 + L; the plot of ε against sqrt(2L + L²) with the bound's
line; the Spearman correlation over α. `nearid_jax.paper.e0_bilipschitz`
documents every number.

Command:
  python -m experiments.reproduce \
      --config=experiments/configs/paper/e0_bilipschitz.py --workdir=results/e0
  (`:smoke` for the CI size: 5 slopes x 2 seeds, 60 steps.)
Hardware and runtime: full (2 x 48 runs of small MLPs, 3,000 steps): a few
minutes on a 2-core CPU, under a minute on one GPU (estimate, unmeasured);
`:smoke` about 2 min on a 2-core CPU, mostly compilation (measured
under contention: 123 s for both datasets).
The paper's numbers: qualitative only (MNIST autoencoders; the decoder's
bi-Lipschitz bound ≈ 1/α³; "the measured rigid alignment error between
runs tracks sqrt(2L + L²)"): we expect a positive Spearman correlation
between ε and sqrt(2L + L²) over α.
"""
import ml_collections

from nearid_jax import train
from nearid_jax.data import images


def _synthetic(smoke: bool):
  c = train.default_config()
  c.model.decoder_widths = (64, 64)  # 3 decoder layers with the output
  c.eval.layers = ("latent",)
  if smoke:
    c.num_seeds, c.num_steps, c.log_every = 2, 60, 30
    c.checkpoint_every = 60
    c.data.eval_size = 256
  return c


def _digits(smoke: bool):
  c = train.default_config()
  c.data = images.default_config()
  c.data.dataset = "digits"
  c.data.label_factor = "digit"
  c.data.eval_size = 1024
  c.model = ml_collections.ConfigDict(dict(
      name="mlp_ae", encoder_widths=(256, 256), decoder_widths=(256, 256),
      activation="leaky_relu", negative_slope=0.2, latent_dim=8))
  c.num_steps = 3000
  c.batch_size = 128
  c.eval.layers = ("latent",)
  if smoke:
    c.model.encoder_widths = c.model.decoder_widths = (64, 64)
    c.num_seeds, c.num_steps, c.log_every = 2, 60, 30
    c.checkpoint_every = 60
    c.data.eval_size = 256
  return c


def get_config(arg: str | None = None):
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.experiment = "e0_bilipschitz"
  c.seed = 0
  c.alphas = ((0.1, 0.2, 0.4, 0.7, 1.0) if smoke
              else (0.05, 0.1, 0.2, 0.35, 0.6, 1.0))
  c.datasets = ("synthetic", "digits")
  c.bi_lipschitz_points = 64 if smoke else 256
  c.models = ml_collections.ConfigDict(
      {"synthetic": _synthetic(smoke), "digits": _digits(smoke)})
  return c
