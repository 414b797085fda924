"""Datasets by name: one lookup for configs and command lines.

    ds = registry.get("shapes3d")                 # procedural, on device
    ds = registry.get("shapes3d_correlated")      # harder variant
    ds = registry.get("tfds/mpi3d", data_dir=..., config="complex")
    ds = registry.get("digits")                   # offline MNIST stand-in

Every result is a GroundTruthDataset: `sample(key, n)` runs inside a
jitted train step. Stored sets (`tfds/<name>`) are read into device memory
(`tfds_sources.load_in_memory`); to stream them instead use
`tfds_sources.open_source` with `HostPipeline` (the trainer streams sets
larger than `config.data.resident_max_mb` itself, `data.streaming`). An
unknown name raises UnknownDatasetError listing the known ones.
"""
from __future__ import annotations

from typing import Any, Callable

from nearid_jax.data import cells
from nearid_jax.data import errors
from nearid_jax.data import ground_truth
from nearid_jax.data import procedural as procedural_lib
from nearid_jax.data import tfds_sources


def _correlated(base_cls, pair, sigma=0.2):
  def make(sigma: float = sigma, anti: bool = False, **kwargs):
    return procedural_lib.CorrelatedFactors(base_cls(**kwargs), (pair,),
                                            sigma, anti)
  return make


PROCEDURAL: dict[str, Callable[..., ground_truth.GroundTruthDataset]] = {
    "dsprites": procedural_lib.DSprites,
    "dsprites_binary": lambda **kw: procedural_lib.DSprites(
        antialias=False, **kw),
    "color_dsprites": procedural_lib.ColorDSprites,
    "noisy_dsprites": procedural_lib.NoisyDSprites,
    "dsprites_correlated": _correlated(procedural_lib.DSprites,
                                       ("x_position", "y_position")),
    "shapes3d": procedural_lib.Shapes3D,
    "shapes3d_correlated": _correlated(procedural_lib.Shapes3D,
                                       ("object_hue", "scale")),
    "cells": cells.CellPainting,
}
STORED_PREFIX = "tfds/"


def known() -> list[str]:
  """Every name `get` accepts."""
  return (sorted(PROCEDURAL) + ["digits"]
          + [STORED_PREFIX + n for n in sorted(tfds_sources.SPECS)]
          + [STORED_PREFIX + tfds_sources.PROCEDURAL_PREFIX + "<name>"])


def procedural(name: str, **kwargs: Any) -> ground_truth.GroundTruthDataset:
  """A procedural dataset by name, with its constructor's keyword args."""
  if name not in PROCEDURAL:
    raise errors.UnknownDatasetError(name, sorted(PROCEDURAL),
                                     "among the procedural datasets")
  return PROCEDURAL[name](**kwargs)


def get(name: str, **kwargs: Any) -> ground_truth.GroundTruthDataset:
  """Any dataset by name (see `known()`).

  Args:
    name: a procedural name, "digits", or "tfds/<source>".
    **kwargs: constructor arguments (procedural) or `load_in_memory`
      arguments (stored: data_dir, split, config, max_examples).

  Raises:
    UnknownDatasetError: the name is not known (the message lists them).
    DatasetNotFoundError: a stored dataset that is not prepared.

  Examples:
    >>> get("dsprites").factor_sizes
    (3, 6, 40, 32, 32)
  """
  if name == "digits":
    return tfds_sources.load_digits()
  if name.startswith(STORED_PREFIX):
    source = name[len(STORED_PREFIX):]
    if (source not in tfds_sources.SPECS
        and not source.startswith(tfds_sources.PROCEDURAL_PREFIX)):
      raise errors.UnknownDatasetError(name, known())
    return tfds_sources.load_in_memory(source, **kwargs)
  if name not in PROCEDURAL:
    raise errors.UnknownDatasetError(name, known())
  return PROCEDURAL[name](**kwargs)
