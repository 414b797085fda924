"""The near-identifiability report: train R runs, measure ε, write it up.

`run(config, workdir)` is the main job (experiments/identifiability.py):

  1. trains the runs of `config.train` with `nearid_jax.train.run` into
     `workdir/train` (rerunning resumes), or reads an existing training
     workdir (`config.train_workdir`);
  2. loads the held-out representations of `config.layer`
     (`Runs.from_workdir`), leaving out diverged runs and non-finite rows
     with a note;
  3. computes a typed `Report` (`compute.compute`): per grid point the
     statistical ε between every ordered pair, the ICA efficiency, the
     structural ε to the factors, MCC / R² / the metric suite and the
     verdict (`verdict.decide`), plus the decoders' bi-Lipschitz estimates
     (`decoders.bi_lipschitz`);
  4. renders it: report.json and report.md (`render`), PNG figures
     (`figures`).

Modules: `config` (settings and their check), `runs` (reading, cleaning,
grouping), `compute` (the science), `verdict` (the rules), `result` (the
dataclasses), `render` (JSON, Markdown), `figures`, `decoders`.

In a job of several processes (`nearid_jax.distributed`) every process
trains its share and computes the same report on its own devices (its
inputs are the same files); only the primary writes the report, once.
"""
from __future__ import annotations

import json
import os
import time

from absl import logging
import ml_collections

from nearid_jax import distributed
from nearid_jax import parallel
from nearid_jax import train
from nearid_jax.report import compute as compute_lib
from nearid_jax.report import decoders
from nearid_jax.report import figures
from nearid_jax.report import render
from nearid_jax.report.config import default_config
from nearid_jax.report.config import validate_config
from nearid_jax.report.result import Report
from nearid_jax.report.runs import load_representations
from nearid_jax.report.runs import Runs

__all__ = ["run", "default_config", "validate_config",
           "load_representations", "Runs", "Report"]


def run(config: ml_collections.ConfigDict, workdir: str, *,
        overwrite: bool = False) -> Report:
  """Trains (or reads) the runs, measures ε and writes the report.

  Args:
    config: see `default_config`.
    workdir: output directory; training goes to workdir/train unless
      `config.train_workdir` names an existing one.
    overwrite: allow a report of different settings to replace an existing
      one; training starts over only if its own config changed (otherwise
      it resumes).

  Returns:
    The `Report` (report.json holds `render.to_json` of it).

  Raises:
    ValueError: invalid config or workdir (before anything compiles), a
      representations file with unexpected keys, fewer than 2 valid runs.
    FileNotFoundError: no representations file in the training workdir.
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  _check_previous(config, workdir, overwrite)
  timing = {}
  t0 = time.time()
  if config.train_workdir:
    train_dir = config.train_workdir
  else:
    train_dir = os.path.join(workdir, "train")
    train.run(config.train, train_dir,
              overwrite=overwrite and bool(
                  train.workdir_config_diff(train_dir, config.train)))
  timing["train"] = time.time() - t0
  runs = Runs.from_workdir(train_dir, config.layer)
  t = time.time()
  bl = decoders.bi_lipschitz(train_dir, runs.z, runs.valid,
                             layer=config.layer,
                             points=config.bi_lipschitz_points)
  timing["bi_lipschitz"] = time.time() - t
  t = time.time()
  # Every process analyses on its own devices (its results stay readable
  # on the host); see `nearid_jax.distributed` for why not across hosts.
  with parallel.process_local():
    report = compute_lib.compute(config, runs, bi_lipschitz=bl)
  timing["analysis"] = time.time() - t
  for note in report.notes + [n for g in report.groups for n in g.notes]:
    logging.warning("%s", note)
  report.config = json.loads(json.dumps(config.to_dict(), default=str))
  t = time.time()
  primary = distributed.is_primary()
  if primary:
    figures.save_all(report, workdir)
  timing["figures"] = time.time() - t
  report.timing_s = {k: round(v, 2) for k, v in timing.items()}
  report.timing_s["total"] = round(time.time() - t0, 2)
  if primary:
    with open(os.path.join(workdir, "report.md"), "w") as f:
      f.write(render.to_markdown(report, train_dir))
    with open(os.path.join(workdir, "report.json"), "w") as f:
      json.dump(render.to_json(report), f, indent=1, allow_nan=False)
  distributed.barrier("nearid_jax.report.run: report written")
  return report


def _check_previous(config, workdir, overwrite):
  """Refuses to replace a report of other settings without `overwrite`."""
  path = os.path.join(workdir, "report.json")
  if overwrite or not os.path.exists(path):
    return
  with open(path) as f:
    try:
      old = json.load(f).get("config", {})
    except json.JSONDecodeError:
      return
  diffs = train.config_diff(old, config, section="train.")
  if diffs:
    raise ValueError(
        f"--workdir {workdir!r} holds a report of different settings "
        f"({'; '.join(diffs)}). Use a new --workdir, or pass --overwrite.")
