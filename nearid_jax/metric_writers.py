"""Per-run training metrics to JSON lines and TensorBoard (no TensorFlow).

`metrics.jsonl` holds one line per logged step: {"step": t, "wall_time": s,
name: [value per run], ...}, easy to load with `pandas.read_json(...,
lines=True)`. TensorBoard event files go to `tb/` through tensorboardX, which
writes the event format without TensorFlow.
"""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Sequence

import numpy as np


class MetricWriter:
  """Appends per-run scalars; on resume, drops lines past the restored step.

  Args:
    workdir: directory for `metrics.jsonl` and `tb/`.
    run_names: one name per run, used as TensorBoard tag suffixes.
    resume_step: the step training restarts from; lines logged after it by an
      interrupted run are removed so the log matches the resumed trajectory.
    enabled: False on non-primary hosts (nothing is written).
  """

  def __init__(self, workdir: str, run_names: Sequence[str],
               resume_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.run_names = list(run_names)
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if os.path.exists(self.path):
      self._truncate(resume_step)
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      # purge_step tells TensorBoard to discard events an interrupted run
      # wrote past the restored step.
      self._tb = tensorboardX.SummaryWriter(
          os.path.join(workdir, "tb"),
          purge_step=resume_step if resume_step > 0 else None)
    except ImportError:  # optional: JSON lines are the source of truth
      self._tb = None

  def _truncate(self, resume_step: int) -> None:
    with open(self.path) as f:
      lines = [l for l in f if l.strip()]
    keep = []
    for line in lines:
      try:
        if json.loads(line)["step"] <= resume_step:
          keep.append(line)
      except (json.JSONDecodeError, KeyError):
        break  # a line cut by a kill: everything after it is unreliable
    with open(self.path, "w") as f:
      f.writelines(keep)

  def write(self, step: int, scalars: Mapping[str, np.ndarray]) -> None:
    """Writes {name: [num_runs] values} at `step`."""
    if not self.enabled:
      return
    row = {"step": int(step), "wall_time": time.time()}
    for name, values in scalars.items():
      row[name] = [_jsonable(v) for v in np.asarray(values).reshape(-1)]
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for name, values in scalars.items():
        values = np.asarray(values).reshape(-1)
        if not np.issubdtype(values.dtype, np.number):
          continue
        for run, v in zip(self.run_names, values):
          self._tb.add_scalar(f"{name}/{run}", float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _jsonable(v):
  if isinstance(v, (np.bool_, bool)):
    return bool(v)
  if np.issubdtype(np.asarray(v).dtype, np.integer):
    return int(v)
  v = float(v)
  return v if np.isfinite(v) else None


def read_metrics(workdir: str) -> list[dict]:
  """Loads `metrics.jsonl` as a list of dicts (one per logged step)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]
