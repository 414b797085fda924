"""Datasets published as a folder of numbered PNGs plus one label array.

Falcor3D and Isaac3D (Nie et al. 2020, NVlabs' High-res disentanglement
datasets) ship as a zip holding `<root>/images/000000.png, ...` and a
`[N, K]` float label array (`.npy` format); image i has label row i. Our
builders read the zip directly or its extracted folder from the manual
directory, turn each label column into class indices (sorted unique values,
as Hsu et al. 2023 do), check that the labels form the full factor grid,
and store 64x64 (config `down64`, box-filtered) or 128x128 (`down128`)
images.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import zipfile
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from nearid_jax.data import errors
from nearid_jax.data.builders import base


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
  """Output resolution of an image-folder dataset."""
  image_size: int = 64


CONFIGS = (ImageFolderConfig(name="down64", image_size=64,
                             description="64x64, box-filtered from 128."),
           ImageFolderConfig(name="down128", image_size=128,
                             description="The published 128x128 images."))


class ImageFolderBuilder(base.FactorBuilder, skip_registration=True):
  """Base: subclasses set ROOT, LABELS, FACTOR_NAMES, FACTOR_SIZES, GDRIVE."""

  ROOT = ""
  LABELS = ""
  FACTOR_NAMES: tuple[str, ...] = ()
  FACTOR_SIZES: tuple[int, ...] = ()
  GDRIVE = ""
  HOMEPAGE = "https://github.com/NVlabs/High-res-disentanglement-datasets"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "From the published zip (manual download)."}
  BUILDER_CONFIGS = list(CONFIGS)

  @classmethod
  def zip_name(cls) -> str:
    return f"{cls.ROOT}.zip"

  @classmethod
  def prepare_commands(cls, manual_dir: str, data_dir: str,
                       config: str = "down64") -> list[str]:
    return [f"mkdir -p {manual_dir}", "pip install gdown",
            f"gdown {cls.GDRIVE} -O {manual_dir}/{cls.zip_name()}",
            f"python -m nearid_jax.data.builders {cls.name} --config={config}"
            f" --manual_dir={manual_dir} --data_dir={data_dir}"]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=base.factor_features((s, s, 3), self.FACTOR_NAMES,
                                      self.FACTOR_SIZES),
        metadata=base.factor_metadata(
            self.FACTOR_NAMES, self.FACTOR_SIZES,
            [np.arange(k) for k in self.FACTOR_SIZES], source=self.name,
            config=self.builder_config.name,
            note="factor_values are replaced by the label file's values "
                 "per example (value_<factor>)."),
        homepage=self.HOMEPAGE,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    source = type(self).check_manual_files(os.fspath(dl_manager.manual_dir),
                                           os.fspath(self.data_dir_root))
    return {"train": self._generate_examples(source)}

  @classmethod
  def check_manual_files(cls, manual_dir: str,
                         data_dir: str = "~/tensorflow_datasets") -> "_Source":
    """Finds the zip or folder, checks labels, grid and checksums.

    Raises:
      DatasetNotFoundError: neither the zip nor the extracted folder exists,
        or the label file / an image is missing (with fetch commands).
      ChecksumError: SHA256SUMS mismatch, unreadable zip.
      ValueError: labels that are not the full factor grid.
    """
    zpath = os.path.join(manual_dir, cls.zip_name())
    folder = os.path.join(manual_dir, cls.ROOT)
    cmds = cls.prepare_commands(manual_dir, data_dir)
    if os.path.exists(zpath):
      base.verify_sha256sums(manual_dir, [cls.zip_name()])
      try:
        zf = zipfile.ZipFile(zpath)
      except zipfile.BadZipFile as e:
        raise errors.ChecksumError(zpath, "zip structure", "a valid zip",
                                   f"unreadable ({e})") from e
      source = _Source(zpath, zf, None, cls.ROOT)
    elif os.path.isdir(folder):
      source = _Source(folder, None, folder, cls.ROOT)
    else:
      raise errors.DatasetNotFoundError(
          cls.name, f"{zpath} and {folder}/", cmds,
          detail="manual download missing")
    labels = source.labels(cls.LABELS, cls.name, cmds)
    want = (math.prod(cls.FACTOR_SIZES), len(cls.FACTOR_SIZES))
    if labels.shape != want:
      raise ValueError(
          f"{cls.name}: {cls.LABELS} has shape {labels.shape}, expected "
          f"{want}; is it the right file?")
    idx = np.stack([np.unique(c, return_inverse=True)[1].reshape(-1)
                    for c in labels.T], 1)
    got = tuple(int(m) + 1 for m in idx.max(0))
    if got != tuple(cls.FACTOR_SIZES):
      raise ValueError(
          f"{cls.name}: the label columns take {got} distinct values, "
          f"expected {cls.FACTOR_SIZES}.")
    source.indices, source.values = idx, labels.astype(np.float32)
    return source

  def _generate_examples(self, source: "_Source"):
    size = self.builder_config.image_size
    for i, png in enumerate(source.images(len(source.indices), self.name)):
      yield i, base.example(base.resize_png(png, size), self.FACTOR_NAMES,
                            source.indices[i], source.values[i])


@dataclasses.dataclass
class _Source:
  """The zip or the folder of one image-folder dataset."""
  path: str
  zf: zipfile.ZipFile | None
  folder: str | None
  root: str
  indices: np.ndarray | None = None
  values: np.ndarray | None = None

  def labels(self, name: str, dataset: str, cmds) -> np.ndarray:
    member = f"{self.root}/{name}"
    if self.zf is not None:
      if member not in self.zf.namelist():
        raise errors.DatasetNotFoundError(
            dataset, f"{self.path}:{member}", cmds, detail="no label file")
      return np.load(io.BytesIO(base.read_zip_member(self.zf, member,
                                                     self.path)))
    path = os.path.join(self.folder, name)
    if not os.path.exists(path):
      raise errors.DatasetNotFoundError(dataset, path, cmds,
                                        detail="no label file")
    return np.load(path)

  def images(self, n: int, dataset: str) -> Iterator[bytes]:
    for i in range(n):
      name = f"images/{i:06d}.png"
      if self.zf is not None:
        member = f"{self.root}/{name}"
        try:
          yield base.read_zip_member(self.zf, member, self.path)
        except KeyError as e:
          raise errors.DatasetNotFoundError(
              dataset, f"{self.path}:{member}", [],
              detail=f"image {i} missing from the archive") from e
      else:
        path = os.path.join(self.folder, name)
        if not os.path.exists(path):
          raise errors.DatasetNotFoundError(
              dataset, path, [], detail=f"image {i} missing")
        with open(path, "rb") as f:
          yield f.read()
