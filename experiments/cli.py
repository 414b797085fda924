"""Console scripts of the installed package (setup.cfg `console_scripts`).

    nearid-train     --config=synthetic_ae:smoke --workdir=/tmp/ae
    nearid-report    --config=identifiability:smoke --workdir=/tmp/id
    nearid-compare   ...   (experiments.compare)
    nearid-reproduce --config=cells:smoke --workdir=/tmp/cells  (configs/paper/)

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


def config_names(config_dir: str = CONFIG_DIR) -> list[str]:
  """Names of the configs shipped in `config_dir` (for `--config=NAME`)."""
  return sorted(f[:-3] for f in os.listdir(config_dir)
                if f.endswith(".py") and not f.startswith("_")
                and f != "image_base.py")


def resolve_config(value: str, config_dirs: Sequence[str] = (CONFIG_DIR,)
                   ) -> str:
  """`NAME[:arg]` -> the shipped config's path; an existing path is kept.

  A NAME is looked up as `<dir>/NAME.py` in each of `config_dirs` in turn
  (NAME may hold a subdirectory: `paper/cells`).

  Examples:
    >>> resolve_config("identifiability:smoke").endswith(
    ...     os.path.join("configs", "identifiability.py:smoke"))
    True
    >>> resolve_config("my/own.py:smoke")
    'my/own.py:smoke'

  Raises:
    SystemExit: a bare name that is neither a file nor a shipped config
      (the message lists the shipped ones).
  """
  path, sep, arg = value.partition(":")
  if os.path.exists(path):
    return value
  stem = path[:-3] if path.endswith(".py") else path
  for config_dir in config_dirs:
    candidate = os.path.join(config_dir, stem + ".py")
    if os.path.exists(candidate):
      return candidate + sep + arg
  if os.sep in path or path.endswith(".py"):
    return value  # a path: the binary names the missing file
  names = sorted({n for d in config_dirs for n in config_names(d)})
  raise SystemExit(f"error: --config={value}: no file {path!r} and no "
                   f"shipped config of that name; shipped configs: "
                   f"{', '.join(names)}")


def _resolve_argv(argv: Sequence[str], config_dirs: Sequence[str]
                  ) -> list[str]:
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith("--config="):
      out[i] = "--config=" + resolve_config(a[len("--config="):], config_dirs)
    elif a == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1], config_dirs)
  return out


def _run(module: str, config_dirs: Sequence[str] = (CONFIG_DIR,)) -> None:
  try:
    binary = importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise SystemExit(f"error: this version of nearid_jax has no {module} "
                     "(the binary behind this command); install a newer one.")
  from nearid_jax import cli  # pylint: disable=g-import-not-at-top
  sys.argv = _resolve_argv(sys.argv, config_dirs)
  # The same entry as `python -m <module>`: user errors end in one line.
  cli.run_main(binary.main)


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
  """`nearid-reproduce`: experiments/reproduce.py (configs in configs/paper/)."""
  _run("experiments.reproduce",
       (os.path.join(CONFIG_DIR, "paper"), CONFIG_DIR))
