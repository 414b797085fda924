r"""Trains many runs of one model at once (seeds × hyper-parameter grid).

    python -m experiments.train --config=experiments/configs/synthetic_ae.py \
        --workdir=results/synthetic_ae
    python -m experiments.train --config=experiments/configs/synthetic_ae.py:smoke \
        --workdir=/tmp/smoke --config.num_seeds=4 --config.optimizer.weight_decay=1e-4

Rerunning the same command resumes from the workdir's latest checkpoint (a
finished run only rewrites its summary). See `nearid_jax.train.run` for the
files written.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nearid_jax import cli
from nearid_jax import compile_cache
from nearid_jax import distributed
from nearid_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (append :smoke for CI sizes).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory; rerun with the same one to resume.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete this trainer's outputs in --workdir first.")
_STRICT = flags.DEFINE_bool(
    "strict", False, "Refuse to resume when the latest checkpoint cannot be "
    "read (default: resume from the newest intact one, with a warning).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO
  # User errors (config, workdir, files, disk) end in one line: cli.run_main.
  summary = train.run(_CONFIG.value, _WORKDIR.value,
                      overwrite=_OVERWRITE.value, strict=_STRICT.value)
  if not distributed.is_primary():
    return  # the primary wrote the outputs and reports them
  diverged = summary["diverged_runs"]
  print(f"Trained {summary['num_runs']} runs for {summary['num_steps']} steps"
        f" -> {_WORKDIR.value}"
        + (f"; {len(diverged)} diverged: "
           + ", ".join(f"{d['name']}@{d['step']}" for d in diverged)
           if diverged else "; none diverged."))


if __name__ == "__main__":
  cli.run_main(main)
