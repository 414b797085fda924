"""What our TFDS builders share: TF-free array_record writing, factor
features, manual-file checks.

Writing array_record without TensorFlow works through TFDS's own
`GeneratorBasedBuilder.download_and_prepare(file_format="array_record")`
(TFDS tests exactly this in import_without_tf_test.py), with two caveats
that this module handles:

* `tfds.features.Image` encodes numpy arrays with `tf.image.encode_png`, so
  images are passed as PNG bytes encoded by Pillow (decoding on read uses
  Pillow too).
* `DatasetBuilder.code_path` needs the `importlib_resources` backport on
  Python >= 3.9 for builders defined in a package (TFDS 4.9.10 bug); our
  builders answer it from `inspect` instead.

Every dataset stores `image`, then `label_<factor>` (ClassLabel) and
`value_<factor>` (float32) per factor, the convention of TFDS's dsprites
and shapes3d, and records the factor order, sizes and value grids in the
dataset's metadata.json, so one reader serves all of them.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import zipfile
from typing import Any, Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_metadata

from nearid_jax.data import errors


def png_bytes(image: np.ndarray) -> bytes:
  """[H, W, C] uint8 -> PNG bytes (Pillow; no TensorFlow)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"images must be uint8 to be stored, got {image.dtype}.")
  mode_img = image[..., 0] if image.shape[-1] == 1 else image
  buf = io.BytesIO()
  Image.fromarray(mode_img).save(buf, format="png")
  return buf.getvalue()


def resize_png(data: bytes, size: int) -> bytes:
  """Re-encodes PNG bytes at size x size (box filter) when they differ."""
  with Image.open(io.BytesIO(data)) as im:
    im = im.convert("RGB")
    if im.size == (size, size):
      return png_bytes(np.asarray(im))
    return png_bytes(np.asarray(im.resize((size, size), Image.BOX)))


def factor_features(image_shape: Sequence[int], factor_names: Sequence[str],
                    factor_sizes: Sequence[int]) -> tfds.features.FeaturesDict:
  """FeaturesDict with image, label_<factor> and value_<factor>."""
  feats: dict[str, Any] = {"image": tfds.features.Image(
      shape=tuple(image_shape))}
  for name, size in zip(factor_names, factor_sizes):
    feats[f"label_{name}"] = tfds.features.ClassLabel(num_classes=int(size))
    feats[f"value_{name}"] = tfds.features.Tensor(shape=(), dtype=np.float32)
  return tfds.features.FeaturesDict(feats)


def factor_metadata(factor_names, factor_sizes, factor_values,
                    **extra) -> tfds.core.MetadataDict:
  """Factor order, sizes and value grids, saved in metadata.json."""
  return tfds.core.MetadataDict(
      factor_names=list(factor_names),
      factor_sizes=[int(s) for s in factor_sizes],
      factor_values=[np.asarray(v, np.float64).tolist()
                     for v in factor_values],
      **extra)


def example(image_png: bytes, factor_names, indices, values) -> dict:
  ex = {"image": image_png}
  for name, i, v in zip(factor_names, indices, values):
    ex[f"label_{name}"] = int(i)
    ex[f"value_{name}"] = np.float32(v)
  return ex


class FactorBuilder(tfds.core.GeneratorBasedBuilder,
                    skip_registration=True):
  """Base of our builders: TF-free, grid order kept (no write shuffling)."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:  # pylint: disable=no-self-argument
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  @classmethod
  def get_metadata(cls):
    # Descriptions live in code; TFDS would otherwise look for README/
    # CITATIONS files in the defining package, which fails for builders
    # defined outside a package (tests, notebooks).
    return dataset_metadata.DatasetMetadata(description=None, citation=None,
                                            tags=[])


def prepare_quietly(builder: tfds.core.DatasetBuilder, **kwargs) -> None:
  """`builder.download_and_prepare(**kwargs)` with TFDS's prints logged.

  TFDS prints its progress messages to stdout; they go to absl logging
  here so library calls (and doctests) stay quiet.
  """
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    builder.download_and_prepare(**kwargs)
  for line in out.getvalue().splitlines():
    logging.info("%s", line)


# ---- manual-download files ---------------------------------------------------

SHA256SUMS = "SHA256SUMS"


def sha256(path: epath.PathLike, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def verify_sha256sums(manual_dir: epath.PathLike,
                      names: Sequence[str]) -> None:
  """Checks `names` against a `SHA256SUMS` file in `manual_dir`, if any.

  The file has `sha256sum`'s format ("<hex>  <name>" per line); record it
  right after downloading (`sha256sum FILE > SHA256SUMS`) and every later
  build verifies the copy it reads.

  Raises:
    ChecksumError: naming the file, the expected and the actual digest.
  """
  sums = os.path.join(os.fspath(manual_dir), SHA256SUMS)
  if not os.path.exists(sums):
    return
  expected = {}
  with open(sums) as f:
    for line in f:
      parts = line.split()
      if len(parts) >= 2:
        expected[parts[-1].lstrip("*")] = parts[0].lower()
  for name in names:
    if name in expected:
      path = os.path.join(os.fspath(manual_dir), name)
      got = sha256(path)
      if got != expected[name]:
        raise errors.ChecksumError(path, "sha256", expected[name], got)


def read_zip_member(zf: zipfile.ZipFile, member: str, path: str) -> bytes:
  """Reads one archive member; a CRC-32 mismatch raises ChecksumError."""
  try:
    return zf.read(member)
  except zipfile.BadZipFile as e:
    info = zf.getinfo(member)
    raise errors.ChecksumError(path, "CRC-32", f"{info.CRC:08x}",
                               f"a different value ({e})", member) from e


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
  """(shape, fortran_order, dtype) of an open .npy stream, past its header."""
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(f)
  return np.lib.format.read_array_header_2_0(f)


def iter_npz_rows(path: str, key: str, chunk_rows: int = 1024
                  ) -> Iterator[np.ndarray]:
  """Streams the rows of array `key` of an .npz without loading it whole.

  MPI3D's npz files hold up to 12.7 GB of images; this reads them chunk by
  chunk. zipfile checks each member's CRC-32 when its end is reached, so a
  corrupted file raises ChecksumError (naming file and member) once the
  rows are consumed; TFDS writes into a temporary directory and renames it
  only on success, so the error aborts the build and nothing half-written
  is left to be read.

  Raises:
    FileNotFoundError / KeyError: missing file or array.
    ChecksumError: CRC-32 mismatch of the member.
  """
  member = key + ".npy"
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise errors.ChecksumError(path, "zip structure", "a valid .npz archive",
                               f"unreadable ({e})") from e
  with zf:
    if member not in zf.namelist():
      raise KeyError(f"{path} has no array {key!r} (arrays: "
                     f"{[n[:-4] for n in zf.namelist()]}).")
    info = zf.getinfo(member)
    try:
      with zf.open(member) as f:
        shape, fortran, dtype = _npy_header(f)
        if fortran:
          raise ValueError(f"{path}:{key} is Fortran-ordered; re-save it C-ordered.")
        row = int(np.prod(shape[1:])) * dtype.itemsize
        for start in range(0, shape[0], chunk_rows):
          m = min(chunk_rows, shape[0] - start)
          buf = f.read(m * row)
          if len(buf) != m * row:
            raise errors.ChecksumError(
                path, "length", f"{shape[0]} rows", f"{start + len(buf) // row}"
                " rows (truncated)", member)
          yield np.frombuffer(buf, dtype).reshape((m,) + tuple(shape[1:]))
        f.read()  # reach the end so zipfile verifies the CRC-32
    except zipfile.BadZipFile as e:
      raise errors.ChecksumError(path, "CRC-32", f"{info.CRC:08x}",
                                 f"a different value ({e})", member) from e


def npz_array_shape(path: str, key: str) -> tuple[tuple[int, ...], np.dtype]:
  """Shape and dtype of array `key` in an .npz, reading only its header."""
  try:
    with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as f:
      shape, _, dtype = _npy_header(f)
      return tuple(shape), dtype
  except zipfile.BadZipFile as e:
    raise errors.ChecksumError(path, "zip structure", "a valid .npz archive",
                               f"unreadable ({e})") from e
  except KeyError as e:
    raise KeyError(f"{path} has no array {key!r}.") from e
