"""TFDS builder for MPI3D (Gondal et al. 2019) from the published .npz files.

The files hold only `images` [N, 64, 64, 3] uint8 in row-major factor order
(last factor fastest); the labels are that order. Configs: `toy`,
`realistic`, `real` (6 colours x 6 shapes x 2 sizes x 3 camera heights x
3 backgrounds x 40 x 40 arm positions = 1,036,800 images) and `complex`
(MPI3D-real-complex: 4 colours x 4 shapes, 460,800 images), the variant of
Hsu et al. 2023 and of the paper's Table 2.

Put the .npz in the manual directory and run, e.g.
  python -m nearid_jax.data.builders mpi3d --config=complex \\
      --manual_dir=~/mpi3d --data_dir=~/tensorflow_datasets
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from nearid_jax.data import errors
from nearid_jax.data.builders import base

FACTOR_NAMES = ("object_color", "object_shape", "object_size",
                "camera_height", "background_color", "horizontal_axis",
                "vertical_axis")
_GCS = "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset"


@dataclasses.dataclass
class Mpi3dConfig(tfds.core.BuilderConfig):
  """One MPI3D variant: its file, factor sizes and how to fetch the file."""
  filename: str = ""
  factor_sizes: tuple[int, ...] = ()
  fetch: tuple[str, ...] = ()


def _cfg(name, filename, sizes, fetch, description):
  return Mpi3dConfig(name=name, filename=filename, factor_sizes=sizes,
                     fetch=fetch, description=description)


_FULL = (6, 6, 2, 3, 3, 40, 40)
CONFIGS = (
    _cfg("toy", "mpi3d_toy.npz", _FULL,
         (f"wget -O {{manual_dir}}/mpi3d_toy.npz {_GCS}/mpi3d_toy.npz",),
         "Simplistic renderings."),
    _cfg("realistic", "mpi3d_realistic.npz", _FULL,
         (f"wget -O {{manual_dir}}/mpi3d_realistic.npz "
          f"{_GCS}/mpi3d_realistic.npz",), "Realistic renderings."),
    _cfg("real", "mpi3d_real.npz", _FULL,
         (f"wget -O {{manual_dir}}/mpi3d_real.npz {_GCS}/mpi3d_real.npz",),
         "Photographs of the real robot platform."),
    _cfg("complex", "real3d_complicated_shapes_ordered.npz",
         (4, 4, 2, 3, 3, 40, 40),
         ("pip install gdown",
          "gdown 1Tp8eTdHxgUMtsZv5uAoYAbJR1BOa_OQm -O "
          "{manual_dir}/real3d_complicated_shapes_ordered.npz"),
         "MPI3D-real-complex: photographs, complex shapes (the Google Drive "
         "file linked from github.com/rr-learning/disentanglement_dataset)."),
)


class Mpi3d(base.FactorBuilder):
  """MPI3D from the published .npz (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "From the published .npz files."}
  BUILDER_CONFIGS = list(CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the MPI3D .npz of the chosen config in the manual directory:\n"
      + "\n".join(f"  {c.name}: {c.filename}" for c in CONFIGS))

  def _info(self) -> tfds.core.DatasetInfo:
    sizes = self.builder_config.factor_sizes
    return self.dataset_info_from_configs(
        features=base.factor_features((64, 64, 3), FACTOR_NAMES, sizes),
        metadata=base.factor_metadata(
            FACTOR_NAMES, sizes, [np.arange(s) for s in sizes],
            source="mpi3d", config=self.builder_config.name),
        homepage="https://github.com/rr-learning/disentanglement_dataset",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    path = check_manual_files(self.builder_config,
                              os.fspath(dl_manager.manual_dir),
                              os.fspath(self.data_dir_root))
    return {"train": self._generate_examples(path)}

  def _generate_examples(self, path):
    sizes = self.builder_config.factor_sizes
    i = 0
    for chunk in base.iter_npz_rows(path, "images"):
      for image in chunk:
        idx = np.unravel_index(i, sizes)
        yield i, base.example(base.png_bytes(image), FACTOR_NAMES, idx, idx)
        i += 1


def prepare_commands(config: Mpi3dConfig, manual_dir: str,
                     data_dir: str) -> list[str]:
  fetch = [c.format(manual_dir=manual_dir) for c in config.fetch]
  return [f"mkdir -p {manual_dir}", *fetch,
          f"python -m nearid_jax.data.builders mpi3d --config={config.name} "
          f"--manual_dir={manual_dir} --data_dir={data_dir}"]


def check_manual_files(config: Mpi3dConfig, manual_dir: str,
                       data_dir: str = "~/tensorflow_datasets") -> str:
  """Checks the config's .npz exists, has the right shape and checksums.

  Returns:
    The path of the .npz.

  Raises:
    DatasetNotFoundError: missing file (with the commands to fetch it).
    ChecksumError: a SHA256SUMS mismatch or an unreadable archive.
    ValueError: an `images` array of the wrong shape.
  """
  path = os.path.join(manual_dir, config.filename)
  if not os.path.exists(path):
    raise errors.DatasetNotFoundError(
        f"mpi3d/{config.name}", path,
        prepare_commands(config, manual_dir, data_dir),
        detail="manual download missing")
  base.verify_sha256sums(manual_dir, [config.filename])
  shape, dtype = base.npz_array_shape(path, "images")
  want = (math.prod(config.factor_sizes), 64, 64, 3)
  if shape != want or dtype != np.uint8:
    raise ValueError(
        f"{path}: images has shape {shape} dtype {dtype}, expected {want} "
        f"uint8 for mpi3d/{config.name}; is it the right file?")
  return path
