"""Prepare a manual-download dataset: check the files, then build it."""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from nearid_jax.data.builders import base
from nearid_jax.data.builders import falcor3d
from nearid_jax.data.builders import isaac3d
from nearid_jax.data.builders import mpi3d

BUILDERS = {"mpi3d": mpi3d.Mpi3d, "falcor3d": falcor3d.Falcor3d,
            "isaac3d": isaac3d.Isaac3d}
DEFAULT_CONFIG = {"mpi3d": "complex", "falcor3d": "down64",
                  "isaac3d": "down64"}


def prepare(name: str, manual_dir: str, data_dir: str,
            config: str | tfds.core.BuilderConfig | None = None,
            builder_cls=None) -> tfds.core.DatasetBuilder:
  """Checks the manual files of `name`, then writes array_record.

  Args:
    name: "mpi3d", "falcor3d" or "isaac3d".
    manual_dir: directory holding the downloaded files.
    data_dir: TFDS data directory to write to.
    config: builder config (name or object); default per dataset.
    builder_cls: override the builder class (tests use tiny grids).

  Returns:
    The prepared builder.

  Raises:
    UnknownDatasetError, DatasetNotFoundError, ChecksumError, ValueError.
  """
  from nearid_jax.data import errors  # pylint: disable=g-import-not-at-top
  if builder_cls is None:
    if name not in BUILDERS:
      raise errors.UnknownDatasetError(name, BUILDERS, "to prepare")
    builder_cls = BUILDERS[name]
  manual_dir = os.path.expanduser(manual_dir)
  data_dir = os.path.expanduser(data_dir)
  builder = builder_cls(config=config or DEFAULT_CONFIG.get(name),
                        data_dir=data_dir, file_format="array_record")
  if isinstance(builder, mpi3d.Mpi3d):
    mpi3d.check_manual_files(builder.builder_config, manual_dir, data_dir)
  else:
    builder_cls.check_manual_files(manual_dir, data_dir)
  base.prepare_quietly(
      builder, file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
