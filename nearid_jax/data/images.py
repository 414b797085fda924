"""Image datasets with ground-truth factors, in the trainer's interface.

Wraps a ground-truth image dataset (`nearid_jax.data.ground_truth`: the
procedural dSprites / Shapes3D / Cell Painting renderers, or a stored
dataset held in memory) so that the trainer samples it inside its jitted
step:

  * `sample(key, n) -> {"x": [n, H, W, C] float32 in [0, 1], "u": [n, K]
    factor values, "label": [n] int32 index of the label factor}` (plus
    "x_pos", a positive partner, when `positive_pairs`);
  * `eval_set()`: a fixed held-out set drawn with the config's seed (host
    numpy arrays, so the trainer can evaluate it in chunks);
  * `spec`: {"obs_shape", "num_classes" (cardinality of the label factor),
    "latent_dim" (K), "num_examples" (size of the factor grid or of the
    stored set), "factor_names", "factor_sizes"}.

Procedural images are rendered on device from the step key (infinite data;
the eval set is just another draw). `image_size` smaller than the native
side average-pools the images (e.g. 64 -> 32 or 16 for CPU runs).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

PROCEDURAL = ("dsprites", "color_dsprites", "noisy_dsprites", "shapes3d",
              "cells")
STORED = ("digits",)  # scikit-learn's bundled digits (offline)
SOURCES = ("procedural", "tfds", "stored")

# Rows rendered per call when building the eval set (bounds peak memory).
_EVAL_CHUNK = 1024


def default_config() -> ml_collections.ConfigDict:
  """The `data` part of an experiment config for image datasets.

  Fields: source ("procedural", "tfds" for data prepared with
  nearid_jax.data.builders and read without TensorFlow, or "stored");
  dataset (a PROCEDURAL name, a TFDS source name, or "digits"); label_factor
  (factor name whose index is the class label); image_size (0 = native);
  eval_size; seed (key of the eval set); correlated_pairs ("a:b" factor
  pairs sampled correlated, procedural only) with correlation_sigma;
  positive_pairs (add "x_pos" for InfoNCE) ; tfds_config, tfds_split,
  data_dir, max_examples (TFDS only; 0 = all rows).
  """
  return ml_collections.ConfigDict(dict(
      name="images", source="procedural", dataset="dsprites",
      label_factor="shape", image_size=0, eval_size=2048, seed=0,
      correlated_pairs=(), correlation_sigma=0.2, positive_pairs=False,
      tfds_config="", tfds_split="train", data_dir="", max_examples=0))


def _procedural(name: str):
  # Imported lazily: the renderers are only needed when used.
  from nearid_jax.data import cells  # pylint: disable=g-import-not-at-top
  from nearid_jax.data import procedural  # pylint: disable=g-import-not-at-top
  return {"dsprites": procedural.DSprites, "color_dsprites":
          procedural.ColorDSprites, "noisy_dsprites": procedural.NoisyDSprites,
          "shapes3d": procedural.Shapes3D, "cells": cells.CellPainting}[name]()


def _bad(field: str, msg: str):
  raise ValueError(f"config.data.{field}: {msg}")


@functools.lru_cache(maxsize=8)
def _dataset(source: str, dataset: str, tfds_config: str, tfds_split: str,
             data_dir: str, max_examples: int, pairs: tuple[str, ...],
             sigma: float):
  """The ground-truth dataset (stored sets are read once per process)."""
  if source == "procedural":
    ds = _procedural(dataset)
    if pairs:
      from nearid_jax.data.procedural import correlated  # pylint: disable=g-import-not-at-top
      ds = correlated.CorrelatedFactors(
          ds, tuple(tuple(p.split(":")) for p in pairs), sigma)
    return ds
  from nearid_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
  if source == "stored":
    return tfds_sources.load_digits()
  return tfds_sources.load_in_memory(
      dataset, tfds_split, data_dir or None, config=tfds_config or None,
      max_examples=max_examples or None)


def _describe(config) -> tuple[tuple[str, ...], tuple[int, ...],
                               tuple[int, int, int]]:
  """(factor names, factor sizes, native observation shape), cheaply."""
  if config.source == "procedural":
    ds = _procedural(config.dataset)
    return ds.factor_names, tuple(ds.factor_sizes), ds.observation_shape
  if config.source == "stored":
    return ("digit",), (10,), (8, 8, 1)
  from nearid_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
  src = tfds_sources.open_source(
      config.dataset, config.tfds_split, config.data_dir or None,
      config=config.tfds_config or None, shard_by_process=False)
  return src.factor_names, tuple(src.factor_sizes), src.observation_shape


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the data config without rendering or reading any image.

  Raises:
    ValueError: naming the field and the fix.
  """
  if config.source not in SOURCES:
    _bad("source", f"unknown source {config.source!r}; choose one of "
         f"{SOURCES}.")
  if config.source == "procedural" and config.dataset not in PROCEDURAL:
    _bad("dataset", f"unknown procedural dataset {config.dataset!r}; choose "
         f"one of {PROCEDURAL}, or set data.source='tfds' for prepared "
         "data.")
  if config.source == "stored" and config.dataset not in STORED:
    _bad("dataset", f"unknown stored dataset {config.dataset!r}; choose one "
         f"of {STORED}.")
  names, _, shape = _describe(config)
  if config.label_factor not in names:
    _bad("label_factor", f"{config.label_factor!r} is not a factor of "
         f"{config.dataset}; its factors are {list(names)}.")
  side = shape[0]
  if config.image_size < 0 or (config.image_size and (
      config.image_size > side or side % config.image_size
      or shape[1] % config.image_size)):
    _bad("image_size", f"= {config.image_size} must be 0 (native {side}) or "
         f"a divisor of the native side {side} (images are average-pooled "
         "down).")
  if config.eval_size < 2:
    _bad("eval_size", f"must be >= 2, got {config.eval_size}.")
  for p in config.correlated_pairs:
    if config.source != "procedural":
      _bad("correlated_pairs", "needs a procedural dataset.")
    parts = p.split(":") if isinstance(p, str) else ()
    if len(parts) != 2 or any(f not in names for f in parts):
      _bad("correlated_pairs", f"{p!r} must be 'factor_a:factor_b' with "
           f"factors of {config.dataset}: {list(names)}.")
  if config.positive_pairs and config.source != "procedural":
    _bad("positive_pairs", "needs a procedural dataset (the partner image "
         "is rendered from perturbed factors).")


def spec_from_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The data spec, computed from the config alone (no images)."""
  validate_config(config)
  names, sizes, shape = _describe(config)
  side = config.image_size or shape[0]
  scale = shape[0] // side
  label = names.index(config.label_factor)
  return {"obs_shape": (side, shape[1] // scale, shape[2]),
          "num_classes": sizes[label], "latent_dim": len(names),
          "num_examples": int(np.prod(sizes, dtype=np.int64)),
          "factor_names": tuple(names), "factor_sizes": tuple(sizes)}


def pool(images: jax.Array, factor: int) -> jax.Array:
  """Average-pools [n, H, W, C] by `factor` (each output pixel is the mean
  of a factor x factor block)."""
  if factor == 1:
    return images
  n, h, w, c = images.shape
  return images.reshape(n, h // factor, factor, w // factor, factor,
                        c).mean(axis=(2, 4))


class ImageData:
  """A ground-truth image dataset in the trainer's data interface.

  Examples:
    >>> config = default_config()
    >>> config.image_size, config.eval_size = 16, 8
    >>> data = ImageData(config)
    >>> batch = data.sample(jax.random.key(0), 4)
    >>> batch["x"].shape, batch["u"].shape, batch["label"].shape
    ((4, 16, 16, 1), (4, 5), (4,))
  """

  def __init__(self, config: ml_collections.ConfigDict):
    validate_config(config)
    self.config = ml_collections.FrozenConfigDict(config)
    c = self.config
    self.dataset = _dataset(c.source, c.dataset, c.tfds_config, c.tfds_split,
                            c.data_dir, c.max_examples,
                            tuple(c.correlated_pairs), c.correlation_sigma)
    self.spec = spec_from_config(config)
    if c.source == "stored" or c.source == "tfds":
      self.spec["num_examples"] = int(getattr(self.dataset, "num_rows",
                                              self.spec["num_examples"]))
    native = self.dataset.observation_shape[0]
    self._pool = native // self.spec["obs_shape"][0]
    self._label = self.spec["factor_names"].index(c.label_factor)

  def _batch(self, images, idx, values) -> dict[str, jax.Array]:
    return {"x": pool(images, self._pool), "u": values,
            "label": idx[:, self._label].astype(jnp.int32)}

  def sample(self, key: jax.Array, n: int) -> dict[str, jax.Array]:
    """A batch of n images with their factors (jittable, `n` static)."""
    k_data, k_pos = jax.random.split(key)
    images, idx, values = self.dataset.sample(k_data, n)
    batch = self._batch(images, idx, values)
    if self.config.positive_pairs:
      batch["x_pos"] = pool(self._render_positive(k_pos, idx), self._pool)
    return batch

  def _render_positive(self, key: jax.Array, idx: jax.Array) -> jax.Array:
    """Images of the same rows with ONE random factor moved by one step.

    The factor and the direction are uniform; at the end of a factor's
    range the step reflects, so every partner differs in exactly one
    factor index (factors with a single value excepted).
    """
    k_factor, k_dir, k_render = jax.random.split(key, 3)
    n, num_factors = idx.shape
    sizes = jnp.asarray(self.spec["factor_sizes"])
    which = jax.random.randint(k_factor, (n,), 0, num_factors)
    step = jnp.where(jax.random.bernoulli(k_dir, 0.5, (n,)), 1, -1)
    cur = idx[jnp.arange(n), which]
    new = cur + step
    new = jnp.where(new >= sizes[which], cur - 1, new)
    new = jnp.where(new < 0, jnp.minimum(cur + 1, sizes[which] - 1), new)
    moved = idx.at[jnp.arange(n), which].set(new)
    # The traced renderer hook: the public `render` validates its input on
    # the host (ground_truth.check_int converts tracers to numpy).
    return self.dataset._images_for(moved, k_render)  # pylint: disable=protected-access

  def eval_set(self) -> dict[str, np.ndarray]:
    """The fixed held-out set (same for every run and call), host arrays."""
    key = jax.random.fold_in(jax.random.key(self.config.seed), 1)
    n = self.config.eval_size
    draw = jax.jit(self.sample, static_argnums=1)
    parts = []
    for i, start in enumerate(range(0, n, _EVAL_CHUNK)):
      # Always the same chunk size: one compile, then slice the last one.
      batch = draw(jax.random.fold_in(key, i), min(_EVAL_CHUNK, n))
      parts.append(jax.tree.map(
          lambda a, start=start: np.asarray(a)[:min(_EVAL_CHUNK, n - start)],
          batch))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def make_images(config: ml_collections.ConfigDict) -> ImageData:
  """Builds the adapter (see `ImageData`)."""
  return ImageData(config)
