r"""Reproduces one of the paper's experiments (see `nearid_jax.reproduce`).

    python -m experiments.reproduce \
        --config=experiments/configs/paper/cells.py:smoke --workdir=/tmp/cells

Writes results.json, results.md and plots to --workdir; each config's
docstring gives the command, hardware, runtime and expected result.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nearid_jax import cli
from nearid_jax import compile_cache
from nearid_jax import reproduce

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file under experiments/configs/paper/ "
    "(append :smoke for CI sizes).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO
  # User errors (config, files, a workdir in use) end in one line: cli.run_main.
  reproduce.run(_CONFIG.value, _WORKDIR.value)
  print(f"Results: {os.path.join(_WORKDIR.value, 'results.md')}")


if __name__ == "__main__":
  cli.run_main(main)
