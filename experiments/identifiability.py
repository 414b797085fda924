r"""The main job: train R runs and report their near-identifiability.

    python -m experiments.identifiability \
        --config=experiments/configs/identifiability.py --workdir=results/demo
    python -m experiments.identifiability \
        --config=experiments/configs/identifiability.py:smoke --workdir=/tmp/id \
        --config.train_workdir=results/synthetic_ae   # analyse existing runs

Writes report.json, report.md and PNG plots to --workdir (training goes to
--workdir/train, and rerunning resumes it). See `nearid_jax.report.run`.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nearid_jax import cli
from nearid_jax import compile_cache
from nearid_jax import distributed
from nearid_jax import report
from nearid_jax import workdir

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Report config file (append :smoke for CI sizes).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory; rerun with the same one to resume.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing report of other settings (and "
    "start training over if the training config changed).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO
  # One writer per workdir; user errors end in one line (cli.run_main).
  with workdir.lock(_WORKDIR.value):
    result = report.run(_CONFIG.value, _WORKDIR.value,
                        overwrite=_OVERWRITE.value)
  if not distributed.is_primary():
    return  # one process (the primary) wrote the report
  print(result.text)
  print(f"Report: {os.path.join(_WORKDIR.value, 'report.md')} "
        f"({result.timing_s['total']:.0f} s)")


if __name__ == "__main__":
  cli.run_main(main)
