"""Data with known ground truth.

`build_data(config.data)` returns an object the trainer samples from inside
its jitted step:

  * `sample(key, n) -> {"x": [n, *obs_shape], "u": [n, k], "label": [n]}`;
  * `eval_set() -> same dict`, a fixed held-out set (same for every run);
  * `spec`: {"obs_shape", "num_classes", "latent_dim"}.
"""
from __future__ import annotations

import ml_collections

from nearid_jax.data import cells
from nearid_jax.data import embeddings
from nearid_jax.data import errors
from nearid_jax.data import ground_truth
from nearid_jax.data import images
from nearid_jax.data import procedural
from nearid_jax.data import registry
from nearid_jax.data import synthetic
from nearid_jax.data import tfds_sources

DATASETS = ("synthetic", "images")


def build_data(config: ml_collections.ConfigDict):
  """Returns the data source named by `config.name`.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if config.name == "synthetic":
    return synthetic.make_process(config)
  if config.name == "images":
    return images.make_images(config)
  raise ValueError(f"config.data.name: unknown dataset {config.name!r}; "
                   f"known datasets: {DATASETS}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the data config without building anything (no compiles)."""
  if config.name == "synthetic":
    synthetic.validate_config(config)
    return
  if config.name == "images":
    images.validate_config(config)
    return
  build_data(config)  # raises the unknown-name error
