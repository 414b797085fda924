"""The static settings of one alignment program."""
from __future__ import annotations

import dataclasses

KINDS = ("identity", "perm", "rigid", "similarity", "linear", "ica")
DEFAULT_KINDS = ("perm", "rigid", "linear", "ica")
DIMS = ("pad", "pca")
DIAMETERS = ("max", "q99")


@dataclasses.dataclass(frozen=True)
class Options:
  """Static settings of one alignment program (hashable: a jit static)."""
  kinds: tuple[str, ...]
  ridge: float
  perm_scale: bool
  dims: str
  n_fit: int


def need_rank(kinds, ridge) -> bool:
  """Whether the kinds invert a covariance (need full rank)."""
  return "ica" in kinds or ("linear" in kinds and ridge == 0)
