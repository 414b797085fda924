"""Errors of the data layer: each names what is wrong and what to run."""
from __future__ import annotations

from typing import Sequence


class UnknownDatasetError(ValueError):
  """A dataset name that no loader knows; the message lists the known ones."""

  def __init__(self, name: str, known: Sequence[str], where: str = ""):
    self.name, self.known = name, tuple(known)
    super().__init__(
        f"unknown dataset {name!r}{' ' + where if where else ''}; known "
        f"datasets: {', '.join(sorted(self.known))}.")


class DatasetNotFoundError(FileNotFoundError):
  """Prepared data is missing: names the dataset, the place searched and the
  exact commands that prepare it (run them where the internet is reachable;
  nothing is ever downloaded at import or test time)."""

  def __init__(self, name: str, searched: str, commands: Sequence[str],
               detail: str = ""):
    self.name, self.searched, self.commands = name, searched, tuple(commands)
    steps = "\n".join(f"    {c}" for c in self.commands)
    super().__init__(
        f"dataset {name!r} not found: searched {searched}"
        f"{' (' + detail + ')' if detail else ''}.\nTo prepare it, run:\n"
        f"{steps}")


class ChecksumError(ValueError):
  """A manual-download file whose content does not match its checksum."""

  def __init__(self, path: str, kind: str, expected: str, got: str,
               member: str | None = None):
    self.path, self.kind, self.member = path, kind, member
    where = f"member {member!r} of {path}" if member else path
    super().__init__(
        f"checksum mismatch ({kind}) in {where}: expected {expected}, got "
        f"{got}. The file is corrupted or truncated; download it again.")
