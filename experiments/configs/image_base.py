"""Shared pieces of the image-model configs (this file is not a config).

`parse_arg("shapes3d,smoke")` -> ("shapes3d", True); `base_config(dataset,
smoke)` returns the trainer config with the image data and the InfoMEC-suite
conventions (latents = 2 x #factors, AdamW at 1e-3, global-norm clipping
1.0, batch 128, 200k steps, 10,000 evaluation images; Hsu et al. 2023).

Procedural datasets (dsprites, color_dsprites, noisy_dsprites, shapes3d,
cells, and the correlated-factor variants dsprites_correlated,
shapes3d_correlated) are rendered on device; mpi3d, falcor3d and isaac3d are read from
TFDS data prepared with `python -m nearid_jax.data.builders` (the error
message says how when they are missing).
"""
from __future__ import annotations

from nearid_jax import train
from nearid_jax.data import images

NUM_FACTORS = {"dsprites": 5, "color_dsprites": 5, "noisy_dsprites": 5,
               "dsprites_correlated": 5, "shapes3d": 6,
               "shapes3d_correlated": 6, "cells": 5, "mpi3d": 7,
               "falcor3d": 7, "isaac3d": 9}
# The factor used as the label (classifiers; "label" in representations.npz).
LABEL_FACTOR = {"dsprites": "shape", "color_dsprites": "shape",
                "noisy_dsprites": "shape", "dsprites_correlated": "shape",
                "shapes3d": "shape", "shapes3d_correlated": "shape",
                "cells": "gene", "mpi3d": "object_shape",
                "falcor3d": "lighting_intensity", "isaac3d": "object_shape"}
TFDS = ("mpi3d", "falcor3d", "isaac3d")


def parse_arg(arg: str | None, default: str,
              datasets=tuple(NUM_FACTORS)) -> tuple[str, bool]:
  """"dataset[,smoke]" or "smoke" -> (dataset, smoke).

  Raises:
    ValueError: for an unknown part.
  """
  dataset, smoke = default, False
  for part in (arg or "").split(","):
    if not part:
      continue
    if part == "smoke":
      smoke = True
    elif part in datasets:
      dataset = part
    else:
      raise ValueError(f"unknown config argument {part!r}; use "
                       f"'<dataset>[,smoke]' with a dataset in "
                       f"{list(datasets)}, or 'smoke'.")
  return dataset, smoke


def base_config(dataset: str, smoke: bool):
  """The trainer config for `dataset` (the model is left to the caller).

  Smoke sizes: 32x32 images (pooled from 64x64), 2 seeds, 20 steps of
  batch 32, 128 evaluation images; one device.
  """
  c = train.default_config()
  c.data = images.default_config()
  c.data.dataset = ("tfds/" + dataset) if dataset in TFDS else dataset
  c.data.label_factor = LABEL_FACTOR[dataset]
  c.data.eval_size = 10_000
  c.num_seeds = 8
  c.num_steps = 200_000
  c.batch_size = 128
  c.log_every = 1000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-3
  c.optimizer.clip_norm = 1.0
  c.eval.batch_size = 500
  if smoke:
    c.data.image_size = 32
    c.data.eval_size = 128
    c.eval.batch_size = 64
    c.num_seeds = 2
    c.num_steps = 20
    c.batch_size = 32
    c.log_every = 10
    c.checkpoint_every = 20
    c.num_devices = 1
  return c


def latent_dim(dataset: str) -> int:
  """2 x #factors, the InfoMEC-suite latent size."""
  return 2 * NUM_FACTORS[dataset]


def conv_ae_config(arg: str | None, objective: str, *,
                   variational: bool = False):
  """(config, dataset) of the conv autoencoder family for
  "<dataset>[,smoke]": the InfoMEC-suite encoder/decoder ("small" for smoke
  runs), sigmoid cross-entropy reconstruction and `objective`; a
  variational model also records its posterior width ("latent_sigma")."""
  from nearid_jax.models import conv_ae  # pylint: disable=g-import-not-at-top
  dataset, smoke = parse_arg(arg, "shapes3d")
  config = base_config(dataset, smoke)
  config.model = conv_ae.default_config(
      "small" if smoke else "full", latent_dim(dataset),
      variational=variational)
  config.objective.name = objective
  config.objective.reconstruction = "sigmoid_ce"
  config.eval.layers = (("latent", "latent_sigma") if variational
                        else ("latent", "features"))
  return config, dataset
