"""Real ground-truth datasets read from prepared TFDS array_record data.

Random access through `tfds.data_source` / `DatasetBuilder.as_data_source`
needs no TensorFlow (images decode with Pillow). Every source yields the
triple of the procedural sets: (image, factor indices, factor values).

    source = open_source("shapes3d", data_dir="~/tensorflow_datasets")
    for images, idx, values in HostPipeline(source, 256, jax.random.key(0)):
      ...                                   # device arrays, per-host shard
                                            # (Grain reads them)

    ds = load_in_memory("mpi3d", config="complex")   # an ArrayDataset:
    images, idx, values = ds.sample(key, 256)         # jittable, on device

Known sources: dsprites, shapes3d, smallnorb, mnist (TFDS's builders);
mpi3d, falcor3d, isaac3d (ours, `nearid_jax.data.builders`); any
`procedural_<name>` copy written by `builders.materialize`; and `digits`
(scikit-learn's bundled 8x8 digits, offline) via `load_digits`. Nothing is
ever downloaded here: missing data raise `DatasetNotFoundError` naming the
dataset, the directory searched and the commands that prepare it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Iterator, Sequence

from absl import logging
import grain
import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax.data import errors
from nearid_jax.data import ground_truth


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """How one dataset's records map to (image, factor indices, values).

  Attributes:
    name: our name for it.
    tfds_name: TFDS name (with config) to open.
    factor_names: K factor names, in order.
    label_keys: record key of each factor's class index.
    value_keys: record key of each factor's value, or None to take the
      value from `value_grid`.
    value_grid: per-factor values by index when `value_keys` is None.
    splits: the splits the dataset has.
    prepare: commands that prepare it ({data_dir} is substituted).
    ours: built by `nearid_jax.data.builders` (imported on demand).
  """
  name: str
  tfds_name: str
  factor_names: tuple[str, ...] = ()
  label_keys: tuple[str, ...] = ()
  value_keys: tuple[str, ...] | None = None
  value_grid: tuple[tuple[float, ...], ...] | None = None
  splits: tuple[str, ...] = ("train",)
  prepare: tuple[str, ...] = ()
  ours: bool = False


def _conv(names):
  return (tuple(f"label_{n}" for n in names), tuple(f"value_{n}" for n in names))


def _tfds_build(name: str, extra: str = "") -> tuple[str, ...]:
  # `tfds build` needs TensorFlow to encode images; the reading side here
  # does not. array_record is what random access (and this module) reads.
  return (f"pip install tensorflow tensorflow-datasets {extra}".strip(),
          f"tfds build {name} --data_dir={{data_dir}} "
          "--file_format=array_record")


_DSPRITES = ("shape", "scale", "orientation", "x_position", "y_position")
_SHAPES3D = ("floor_hue", "wall_hue", "object_hue", "scale", "shape",
             "orientation")
_MPI3D = ("object_color", "object_shape", "object_size", "camera_height",
          "background_color", "horizontal_axis", "vertical_axis")


def _ours(name: str, config: str, factor_names) -> SourceSpec:
  # The prepare commands come from the builder (see _prepare_commands).
  return SourceSpec(name, f"{name}/{config}", factor_names,
                    *_conv(factor_names), ours=True)


def _prepare_commands(spec: SourceSpec, data_dir: str) -> list[str]:
  if not spec.ours:
    return [c.format(data_dir=data_dir) for c in spec.prepare]
  from nearid_jax.data.builders import manual  # pylint: disable=g-import-not-at-top
  name, config = spec.tfds_name.split("/")
  manual_dir = os.path.join("~", name)
  cls = manual.BUILDERS[name]
  if name == "mpi3d":
    from nearid_jax.data.builders import mpi3d  # pylint: disable=g-import-not-at-top
    cfg = {c.name: c for c in mpi3d.CONFIGS}.get(config)
    if cfg is None:
      return [f"# unknown mpi3d config {config!r}; configs: "
              f"{[c.name for c in mpi3d.CONFIGS]}"]
    return mpi3d.prepare_commands(cfg, manual_dir, data_dir)
  return cls.prepare_commands(manual_dir, data_dir, config)


SPECS: dict[str, SourceSpec] = {
    # The published value grids (dSprites' orientations are
    # linspace(0, 2 pi, 40): its first and last coincide).
    "dsprites": SourceSpec(
        "dsprites", "dsprites", _DSPRITES, *_conv(_DSPRITES),
        ((1.0, 2.0, 3.0), tuple(np.linspace(0.5, 1.0, 6)),
         tuple(np.linspace(0.0, 2 * np.pi, 40)),
         tuple(np.linspace(0.0, 1.0, 32)), tuple(np.linspace(0.0, 1.0, 32))),
        prepare=_tfds_build("dsprites", "h5py")),
    "shapes3d": SourceSpec(
        "shapes3d", "shapes3d", _SHAPES3D, *_conv(_SHAPES3D),
        (tuple(np.arange(10) / 10),) * 3 + (
            tuple(np.linspace(0.75, 1.25, 8)), (0.0, 1.0, 2.0, 3.0),
            tuple(np.linspace(-30.0, 30.0, 15))),
        prepare=_tfds_build("shapes3d", "h5py")),
    # smallNORB's factors as in disentanglement_lib (the object instance is
    # a nuisance); values in degrees for elevation (30..70) and azimuth
    # (0..340).
    "smallnorb": SourceSpec(
        "smallnorb", "smallnorb",
        ("category", "elevation", "azimuth", "lighting"),
        ("label_category", "label_elevation", "label_azimuth",
         "label_lighting"), None,
        (tuple(range(5)), tuple(30.0 + 5.0 * i for i in range(9)),
         tuple(20.0 * i for i in range(18)), tuple(range(6))),
        ("train", "test"), _tfds_build("smallnorb")),
    "mnist": SourceSpec("mnist", "mnist", ("digit",), ("label",), None,
                        (tuple(range(10)),), ("train", "test"),
                        _tfds_build("mnist")),
    "mpi3d": _ours("mpi3d", "complex", _MPI3D),
    "falcor3d": _ours("falcor3d", "down64", (
        "lighting_intensity", "lighting_x", "lighting_y", "lighting_z",
        "camera_x", "camera_y", "camera_z")),
    "isaac3d": _ours("isaac3d", "down64", (
        "object_shape", "robot_x", "robot_y", "camera_height",
        "object_scale", "lighting_intensity", "lighting_y", "object_color",
        "wall_color")),
}
PROCEDURAL_PREFIX = "procedural_"


def known_sources() -> list[str]:
  return sorted(SPECS) + [PROCEDURAL_PREFIX + "<name>", "digits"]


def default_data_dir() -> str:
  return os.path.expanduser(os.environ.get(
      "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets")))


def _spec_for(name: str, config: str | None) -> SourceSpec:
  if name.startswith(PROCEDURAL_PREFIX):
    return SourceSpec(name, name, prepare=(
        f"python -m nearid_jax.data.builders procedural "
        f"{name[len(PROCEDURAL_PREFIX):]} --data_dir={{data_dir}}",))
  if name not in SPECS:
    raise errors.UnknownDatasetError(name, known_sources(), "in tfds_sources")
  spec = SPECS[name]
  if config is not None:
    if not spec.ours:
      raise ValueError(f"{name} has no configs here; drop config={config!r}.")
    spec = dataclasses.replace(spec, tfds_name=f"{name}/{config}")
  return spec


class TfdsSource:
  """Random access to one split of a prepared dataset as ground-truth rows.

  Attributes:
    name, factor_names, factor_sizes, factor_values, observation_shape: as
      in GroundTruthDataset.
    split: the (per-host) split read.
    data_source: the underlying TFDS data source.
  """

  def __init__(self, spec: SourceSpec, builder: tfds.core.DatasetBuilder,
               split: Any, data_source: Sequence[dict]):
    self.spec, self.builder, self.split = spec, builder, split
    self.data_source = data_source
    self.name = spec.name
    feats = builder.info.features
    meta = dict(builder.info.metadata or {})
    names = spec.factor_names or tuple(meta.get("factor_names", ()))
    if not names:
      raise ValueError(
          f"{spec.name}: no factor names in its metadata.json; was it "
          "written by nearid_jax.data.builders?")
    self.factor_names = tuple(names)
    self.label_keys = spec.label_keys or _conv(names)[0]
    self.value_keys = (spec.value_keys if spec.label_keys
                       else _conv(names)[1])
    self.factor_sizes = tuple(int(feats[k].num_classes)
                              for k in self.label_keys)
    if spec.value_grid is not None:
      grid = [np.asarray(g, np.float32) for g in spec.value_grid]
      if tuple(len(g) for g in grid) != self.factor_sizes:
        grid = [np.arange(s, dtype=np.float32) for s in self.factor_sizes]
    elif "factor_values" in meta:
      grid = [np.asarray(g, np.float32) for g in meta["factor_values"]]
    else:
      grid = [np.arange(s, dtype=np.float32) for s in self.factor_sizes]
    self.factor_values = tuple(grid)
    self.observation_shape = tuple(int(d) for d in feats["image"].shape)

  def __len__(self) -> int:
    return len(self.data_source)

  def _convert(self, records: Sequence[dict]):
    images = np.stack([np.asarray(r["image"]) for r in records])
    if images.ndim == 3:
      images = images[..., None]
    idx = np.array([[r[k] for k in self.label_keys] for r in records],
                   np.int32).reshape(len(records), -1)
    if self.value_keys is not None and all(k in records[0]
                                           for k in self.value_keys):
      values = np.array([[r[k] for k in self.value_keys] for r in records],
                        np.float32).reshape(len(records), -1)
    else:
      values = np.stack([g[idx[:, k]] for k, g in
                         enumerate(self.factor_values)], -1).astype(np.float32)
    return images, idx, values

  def read(self, rows: Sequence[int]):
    """Rows -> (images [n, H, W, C] uint8, indices [n, K] int32, values)."""
    rows = [int(r) for r in rows]
    getitems = getattr(self.data_source, "__getitems__", None)
    records = None
    if getitems is not None:
      try:
        records = list(getitems(rows))
      except TypeError:  # tfds.testing.mock_data's mock lacks a batch read
        records = None
    if records is None:
      records = [self.data_source[r] for r in rows]
    return self._convert(records)

  def __getitem__(self, i: int):
    images, idx, values = self.read([i])
    return images[0], idx[0], values[0]

  def __repr__(self):
    return (f"TfdsSource({self.name!r}, split={self.split!r}, "
            f"{len(self)} rows, factors={self.factor_names})")


def _tfds():
  """tensorflow_datasets, imported on first use: it is an optional extra."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "reading stored datasets needs tensorflow-datasets: "
        "pip install 'nearid_jax[real-data]' (procedural and synthetic data "
        "need nothing more)") from e
  return tfds


def _process_split(split: Any, shard_by_process: bool) -> Any:
  if shard_by_process and jax.process_count() > 1:
    return _tfds().even_splits(split, jax.process_count())[jax.process_index()]
  return split


def open_source(name: str, split: str = "train", data_dir: str | None = None,
                *, config: str | None = None,
                shard_by_process: bool = True) -> TfdsSource:
  """Opens a prepared dataset for random access, without TensorFlow.

  Args:
    name: a known source (`known_sources()`).
    split: TFDS split string (e.g. "train", "train[:10%]").
    data_dir: TFDS data directory (default $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    config: builder config for our builders (mpi3d: toy, realistic, real,
      complex; falcor3d/isaac3d: down64, down128).
    shard_by_process: read only this host's part,
      `tfds.even_splits(split, jax.process_count())[jax.process_index()]`.

  Returns:
    A TfdsSource.

  Raises:
    UnknownDatasetError: unknown name (lists the known ones).
    DatasetNotFoundError: data not prepared in `data_dir`, or prepared in a
      format without random access (with the commands that fix it).
  """
  spec = _spec_for(name, config)
  tfds = _tfds()
  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  if spec.ours:
    from nearid_jax.data import builders  # pylint: disable=g-import-not-at-top,unused-import
  commands = _prepare_commands(spec, data_dir)
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.DatasetNotFoundError(
        name, os.path.join(data_dir, spec.tfds_name), commands,
        detail="no prepared copy") from e
  split = _process_split(split, shard_by_process)
  try:
    data_source = builder.as_data_source(split=split)
  except Exception as e:  # diagnosed below; anything else propagates
    if not builder.is_prepared():
      raise errors.DatasetNotFoundError(
          name, builder.data_dir, commands, detail="not prepared there") from e
    fmt = builder.info.file_format
    if fmt is None or fmt.value not in ("array_record", "parquet"):
      raise errors.DatasetNotFoundError(
          name, builder.data_dir,
          ["pip install tensorflow tensorflow-datasets",
           f"tfds convert_format --dataset_version_dir={builder.data_dir} "
           "--out_file_format=array_record"],
          detail=f"prepared as {getattr(fmt, 'value', fmt)}, which has no "
                 "random access; convert it to array_record") from e
    raise
  return TfdsSource(spec, builder, split, data_source)


def from_builder(builder: tfds.core.DatasetBuilder, split: str = "train", *,
                 name: str | None = None,
                 shard_by_process: bool = True) -> TfdsSource:
  """A TfdsSource over any prepared builder written with our conventions.

  For copies that `open_source` cannot find by name: a custom builder
  config, or a directory (`tfds.builder_from_directory(path)`).

  Args:
    builder: a prepared builder whose records hold image, label_<factor>
      and value_<factor>, with factor names in its metadata.json.
    split: split to read.
    name: name for messages (default: the builder's).
    shard_by_process: read only this host's part of the split.
  """
  split = _process_split(split, shard_by_process)
  spec = SourceSpec(name or builder.name, builder.name)
  return TfdsSource(spec, builder, split, builder.as_data_source(split=split))


# ---- the host input pipeline -------------------------------------------------


class HostPipeline:
  """Shuffled, prefetched batches of a TfdsSource, deterministic given a key.

  Grain reads them (`streaming.batch_rows`, the order of the trainer's
  streamed data): each epoch visits this host's rows in a permutation fixed
  by (key, epoch); its threads read `prefetch` batches ahead (in order, so
  the content never depends on thread timing), and each batch is put on the
  device as it is handed out (asynchronously).

  Args:
    source: a TfdsSource (or anything with `read(rows)` and `len`).
    batch_size: rows per batch (per host).
    key: PRNG key fixing the order.
    num_epochs: None for endless.
    shuffle: permute rows each epoch.
    drop_remainder: drop the last partial batch of an epoch.
    prefetch: batches read ahead.
    num_threads: reading (decoding) threads.
    sharding: optional `jax.sharding.Sharding` for the batch; with several
      processes the per-host batches form one global array.
    float_images: convert uint8 images to float32 in [0, 1] on the device.

  Yields:
    (images [B, H, W, C], factor_indices [B, K] int32, factor_values
    [B, K] float32) as device arrays.

  Examples:
    >>> # for images, idx, values in HostPipeline(src, 256, key): ...
  """

  def __init__(self, source, batch_size: int, key: jax.Array, *,
               num_epochs: int | None = None, shuffle: bool = True,
               drop_remainder: bool = True, prefetch: int = 2,
               num_threads: int = 4, sharding=None,
               float_images: bool = True):
    from nearid_jax.data import streaming  # pylint: disable=g-import-not-at-top
    self.source = source
    self.batch_size = ground_truth.check_n(batch_size)
    if key is None:
      raise TypeError("a PRNG key is required, e.g. jax.random.key(0).")
    self.key, self.num_epochs = key, num_epochs
    self.shuffle, self.drop_remainder = shuffle, drop_remainder
    self.prefetch = max(1, int(prefetch))
    self.num_threads = max(1, int(num_threads))
    self.sharding, self.float_images = sharding, float_images
    n = len(source)
    if n == 0 or (drop_remainder and n < self.batch_size):
      raise ValueError(
          f"{getattr(source, 'name', 'source')} has {n} rows on this host, "
          f"fewer than one batch of {self.batch_size}; lower batch_size or "
          "set drop_remainder=False.")
    self._rows = streaming.batch_rows(
        n, self.batch_size, streaming.shuffle_seed(key),
        num_epochs=num_epochs, drop_remainder=drop_remainder,
        shuffle=shuffle)

  def batch_rows(self) -> Iterator[np.ndarray]:
    """The row indices of every batch, in order (host-side, cheap)."""
    for k in range(len(self._rows)):
      yield self._rows[k]

  def _to_device(self, batch):
    images, idx, values = batch
    if self.sharding is not None and jax.process_count() > 1:
      put = lambda x: jax.make_array_from_process_local_data(self.sharding, x)
    else:
      put = lambda x: jax.device_put(x, self.sharding)
    images, idx, values = put(images), put(idx), put(values)
    if self.float_images and images.dtype == jnp.uint8:
      images = _to_float(images)
    return images, idx, values

  def __iter__(self):
    batches = self._rows.map(self.source.read).to_iter_dataset(
        grain.ReadOptions(num_threads=self.num_threads,
                          prefetch_buffer_size=self.prefetch))
    it = iter(batches)
    try:
      for batch in it:
        yield self._to_device(batch)
    finally:
      it.close()  # stops the reading threads (also on break / close())


@jax.jit
def _to_float(images: jax.Array) -> jax.Array:
  return images.astype(jnp.float32) / 255.0


# ---- in memory ---------------------------------------------------------------


def load_in_memory(name: str, split: str = "train",
                   data_dir: str | None = None, *, config: str | None = None,
                   max_examples: int | None = None,
                   shard_by_process: bool = False,
                   num_threads: int = 8) -> ground_truth.ArrayDataset:
  """Reads a prepared dataset into an ArrayDataset (uint8 on the device).

  Then `sample(key, n)` runs inside a jitted step like the procedural sets.
  Memory: dSprites 3.0 GB, Shapes3D 5.9 GB, MPI3D-complex 5.7 GB as uint8.

  Args:
    name, split, data_dir, config, shard_by_process: as in `open_source`.
    max_examples: read only the first rows (tests, smoke runs).
    num_threads: decoding threads.

  Returns:
    An ArrayDataset named `name`.
  """
  source = open_source(name, split, data_dir, config=config,
                       shard_by_process=shard_by_process)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  chunks = [list(range(s, min(s + 1024, n))) for s in range(0, n, 1024)]
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    parts = list(pool.map(source.read, chunks))
  images = np.concatenate([p[0] for p in parts])
  idx = np.concatenate([p[1] for p in parts])
  values = np.concatenate([p[2] for p in parts])
  return ground_truth.ArrayDataset(images, idx, source.factor_names,
                                   source.factor_sizes, values, name=name)


def load_digits() -> ground_truth.ArrayDataset:
  """scikit-learn's bundled 8x8 digits (1,797 images, offline), 8x8x1.

  A real-image stand-in for MNIST when MNIST is not prepared; the one
  factor is the digit. Pixel values 0..16 are scaled to [0, 1].

  Examples:
    >>> ds = load_digits()
    >>> ds.observation_shape, ds.factor_sizes
    ((8, 8, 1), (10,))
  """
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the digits dataset ships with scikit-learn: "
                      "pip install 'nearid_jax[real-data]'") from e
  d = datasets.load_digits()
  images = np.round(d.images / 16.0 * 255.0).astype(np.uint8)[..., None]
  return ground_truth.ArrayDataset(images, d.target[:, None].astype(np.int32),
                                   ("digit",), (10,), name="digits",
                                   categorical=("digit",))


def mnist_or_digits(data_dir: str | None = None,
                    split: str = "train") -> ground_truth.ArrayDataset:
  """MNIST from prepared TFDS data if present, else the bundled digits."""
  try:
    return load_in_memory("mnist", split, data_dir)
  except errors.DatasetNotFoundError as e:
    logging.warning("MNIST not prepared (%s); using scikit-learn digits.",
                    str(e).splitlines()[0])
    return load_digits()
