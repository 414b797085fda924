"""Reproduces one of the paper's experiments: `run(config, workdir)`.

`experiments/reproduce.py` is the binary; `config.experiment` names the
experiment and picks its module from `EXPERIMENTS`, a registry of
"name -> module path". Each module has `run(config, workdir) -> dict` (it
writes results.json, results.md and plots to `workdir` and returns the
content of results.json). Adding an experiment is one line here plus its
module and a config under `experiments/configs/paper/`.

    python -m experiments.reproduce \
        --config=experiments/configs/paper/cells.py:smoke --workdir=/tmp/cells
"""
from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from nearid_jax import distributed
from nearid_jax import workdir as workdir_lib

# name -> module with `run(config, workdir) -> dict` (imported lazily, so
# one experiment's dependencies never load for another).
EXPERIMENTS = {
    "cells": "nearid_jax.paper.cells",
    "e0_bilipschitz": "nearid_jax.paper.e0_bilipschitz",
    "table1": "nearid_jax.paper.table1",
    "table2": "nearid_jax.paper.table2",
}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment `config.experiment` and writes its results.

  Args:
    config: an experiment config (`experiments/configs/paper/*.py`) with a
      field `experiment`, a key of `EXPERIMENTS`.
    workdir: output directory (created if needed).

  Returns:
    The experiment's results (the content of workdir/results.json).

  Raises:
    ValueError: an unknown or missing `config.experiment` (the message
      lists the known ones), the experiment's own config errors, or a job
      of several processes (the experiments write from every process).
  """
  name = config.get("experiment")
  if name not in EXPERIMENTS:
    raise ValueError(f"config.experiment = {name!r} is not one of "
                     f"{sorted(EXPERIMENTS)}.")
  if distributed.process_count() > 1:
    raise ValueError(
        f"the paper experiments run as one process; this job has "
        f"{distributed.process_count()} (run without --coordinator_address/"
        "--num_processes/--process_id, or with --distributed=off).")
  # One writer per workdir: a second job on it is refused with its pid.
  with workdir_lib.lock(workdir):
    return importlib.import_module(EXPERIMENTS[name]).run(config, workdir)
