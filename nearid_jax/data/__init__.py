"""Data with known ground truth.

`build_data(config.data)` returns an object the trainer samples from inside
its jitted step:

  * `sample(key, n) -> {"x": [n, *obs_shape], "u": [n, k], "label": [n]}`;
  * `eval_set() -> same dict`, a fixed held-out set (same for every run);
  * `spec`: {"obs_shape", "num_classes", "latent_dim"}.

Submodules (imported on use, so `import nearid_jax.data` stays light):
`synthetic` (the default process), `images` (any factor-labelled image
set, procedural or stored, in the trainer's interface), `ground_truth` (the interface of
factor-labelled datasets), `procedural` (dSprites, Shapes3D and harder
variants rendered on device), `tfds_sources` and `builders` (stored
datasets through TFDS, no TensorFlow), `streaming` (large stored sets read
by Grain on the host and fed to the train step as arguments), `cells` (Cell Painting-like wells
with batch effects), `embeddings` (per-well embedding tables), `registry`
(every dataset by name).
"""
from __future__ import annotations

import ml_collections

from nearid_jax.data import synthetic

DATASETS = ("synthetic", "images")


def build_data(config: ml_collections.ConfigDict):
  """Returns the data source named by `config.name`.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if config.name == "synthetic":
    return synthetic.make_process(config)
  if config.name == "images":
    from nearid_jax.data import images  # pylint: disable=g-import-not-at-top
    return images.make_images(config)
  raise ValueError(f"config.data.name: unknown dataset {config.name!r}; "
                   f"known datasets: {DATASETS}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the data config without building anything (no compiles)."""
  if config.name == "synthetic":
    synthetic.validate_config(config)
    return
  if config.name == "images":
    from nearid_jax.data import images  # pylint: disable=g-import-not-at-top
    images.validate_config(config)
    return
  build_data(config)  # raises the unknown-name error
