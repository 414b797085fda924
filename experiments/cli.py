"""Console scripts of the installed package (setup.cfg `console_scripts`).

    nearid-train     --config=synthetic_ae:smoke --workdir=/tmp/ae
    nearid-report    --config=identifiability:smoke --workdir=/tmp/id
    nearid-compare   ...   (experiments.compare)
    nearid-reproduce ...   (experiments.reproduce)

Each runs the binary of the same name in `experiments/` from any directory.
`--config` takes a path, as the binaries do, or the name of a config that
ships with the package (`experiments/configs/<name>.py`), with the usual
`:arg` suffix: `--config=conv_ae:shapes3d,smoke`.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "configs")


def config_names() -> list[str]:
  """Names of the configs shipped with the package (for `--config=NAME`)."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_")
                and f != "image_base.py")


def resolve_config(value: str) -> str:
  """`NAME[:arg]` -> the shipped config's path; a path is returned as is.

  Examples:
    >>> resolve_config("identifiability:smoke").endswith(
    ...     os.path.join("configs", "identifiability.py:smoke"))
    True
    >>> resolve_config("my/own.py:smoke")
    'my/own.py:smoke'
  """
  path, sep, arg = value.partition(":")
  if os.path.exists(path) or os.sep in path or path.endswith(".py"):
    return value
  name = os.path.join(CONFIG_DIR, path + ".py")
  if not os.path.exists(name):
    raise SystemExit(f"error: --config={value}: no file {path!r} and no "
                     f"shipped config of that name; shipped configs: "
                     f"{', '.join(config_names())}")
  return name + sep + arg


def _resolve_argv(argv: Sequence[str]) -> list[str]:
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith("--config="):
      out[i] = "--config=" + resolve_config(a[len("--config="):])
    elif a == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
  return out


def _run(module: str) -> None:
  try:
    binary = importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise SystemExit(f"error: {module} is not part of this installation of "
                     "nearid_jax; update it (pip install -U nearid_jax).")
  from absl import app  # pylint: disable=g-import-not-at-top
  sys.argv = _resolve_argv(sys.argv)
  app.run(binary.main)


def train() -> None:
  """`nearid-train`: experiments/train.py."""
  _run("experiments.train")


def report() -> None:
  """`nearid-report`: experiments/identifiability.py (the main job)."""
  _run("experiments.identifiability")


def compare() -> None:
  """`nearid-compare`: experiments/compare.py."""
  _run("experiments.compare")


def reproduce() -> None:
  """`nearid-reproduce`: experiments/reproduce.py."""
  _run("experiments.reproduce")
