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

Stored sets ("digits", "tfds/<name>") up to `resident_max_mb` (as uint8)
are read into device memory once per process and sampled the same way; the
trainer closes over them, so their arrays are constants of its compiled
step: right for small sets (digits, a `max_examples` subset). Larger
stored sets are *streamed* (`streamed` is True): a Grain pipeline on the
host reads their batches (`feed`, see `nearid_jax.data.streaming`), the
trainer passes each chunk of batches to its step as an argument, and
`prepare` turns a raw batch into the step's batch on the device. Every run
of a program sees the same streamed batches, in an order fixed by the
data seed; `sample` is not available for them.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

STORED_PREFIX = "tfds/"
# Only these have a renderer for perturbed factors (positive pairs).
PROCEDURAL = ("dsprites", "dsprites_binary", "color_dsprites",
              "noisy_dsprites", "dsprites_correlated", "shapes3d",
              "shapes3d_correlated", "cells")

# Rows rendered per call when building the eval set (bounds peak memory).
_EVAL_CHUNK = 1024
# Stored sets up to this size (MB of uint8 images) stay in device memory by
# default: digits, MNIST, a max_examples subset; dSprites (3.0 GB) and the
# other full sets are streamed.
RESIDENT_MAX_MB = 1024


def default_config() -> ml_collections.ConfigDict:
  """The `data` part of an experiment config for image datasets.

  Fields: dataset (a name of `nearid_jax.data.registry`: procedural ones
  such as "shapes3d" or "dsprites_correlated", "digits", or "tfds/<name>"
  for data prepared with nearid_jax.data.builders and read without
  TensorFlow); label_factor (the factor whose index is the class label);
  image_size (0 = native, else average-pool down to this side); eval_size;
  seed (key of the eval set); positive_pairs (add "x_pos" for InfoNCE,
  procedural only); tfds_config, tfds_split, data_dir, max_examples (stored
  sets only; "" and 0 mean the defaults and all rows); resident_max_mb
  (stored sets up to this size, rows x H x W x C bytes as uint8, are held
  in device memory; larger ones are streamed from the host; 0 streams
  every stored set).
  """
  return ml_collections.ConfigDict(dict(
      name="images", dataset="dsprites", label_factor="shape", image_size=0,
      eval_size=2048, seed=0, positive_pairs=False, tfds_config="",
      tfds_split="train", data_dir="", max_examples=0,
      resident_max_mb=RESIDENT_MAX_MB))


def _bad(field: str, msg: str):
  raise ValueError(f"config.data.{field}: {msg}")


def _stored_kwargs(config) -> dict[str, Any]:
  kwargs = {"split": config.tfds_split}
  if config.tfds_config:
    kwargs["config"] = config.tfds_config
  if config.data_dir:
    kwargs["data_dir"] = config.data_dir
  if config.max_examples:
    kwargs["max_examples"] = config.max_examples
  return kwargs


@functools.lru_cache(maxsize=8)
def _dataset(dataset: str, stored_kwargs: tuple[tuple[str, Any], ...]):
  """The ground-truth dataset (stored sets are read once per process)."""
  from nearid_jax.data import registry  # pylint: disable=g-import-not-at-top
  if dataset.startswith(STORED_PREFIX):
    return registry.get(dataset, **dict(stored_kwargs))
  return registry.get(dataset)


def _open_stored(config):
  """The TfdsSource of a stored `config.dataset` (all processes' rows)."""
  from nearid_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
  kwargs = _stored_kwargs(config)
  kwargs.pop("max_examples", None)
  return tfds_sources.open_source(config.dataset[len(STORED_PREFIX):],
                                  shard_by_process=False, **kwargs)


def stored_rows_and_mb(config) -> tuple[int, float]:
  """(rows used, their size in MB as uint8) of a stored dataset."""
  src = _open_stored(config)
  rows = len(src)
  if config.max_examples:
    rows = min(rows, config.max_examples)
  return rows, rows * float(np.prod(src.observation_shape)) / 2**20


def is_streamed(config: ml_collections.ConfigDict) -> bool:
  """Whether a data config's batches are streamed from the host (a stored
  set larger than `resident_max_mb`)."""
  if not config.dataset.startswith(STORED_PREFIX):
    return False
  return stored_rows_and_mb(config)[1] > config.get("resident_max_mb",
                                                    RESIDENT_MAX_MB)


def _describe(config) -> tuple[tuple[str, ...], tuple[int, ...],
                               tuple[int, int, int]]:
  """(factor names, factor sizes, native observation shape), cheaply."""
  from nearid_jax.data import registry  # pylint: disable=g-import-not-at-top
  from nearid_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
  name = config.dataset
  if name.startswith(STORED_PREFIX):
    kwargs = _stored_kwargs(config)
    kwargs.pop("max_examples", None)
    src = tfds_sources.open_source(name[len(STORED_PREFIX):],
                                   shard_by_process=False, **kwargs)
    return src.factor_names, tuple(src.factor_sizes), src.observation_shape
  try:
    ds = registry.get(name)  # procedural: a cheap dataclass; digits: small
  except ValueError as e:
    _bad("dataset", f"{e} Prepared TFDS data are named 'tfds/<name>'.")
  return ds.factor_names, tuple(ds.factor_sizes), ds.observation_shape


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the data config without rendering or reading any image.

  Raises:
    ValueError: naming the field and the fix (a stored set that is not
      prepared raises the data module's DatasetNotFoundError, with the
      commands that prepare it).
  """
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
  if config.get("resident_max_mb", RESIDENT_MAX_MB) < 0:
    _bad("resident_max_mb", f"must be >= 0 (0: stream every stored set), "
         f"got {config.resident_max_mb}.")
  if config.positive_pairs and config.dataset not in PROCEDURAL:
    _bad("positive_pairs", f"needs a procedural dataset ({PROCEDURAL}): "
         "the partner image is rendered from perturbed factors.")


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
    self.spec = spec_from_config(config)
    self.streamed = is_streamed(c)
    if self.streamed:
      self.dataset, self.source = None, _open_stored(c)
      self.spec["num_examples"], self.size_mb = stored_rows_and_mb(c)
      native = self.source.observation_shape[0]
    else:
      self.dataset = _dataset(c.dataset,
                              tuple(sorted(_stored_kwargs(c).items())))
      if hasattr(self.dataset, "num_rows"):  # stored: distinct rows, not grid
        self.spec["num_examples"] = int(self.dataset.num_rows)
      native = self.dataset.observation_shape[0]
    self._pool = native // self.spec["obs_shape"][0]
    self._label = self.spec["factor_names"].index(c.label_factor)

  def _batch(self, images, idx, values) -> dict[str, jax.Array]:
    return {"x": pool(images, self._pool), "u": values,
            "label": idx[:, self._label].astype(jnp.int32)}

  def prepare(self, raw) -> dict[str, jax.Array]:
    """A streamed batch (images uint8, factor indices, values) as the
    step's batch (jittable): images scaled to [0, 1] and pooled."""
    images, idx, values = raw
    images = jnp.asarray(images).astype(jnp.float32) / 255.0
    return self._batch(images, idx, jnp.asarray(values, jnp.float32))

  def feed(self, batch_size: int, sharding: jax.sharding.Sharding,
           state: dict[str, Any] | None = None):
    """The host loader of a streamed set (`streaming.StreamFeed`), in the
    order fixed by the data seed; `state` resumes it."""
    from nearid_jax.data import streaming  # pylint: disable=g-import-not-at-top
    seed = streaming.shuffle_seed(
        jax.random.fold_in(jax.random.key(self.config.seed), 3))
    return streaming.StreamFeed(self.source.read, self.spec["num_examples"],
                                batch_size, seed, sharding, state)

  def sample(self, key: jax.Array, n: int) -> dict[str, jax.Array]:
    """A batch of n images with their factors (jittable, `n` static)."""
    if self.streamed:
      raise ValueError(
          f"config.data.dataset = {self.config.dataset!r} "
          f"({self.size_mb:.0f} MB) is streamed from the host (above "
          f"config.data.resident_max_mb = {self.config.resident_max_mb}): "
          "its batches come from `feed`, not `sample`. Raise "
          "resident_max_mb to hold it in device memory.")
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
    return self.dataset.render(moved, k_render)

  def eval_set(self) -> dict[str, np.ndarray]:
    """The fixed held-out set (same for every run and call), host arrays."""
    key = jax.random.fold_in(jax.random.key(self.config.seed), 1)
    n = self.config.eval_size
    if self.streamed:  # rows drawn uniformly, as `sample` draws them
      rows = np.asarray(jax.random.randint(key, (n,), 0,
                                           self.spec["num_examples"]))
      prepare = jax.jit(self.prepare)
      parts = [jax.tree.map(np.asarray, prepare(self.source.read(
          rows[s:s + _EVAL_CHUNK]))) for s in range(0, n, _EVAL_CHUNK)]
      return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
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
