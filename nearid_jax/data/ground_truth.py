"""The common interface of every dataset with known generative factors.

A ground-truth dataset is a finite factor grid (factor k takes one of
`factor_sizes[k]` values) plus a way to get the image of any grid point. The
procedural sets render that image on device from the factor values; stored
sets (TFDS, scikit-learn digits) look it up. Every dataset offers the same
calls, so training, the BetaVAE/FactorVAE scores and the exact-grid
evaluation never care which kind they got:

    ds.factor_names         tuple[str, ...], K names
    ds.factor_sizes         tuple[int, ...], K cardinalities
    ds.factor_values        tuple of K float arrays, the value of each index
    ds.observation_shape    (H, W, C)
    ds.sample(key, n)       -> (images [n, H, W, C] float32 in [0, 1],
                                factor_indices [n, K] int32,
                                factor_values [n, K] float32)
    ds.sample_fixed(key, n, factor, value)
                            -> same triple with column `factor` == `value`
    ds.all_factor_indices() [N, K] int32, the whole grid in row-major order
                            (last factor fastest, as the published files)
    ds.enumerate_grid(...)  iterator of triples over the grid, in chunks
    ds.metadata             dict for logs and dataset cards

`sample` and `sample_fixed` are jittable with a static `n` and are meant to
be called inside a jitted train step. `factor` and `value` of `sample_fixed`
may be traced. Host calls (concrete arguments) are validated and raise clear
errors; traced calls cannot raise, so invalid factor indices give NaN images,
which no loss can silently absorb.
"""
from __future__ import annotations

import abc
import functools
import math
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import validation

Triple = tuple[jax.Array, jax.Array, jax.Array]

# all_factor_indices() materialises [N, K] int32 on the host; past this the
# caller should iterate with enumerate_grid() instead.
_MAX_MATERIALISED_GRID = 50_000_000


def _dtype_of(x) -> np.dtype:
  # Not getattr(x, "dtype", np.asarray(x).dtype): the default is evaluated
  # eagerly and fails on tracers.
  return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def check_int(name: str, x) -> None:
  """Raises TypeError unless `x` has an integer dtype (tracers included)."""
  dtype = _dtype_of(x)
  if not np.issubdtype(dtype, np.integer):
    raise TypeError(
        f"{name} must be an integer array of factor indices, got dtype "
        f"{dtype}; pass indices (e.g. {name}.astype(np.int32)) or use "
        "render_values() for float factor values.")


def check_n(n) -> int:
  """Checks a static sample count and returns it as a Python int."""
  if isinstance(n, jax.core.Tracer) or not isinstance(n, (int, np.integer)):
    raise TypeError(
        f"n must be a static Python int (the batch shape is compiled in), "
        f"got {type(n).__name__}; under jax.jit mark it static.")
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  return int(n)


def _check_key(key) -> None:
  if key is None:
    raise TypeError("a PRNG key is required, e.g. jax.random.key(0).")


class GroundTruthDataset(abc.ABC):
  """A finite factor grid with images: the interface every dataset follows.

  Subclasses set `name`, `factor_names`, `factor_sizes`,
  `observation_shape`, implement `_factor_value_grid()` and, when the image
  can be computed on device, `_render(values, key)` for ONE example. They
  should be frozen dataclasses (hashable, compared by configuration) so a
  dataset can be a static argument of `jax.jit`.

  Attributes:
    name: short dataset name.
    factor_names: K factor names.
    factor_sizes: K factor cardinalities.
    observation_shape: (H, W, C) of one image.
    has_nuisance: True when an image also depends on randomness that is not
      a factor (colour, background noise, cell placement); `render` then
      needs a key.
    categorical: names of the factors whose values are labels, not
      magnitudes (rendered from the nearest grid value).
  """

  name: str = "ground_truth"
  factor_names: tuple[str, ...] = ()
  factor_sizes: tuple[int, ...] = ()
  observation_shape: tuple[int, int, int] = (0, 0, 0)
  has_nuisance: bool = False
  categorical: tuple[str, ...] = ()
  symmetries: tuple[str, ...] = ()

  # ---- hooks for subclasses ---------------------------------------------

  @abc.abstractmethod
  def _factor_value_grid(self) -> tuple[np.ndarray, ...]:
    """K 1-D float arrays: the value of each index of each factor."""

  def _render(self, values: jax.Array, key: jax.Array | None) -> jax.Array:
    """values: [K] float32 -> image [H, W, C] float32 in [0, 1] (traced)."""
    raise NotImplementedError(
        f"{type(self).__name__} has no device renderer; use sample() or "
        "enumerate_grid().")

  def _sample_indices(self, key: jax.Array, n: int) -> jax.Array:
    """[n, K] int32 factor indices, independent and uniform by default."""
    sizes = jnp.asarray(self.factor_sizes, jnp.int32)
    u = jax.random.uniform(key, (n, self.num_factors))
    # floor(u * size) is uniform on {0..size-1}; the min guards u -> 1.
    return jnp.minimum((u * sizes).astype(jnp.int32), sizes - 1)

  def _sample_indices_fixed(self, key: jax.Array, n: int, factor: jax.Array,
                            value: jax.Array) -> jax.Array:
    """Like `_sample_indices` with column `factor` set to `value`."""
    idx = self._sample_indices(key, n)
    col = jnp.arange(self.num_factors) == factor
    return jnp.where(col[None, :], value, idx).astype(jnp.int32)

  def _images_for(self, indices: jax.Array, key: jax.Array) -> jax.Array:
    """[n, K] indices -> [n, H, W, C] images (traced; override for lookup)."""
    values = self.indices_to_values(indices)
    if self.has_nuisance:
      keys = jax.random.split(key, indices.shape[0])
      return jax.vmap(self._render)(values, keys)
    return jax.vmap(lambda v: self._render(v, None))(values)

  def _draw(self, key: jax.Array, n: int) -> Triple:
    """The body of `sample` (traced): indices first, then their images."""
    k_idx, k_img = jax.random.split(key)
    idx = self._sample_indices(k_idx, n)
    return self._images_for(idx, k_img), idx, self.indices_to_values(idx)

  def _draw_fixed(self, key: jax.Array, n: int, factor: jax.Array,
                  value: jax.Array) -> Triple:
    """The body of `sample_fixed` (traced)."""
    k_idx, k_img = jax.random.split(key)
    idx = self._sample_indices_fixed(k_idx, n, factor, value)
    return self._images_for(idx, k_img), idx, self.indices_to_values(idx)

  @property
  def _kernels(self):
    return _STATIC_KERNELS

  # ---- metadata ---------------------------------------------------------

  @property
  def num_factors(self) -> int:
    return len(self.factor_sizes)

  @property
  def num_examples(self) -> int:
    """Size of the full factor grid."""
    return math.prod(self.factor_sizes)

  @functools.cached_property
  def factor_values(self) -> tuple[np.ndarray, ...]:
    grid = tuple(np.asarray(v, np.float32) for v in self._factor_value_grid())
    if tuple(len(v) for v in grid) != tuple(self.factor_sizes):
      raise AssertionError(
          f"{self.name}: value grid sizes {[len(v) for v in grid]} do not "
          f"match factor_sizes {self.factor_sizes}.")
    return grid

  @functools.cached_property
  def _value_table(self) -> np.ndarray:
    """[K, max size] float32, row k padded with its last value."""
    width = max(self.factor_sizes)
    return np.stack([np.pad(v, (0, width - len(v)), mode="edge")
                     for v in self.factor_values])

  @property
  def metadata(self) -> dict[str, Any]:
    """Names, cardinalities, value grids and documented symmetries."""
    return {
        "name": self.name,
        "factor_names": list(self.factor_names),
        "factor_sizes": list(self.factor_sizes),
        "factor_values": [v.tolist() for v in self.factor_values],
        "categorical": list(self.categorical),
        "observation_shape": list(self.observation_shape),
        "num_examples": self.num_examples,
        "has_nuisance": self.has_nuisance,
        "symmetries": list(self.symmetries),
        "description": (type(self).__doc__ or "").strip().split("\n")[0],
    }

  def factor_index(self, factor: int | str) -> int:
    """The column of `factor` (a name or an index), validated."""
    if isinstance(factor, str):
      if factor not in self.factor_names:
        raise ValueError(
            f"unknown factor {factor!r} for {self.name}; factors are "
            f"{list(self.factor_names)}.")
      return self.factor_names.index(factor)
    if not 0 <= int(factor) < self.num_factors:
      raise ValueError(
          f"factor must be in [0, {self.num_factors}) for {self.name} "
          f"(factors {list(self.factor_names)}), got {factor}.")
    return int(factor)

  # ---- index <-> value ----------------------------------------------------

  def indices_to_values(self, factor_indices: jax.Array) -> jax.Array:
    """[..., K] int factor indices -> [..., K] float32 factor values."""
    table = jnp.asarray(self._value_table)
    idx = jnp.clip(jnp.asarray(factor_indices), 0, table.shape[1] - 1)
    return table[jnp.arange(self.num_factors), idx]

  def values_to_indices(self, factor_values, atol: float = 1e-4) -> np.ndarray:
    """[..., K] float values on the grid -> [..., K] int32 indices (host).

    Raises:
      ValueError: when a value is farther than `atol` from every grid value
        of its factor (the message names the factor and the nearest values).
    """
    v = np.asarray(factor_values, np.float64)
    self._check_last_dim("factor_values", v)
    out = np.empty(v.shape, np.int32)
    for k, grid in enumerate(self.factor_values):
      d = np.abs(v[..., k, None] - grid.astype(np.float64))
      out[..., k] = d.argmin(-1)
      bad = d.min(-1) > atol
      if bad.any():
        first = v[..., k][bad].flat[0]
        raise ValueError(
            f"{int(bad.sum())} value(s) of factor {self.factor_names[k]!r} "
            f"are off the {self.name} grid (e.g. {first:.6g}; grid "
            f"{_short_grid(grid)}); use render_values() for off-grid values.")
    return out

  def flat_index(self, factor_indices) -> np.ndarray:
    """[..., K] factor indices -> position in the row-major grid (host)."""
    idx = np.asarray(factor_indices, np.int64)
    return np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)),
                                self.factor_sizes)

  def unflat_index(self, flat) -> np.ndarray:
    """Position in the row-major grid -> [..., K] int32 factor indices."""
    return np.stack(np.unravel_index(np.asarray(flat), self.factor_sizes),
                    -1).astype(np.int32)

  # ---- validation ---------------------------------------------------------

  def _check_last_dim(self, name: str, x) -> None:
    if np.ndim(x) < 1 or np.shape(x)[-1] != self.num_factors:
      raise ValueError(
          f"{name} must have shape [..., {self.num_factors}] (one column per "
          f"factor {list(self.factor_names)}), got shape {tuple(np.shape(x))}.")

  def check_indices(self, factor_indices, name: str = "factor_indices") -> None:
    """Validates dtype and shape; the range too when the array is concrete.

    Raises:
      TypeError: for a non-integer dtype.
      ValueError: for a wrong last dimension or an index outside the grid
        (the message names the factor, the value, its row and the range).
    """
    check_int(name, factor_indices)
    self._check_last_dim(name, factor_indices)
    if not validation.is_concrete(factor_indices):
      return
    idx = np.asarray(factor_indices)
    sizes = np.asarray(self.factor_sizes)
    bad = (idx < 0) | (idx >= sizes)
    if bad.any():
      pos = tuple(int(i) for i in np.argwhere(bad)[0])
      k = pos[-1]
      raise ValueError(
          f"{name} has {int(bad.sum())} index(es) outside the {self.name} "
          f"grid; first at {pos}: factor {self.factor_names[k]!r} = "
          f"{int(idx[pos])}, allowed 0..{sizes[k] - 1}.")

  def check_values(self, factor_values, name: str = "factor_values") -> None:
    """Validates dtype, shape and (when concrete) the range of the values."""
    if not np.issubdtype(_dtype_of(factor_values), np.floating):
      raise TypeError(
          f"{name} must be a floating-point array, got dtype "
          f"{_dtype_of(factor_values)}; use render() for integer indices.")
    self._check_last_dim(name, factor_values)
    if not validation.is_concrete(factor_values):
      return
    validation.check_finite(name, factor_values)
    v = np.asarray(factor_values)
    lo = np.array([g.min() for g in self.factor_values])
    hi = np.array([g.max() for g in self.factor_values])
    tol = 1e-5 * np.maximum(1.0, np.abs(hi))
    bad = (v < lo - tol) | (v > hi + tol)
    if bad.any():
      pos = tuple(int(i) for i in np.argwhere(bad)[0])
      k = pos[-1]
      raise ValueError(
          f"{name} has {int(bad.sum())} value(s) outside the {self.name} "
          f"factor ranges; first at {pos}: {self.factor_names[k]!r} = "
          f"{float(v[pos]):.6g}, allowed [{lo[k]:.6g}, {hi[k]:.6g}].")

  def _valid_rows(self, factor_indices: jax.Array) -> jax.Array:
    sizes = jnp.asarray(self.factor_sizes)
    return jnp.all((factor_indices >= 0) & (factor_indices < sizes), axis=-1)

  # ---- rendering ------------------------------------------------------------

  def render(self, factor_indices, key: jax.Array | None = None) -> jax.Array:
    """Image(s) of grid points given by factor INDICES.

    Args:
      factor_indices: [K] or [..., K] int array of factor indices.
      key: PRNG key, required when `has_nuisance` (colour, noise, cell
        placement); ignored otherwise.

    Returns:
      [H, W, C] or [..., H, W, C] float32 images in [0, 1]. Under jit,
      out-of-grid indices give NaN images.

    Raises:
      TypeError: for non-integer indices or a missing key.
      ValueError: for a wrong shape or (concrete input) an index off the grid.
    """
    self.check_indices(factor_indices)
    if self.has_nuisance:
      _check_key(key)
    return self._kernels["render_indices"](
        self, jnp.asarray(factor_indices, jnp.int32), key)

  def render_values(self, factor_values,
                    key: jax.Array | None = None) -> jax.Array:
    """Image(s) from factor VALUES; continuous factors may lie off the grid.

    Categorical factors (`categorical`) use the nearest grid value.

    Args:
      factor_values: [K] or [..., K] float array inside the factor ranges.
      key: PRNG key, required when `has_nuisance`.

    Returns:
      [..., H, W, C] float32 images in [0, 1]; NaN under jit when a value is
      outside its factor's range.
    """
    self.check_values(factor_values)
    if self.has_nuisance:
      _check_key(key)
    return self._kernels["render_values"](
        self, jnp.asarray(factor_values, jnp.float32), key)

  # ---- sampling ---------------------------------------------------------------

  def sample(self, key: jax.Array, n: int) -> Triple:
    """n random grid points with their images.

    Jittable (with `n` static); designed to be called inside a jitted train
    step, one key per step.

    Args:
      key: PRNG key.
      n: static number of examples.

    Returns:
      images [n, H, W, C] float32 in [0, 1], factor_indices [n, K] int32,
      factor_values [n, K] float32.
    """
    _check_key(key)
    return self._kernels["sample"](self, key, check_n(n))

  def sample_fixed(self, key: jax.Array, n: int, factor, value) -> Triple:
    """Like `sample`, with factor `factor` held at index `value` in all rows.

    The BetaVAE and FactorVAE scores draw such batches. `factor` (an int or a
    name) and `value` may be traced; `n` is static. Under jit an invalid
    factor or value gives NaN images.

    Args:
      key: PRNG key.
      n: static number of examples.
      factor: which factor to hold fixed (index or name).
      value: the index it is held at.

    Returns:
      images [n, H, W, C], factor_indices [n, K] int32 (column `factor`
      equal to `value`), factor_values [n, K] float32.
    """
    _check_key(key)
    n = check_n(n)
    if isinstance(factor, str) or validation.is_concrete(factor):
      factor = self.factor_index(factor if isinstance(factor, str)
                                 else int(factor))
      if validation.is_concrete(value):
        check_int("value", value)
        if not 0 <= int(value) < self.factor_sizes[factor]:
          raise ValueError(
              f"value must be an index in [0, {self.factor_sizes[factor]}) "
              f"for factor {self.factor_names[factor]!r} of {self.name}, got "
              f"{int(value)}.")
    return self._kernels["sample_fixed"](self, key, n,
                                         jnp.asarray(factor, jnp.int32),
                                         jnp.asarray(value, jnp.int32))

  # ---- the full grid -------------------------------------------------------------

  def _subgrid_axes(self, subgrid: Mapping[int | str, Sequence[int]] | None
                    ) -> list[np.ndarray]:
    axes = [np.arange(s) for s in self.factor_sizes]
    for f, sel in (subgrid or {}).items():
      k = self.factor_index(f)
      sel = np.asarray(sel)
      check_int(f"subgrid[{f!r}]", sel)
      if sel.ndim != 1 or sel.size == 0:
        raise ValueError(f"subgrid[{f!r}] must be a non-empty 1-D index list.")
      if (sel < 0).any() or (sel >= self.factor_sizes[k]).any():
        raise ValueError(
            f"subgrid[{f!r}] has indices outside 0..{self.factor_sizes[k] - 1}.")
      axes[k] = sel.astype(np.int64)
    return axes

  def all_factor_indices(
      self, subgrid: Mapping[int | str, Sequence[int]] | None = None
  ) -> np.ndarray:
    """Every grid point (or a sub-grid) as [N, K] int32, last factor fastest.

    Args:
      subgrid: optional {factor: indices} restricting some factors.

    Returns:
      [N, K] int32 factor indices in row-major order; for the full grid row i
      is grid point i of the published files (dSprites, Shapes3D, MPI3D).

    Raises:
      MemoryError: past 50M points; iterate with enumerate_grid instead.
    """
    axes = self._subgrid_axes(subgrid)
    total = math.prod(len(a) for a in axes)
    if total > _MAX_MATERIALISED_GRID:
      raise MemoryError(
          f"{self.name} grid has {total:,} points; iterate with "
          "enumerate_grid() instead of materialising it.")
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], -1).astype(np.int32)

  def enumerate_grid(
      self,
      batch_size: int = 1024,
      subgrid: Mapping[int | str, Sequence[int]] | None = None,
      key: jax.Array | None = None,
  ) -> Iterator[Triple]:
    """Renders the full grid (or a sub-grid) chunk by chunk, in grid order.

    Args:
      batch_size: images per chunk (the last chunk may be shorter); one
        compile serves every chunk.
      subgrid: optional {factor: indices} restricting some factors.
      key: PRNG key for datasets with nuisance (one sub-key per chunk).

    Yields:
      (images [b, H, W, C], factor_indices [b, K] int32, factor_values
      [b, K] float32) for consecutive chunks.
    """
    batch_size = check_n(batch_size)
    if self.has_nuisance:
      _check_key(key)
    axes = self._subgrid_axes(subgrid)
    sizes = [len(a) for a in axes]
    total = math.prod(sizes)
    for c, start in enumerate(range(0, total, batch_size)):
      flat = np.arange(start, min(start + batch_size, total))
      local = np.unravel_index(flat, sizes)
      idx = np.stack([a[i] for a, i in zip(axes, local)], -1).astype(np.int32)
      m = len(idx)
      # Pad to the fixed chunk size so the renderer compiles once.
      padded = np.concatenate([idx, np.repeat(idx[:1], batch_size - m, 0)])
      ck = None if key is None else jax.random.fold_in(key, c)
      images = self._kernels["images"](self, jnp.asarray(padded), ck)
      yield images[:m], jnp.asarray(idx), self.indices_to_values(
          jnp.asarray(idx))

  def __len__(self) -> int:
    return self.num_examples


def _short_grid(grid: np.ndarray) -> str:
  if len(grid) <= 6:
    return "[" + ", ".join(f"{g:.4g}" for g in grid) + "]"
  return (f"[{grid[0]:.4g}, {grid[1]:.4g}, ..., {grid[-1]:.4g}] "
          f"({len(grid)} values)")


# ---- jitted kernels ----------------------------------------------------------
# Each kernel body takes the dataset first. Procedural datasets are frozen
# dataclasses and pass as a static (hashed) argument; ArrayDataset is a
# pytree and passes as an ordinary argument, so its (large) arrays are
# inputs of the executable rather than constants baked into it.


def _images_body(ds, indices, key):
  if key is None:
    key = jax.random.key(0)
  return ds._images_for(indices, key)  # pylint: disable=protected-access


def _flag_invalid(images: jax.Array, valid: jax.Array) -> jax.Array:
  shape = (-1,) + (1,) * (images.ndim - 1)
  return jnp.where(valid.reshape(shape), images, jnp.nan)


def _render_indices_body(ds, indices, key):
  lead = indices.shape[:-1]
  flat = indices.reshape(-1, ds.num_factors)
  images = _images_body(ds, flat, key)
  images = _flag_invalid(images, ds._valid_rows(flat))  # pylint: disable=protected-access
  return images.reshape(lead + images.shape[1:])


def _render_values_body(ds, values, key):
  lead = values.shape[:-1]
  flat = values.reshape(-1, ds.num_factors)
  table = jnp.asarray(ds._value_table)  # pylint: disable=protected-access
  lo, hi = table.min(1), table.max(1)
  valid = jnp.all((flat >= lo - 1e-5) & (flat <= hi + 1e-5), axis=-1)
  # Categorical factors snap to their nearest grid value.
  snapped = []
  for k, name in enumerate(ds.factor_names):
    col = flat[:, k]
    if name in ds.categorical:
      grid = jnp.asarray(ds.factor_values[k])
      col = grid[jnp.argmin(jnp.abs(col[:, None] - grid[None, :]), -1)]
    snapped.append(col)
  flat = jnp.stack(snapped, -1)
  if ds.has_nuisance:
    keys = jax.random.split(key, flat.shape[0])
    images = jax.vmap(ds._render)(flat, keys)  # pylint: disable=protected-access
  else:
    images = jax.vmap(lambda v: ds._render(v, None))(flat)  # pylint: disable=protected-access
  images = _flag_invalid(images, valid)
  return images.reshape(lead + images.shape[1:])


def _sample_body(ds, key, n):
  return ds._draw(key, n)  # pylint: disable=protected-access


def _sample_fixed_body(ds, key, n, factor, value):
  images, idx, values = ds._draw_fixed(key, n, factor, value)  # pylint: disable=protected-access
  sizes = jnp.asarray(ds.factor_sizes)
  ok = (factor >= 0) & (factor < ds.num_factors)
  ok &= (value >= 0) & (value < sizes[jnp.clip(factor, 0, ds.num_factors - 1)])
  images = _flag_invalid(images, jnp.broadcast_to(ok, (n,)))
  return images, idx, values


def _kernels(static: bool):
  extra = (0,) if static else ()
  return {
      "images": jax.jit(_images_body, static_argnums=extra),
      "render_indices": jax.jit(_render_indices_body, static_argnums=extra),
      "render_values": jax.jit(_render_values_body, static_argnums=extra),
      "sample": jax.jit(_sample_body, static_argnums=extra + (2,)),
      "sample_fixed": jax.jit(_sample_fixed_body,
                              static_argnums=extra + (2,)),
  }


_STATIC_KERNELS = _kernels(static=True)
_PYTREE_KERNELS = _kernels(static=False)


@jax.tree_util.register_pytree_node_class
class ArrayDataset(GroundTruthDataset):
  """A stored ground-truth dataset held in (device) memory.

  Rows need not cover the grid, nor cover it once: scikit-learn digits has
  ~180 images per digit, smallNORB several instances per factor setting.
  `sample` draws rows uniformly; `sample_fixed(factor, value)` draws rows
  uniformly among those whose factor equals `value` (one sort per factor,
  precomputed, so both stay jittable with traced `factor`/`value`). When the
  rows cover the grid exactly once, `render` looks images up by index and
  `enumerate_grid` walks the grid.

  An ArrayDataset is a pytree (its arrays are the leaves). Pass it as an
  ARGUMENT of your jitted step, `step(state, ds, key)`, rather than closing
  over it: JAX bakes closed-over arrays into the executable as constants
  (slow to compile, twice the memory for GB-sized image sets); arguments
  stay device buffers. Its own `sample`/`render` do the same.

  Args:
    images: [N, H, W, C] uint8 (scaled by 1/255) or float array in [0, 1].
    factor_indices: [N, K] int factor indices.
    factor_names: K names.
    factor_sizes: K cardinalities (default: max index + 1).
    factor_values: optional [N, K] float values; each index must map to
      one value (checked), which defines the value grid. Default: the
      indices as floats.
    name: dataset name for messages.

  Examples:
    >>> import numpy as np, jax
    >>> ds = ArrayDataset(np.zeros((4, 8, 8, 1), np.uint8),
    ...                   np.array([[0], [1], [0], [1]]), ("digit",))
    >>> ds.sample(jax.random.key(0), 3)[1].shape
    (3, 1)
  """

  def __init__(self, images, factor_indices, factor_names: Sequence[str],
               factor_sizes: Sequence[int] | None = None,
               factor_values=None, name: str = "arrays",
               categorical: Sequence[str] = ()):
    images = np.asarray(images)
    idx = np.asarray(factor_indices)
    check_int("factor_indices", idx)
    validation.check_ndim("images", images, (4,), "[N, H, W, C]")
    validation.check_ndim("factor_indices", idx, (2,), "[N, K]")
    if len(images) != len(idx):
      raise ValueError(
          f"images has {len(images)} rows but factor_indices has {len(idx)}.")
    if len(images) == 0:
      raise ValueError("an ArrayDataset needs at least one row.")
    if idx.shape[1] != len(factor_names):
      raise ValueError(
          f"factor_indices has {idx.shape[1]} columns but {len(factor_names)} "
          f"factor names were given ({list(factor_names)}).")
    if images.dtype != np.uint8:
      validation.check_float("images", images)
      validation.check_finite("images", images, row_axis=0)
    if (idx < 0).any():
      raise ValueError("factor_indices must be >= 0.")
    self.name = name
    self.factor_names = tuple(factor_names)
    sizes = (tuple(int(s) for s in factor_sizes) if factor_sizes is not None
             else tuple(int(m) + 1 for m in idx.max(0)))
    if len(sizes) != idx.shape[1] or (idx >= np.asarray(sizes)).any():
      raise ValueError(
          f"factor_indices exceed factor_sizes {sizes} (max per factor "
          f"{idx.max(0).tolist()}).")
    self.factor_sizes = sizes
    self.observation_shape = tuple(int(d) for d in images.shape[1:])
    self.categorical = tuple(categorical)
    self._grid = self._grid_from(idx, factor_values)
    self._images = jnp.asarray(images)
    self._idx = jnp.asarray(idx, jnp.int32)
    # Rows sorted by each factor, and where each (factor, value) block
    # starts: sample_fixed draws a position inside the block.
    order = np.argsort(idx, axis=0, kind="stable").T.astype(np.int32)
    counts = np.zeros((len(sizes), max(sizes)), np.int32)
    for k, s in enumerate(sizes):
      counts[k, :s] = np.bincount(idx[:, k], minlength=s)
    starts = np.cumsum(counts, 1) - counts
    self._order, self._counts = jnp.asarray(order), jnp.asarray(counts)
    self._starts = jnp.asarray(starts.astype(np.int32))
    flat = self.flat_index(idx)
    self.complete_grid = (len(idx) == self.num_examples
                          and len(np.unique(flat)) == len(idx))
    if self.complete_grid:
      row_of = np.empty(self.num_examples, np.int32)
      row_of[flat] = np.arange(len(idx), dtype=np.int32)
      self._row_of = jnp.asarray(row_of)

  def _grid_from(self, idx: np.ndarray, values) -> tuple[np.ndarray, ...]:
    if values is None:
      return tuple(np.arange(s, dtype=np.float32) for s in self.factor_sizes)
    values = np.asarray(values, np.float32)
    if values.shape != idx.shape:
      raise ValueError(
          f"factor_values has shape {values.shape}, expected {idx.shape}.")
    validation.check_finite("factor_values", values, row_axis=0)
    grid = []
    for k, s in enumerate(self.factor_sizes):
      g = np.full(s, np.nan, np.float32)
      g[idx[:, k]] = values[:, k]
      if not np.allclose(g[idx[:, k]], values[:, k], atol=1e-6):
        raise ValueError(
            f"factor {self.factor_names[k]!r}: one index maps to several "
            "values; factor_values must be a function of factor_indices.")
      # Indices absent from the rows get their own index as a value.
      missing = np.isnan(g)
      g[missing] = np.flatnonzero(missing)
      grid.append(g)
    return tuple(grid)

  def _factor_value_grid(self):
    return self._grid

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other

  @property
  def _kernels(self):
    return _PYTREE_KERNELS

  _AUX = ("name", "factor_names", "factor_sizes", "observation_shape",
          "categorical", "complete_grid")
  _LEAVES = ("_images", "_idx", "_order", "_counts", "_starts", "_row_of")

  def tree_flatten(self):
    leaves = tuple(getattr(self, k, None) for k in self._LEAVES)
    grid = tuple(tuple(float(v) for v in g) for g in self._grid)
    return leaves, tuple(getattr(self, k) for k in self._AUX) + (grid,)

  @classmethod
  def tree_unflatten(cls, aux, leaves):
    obj = object.__new__(cls)
    for k, v in zip(cls._AUX, aux[:-1]):
      setattr(obj, k, v)
    obj._grid = tuple(np.asarray(g, np.float32) for g in aux[-1])  # pylint: disable=protected-access
    for k, v in zip(cls._LEAVES, leaves):
      if v is not None:
        setattr(obj, k, v)
    return obj

  def __len__(self) -> int:
    return self.num_rows

  @property
  def num_rows(self) -> int:
    return int(self._idx.shape[0])

  def _rows(self, rows: jax.Array) -> Triple:
    images = self._images[rows]
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 255.0
    idx = self._idx[rows]
    return images.astype(jnp.float32), idx, self.indices_to_values(idx)

  def _draw(self, key, n):
    return self._rows(jax.random.randint(key, (n,), 0, self.num_rows))

  def _draw_fixed(self, key, n, factor, value):
    k = jnp.clip(factor, 0, self.num_factors - 1)
    v = jnp.clip(value, 0, self._counts.shape[1] - 1)
    count = jnp.maximum(self._counts[k, v], 1)
    pos = self._starts[k, v] + jnp.minimum(
        (jax.random.uniform(key, (n,)) * count).astype(jnp.int32), count - 1)
    images, idx, values = self._rows(self._order[k, pos])
    # A value with no rows cannot be sampled: flag it like a bad index.
    images = jnp.where(self._counts[k, v] > 0, images, jnp.nan)
    return images, idx, values

  def _images_for(self, indices, key):
    del key
    if not self.complete_grid:
      raise NotImplementedError(
          f"{self.name}: rows do not cover the factor grid exactly once, so "
          "an image cannot be looked up by factor indices; use sample() or "
          "sample_fixed().")
    rows = self._row_of[jnp.asarray(self.flat_index_jnp(indices))]
    return self._rows(rows)[0]

  def flat_index_jnp(self, indices: jax.Array) -> jax.Array:
    """Traced row-major flat index of [..., K] factor indices."""
    strides = np.cumprod((1,) + self.factor_sizes[:0:-1])[::-1]
    return jnp.sum(jnp.clip(indices, 0, jnp.asarray(self.factor_sizes) - 1)
                   * jnp.asarray(strides, jnp.int32), -1)

  def arrays(self) -> Triple:
    """All rows: images [N, H, W, C] float32, indices, values."""
    return self._rows(jnp.arange(self.num_rows))
