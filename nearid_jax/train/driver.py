"""The host driver: `run(config, workdir)` trains and writes the outputs.

The computation is `trainer.Trainer`'s; this module prepares and checks the
workdir, resumes from the latest checkpoint, steps the chunks with a
progress bar, writes metrics.jsonl / TensorBoard, checkpoints, and at the
end final.json, representations.npz and the loss-curve plot.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from nearid_jax import checkpoint as ckpt_lib
from nearid_jax import distributed
from nearid_jax import metric_writers
from nearid_jax import plotting
from nearid_jax import workdir as workdir_lib
from nearid_jax.train import devices
from nearid_jax.train.config import config_diff
from nearid_jax.train.trainer import get_trainer
from nearid_jax.train.trainer import param_checksum
from nearid_jax.train.trainer import Trainer
from nearid_jax.train.trainer import TrainState

# representations.npz keeps the eval inputs up to this size.
_MAX_SAVED_INPUTS = 64 << 20
_OUTPUTS = ("checkpoints", "checkpoints.corrupt", "metrics.jsonl", "tb",
            "final.json", "representations.npz", "loss_curves.png",
            "config.json")


def workdir_config_diff(workdir: str,
                        config: ml_collections.ConfigDict) -> list[str]:
  """Fields ("a.b: old -> new") in which `workdir`'s run differs from `config`.

  Fields that do not change results (logging, progress, devices) are
  ignored; an empty list means the workdir can be resumed with `config`
  (or holds no run yet).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    old = json.load(f)
  return config_diff(old, config)


def _prepare_workdir(config, workdir: str, overwrite: bool,
                     write: bool = True) -> None:
  """Checks the workdir is writable and holds nothing of another config.

  With `write` False (the processes that do not write) only the checks that
  read are made, so every process of a job raises the same error.
  """
  cfg_path = os.path.join(workdir, "config.json")
  if not write:
    if not overwrite:
      _check_workdir(config, workdir, cfg_path)
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"--workdir {workdir!r} is not writable ({e}); choose "
                     "a directory you can write to.") from e
  if overwrite:
    for name in _OUTPUTS:
      p = os.path.join(workdir, name)
      if os.path.isdir(p):
        shutil.rmtree(p)
      elif os.path.exists(p):
        os.remove(p)
    return
  _check_workdir(config, workdir, cfg_path)


def _check_workdir(config, workdir: str, cfg_path: str) -> None:
  if os.path.exists(cfg_path):
    diffs = workdir_config_diff(workdir, config)
    if diffs:
      raise ValueError(
          f"--workdir {workdir!r} holds a run of a different config "
          f"({'; '.join(diffs)}). Use a new --workdir, or pass --overwrite "
          "to delete that run's outputs and start over.")
  elif os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(
      os.path.join(workdir, "checkpoints")):
    raise ValueError(
        f"--workdir {workdir!r} holds checkpoints but no config.json, so it "
        "cannot be checked against this config. Use a new --workdir, or "
        "pass --overwrite.")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.exists(os.path.join(workdir, "final.json")) and not (
      os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir)):
    # Training again would silently replace the finished run's outputs.
    raise ValueError(
        f"--workdir {workdir!r} holds the final.json of a finished run but "
        f"no checkpoints ({ckpt_dir} is missing or empty), so it can be "
        "neither resumed nor checked. Pass --overwrite to train it again "
        "from the start, or use a new --workdir.")


def run(config: ml_collections.ConfigDict, workdir: str, *,
        overwrite: bool = False, strict: bool = False,
        on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Trains all runs of `config`, resuming from `workdir` if it holds any.

  Writes to `workdir`: config.json, checkpoints/, metrics.jsonl, tb/,
  loss_curves.png, final.json (per run: final loss, eval loss, divergence,
  parameter checksum) and representations.npz ("z/<layer>": [R, n, d],
  "u": [n, k], "label": [n], "seed": [R], "grid_index": [R], "valid": [R]).

  Args:
    config: an experiment config (see `default_config`).
    workdir: output directory; rerunning with the same workdir resumes.
    overwrite: delete this trainer's outputs in `workdir` first.
    strict: refuse to resume when the latest checkpoint cannot be read;
      by default the newest intact step is used, with a warning.
    on_chunk: called with the global step after each chunk (tests use it to
      interrupt a run).

  Returns:
    The content of final.json as a dict.

  Raises:
    ValueError: for invalid configs or workdirs, before anything compiles.
    nearid_jax.workdir.WorkdirInUse: another process writes `workdir`.
    nearid_jax.checkpoint.CorruptCheckpoint: no saved step can be read (or,
      with `strict`, the latest cannot).
  """
  trainer = get_trainer(config)  # validates the config (once)
  primary = distributed.is_primary()
  # Only the primary process writes, so only it holds the workdir's lock.
  with workdir_lib.lock(workdir):
    summary = _run(trainer, workdir, overwrite, strict, on_chunk, primary)
  # The files are written before any process reads them (e.g. the report).
  distributed.barrier("nearid_jax.train.run: outputs written")
  return summary


def _run(trainer, workdir, overwrite, strict, on_chunk, primary):
  config = trainer.config
  # Every process checks (a refused workdir ends all of them alike); the
  # primary's --overwrite deletes before any process looks for checkpoints,
  # and it writes config.json only after the others have read it.
  _prepare_workdir(config, workdir, overwrite, write=primary)
  distributed.barrier("nearid_jax.train.run: workdir checked")
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)
  runs = trainer.runs
  names = runs.names()
  key = jax.random.key(config.seed)
  abstract = trainer.abstract_state()

  with ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                             keep=config.keep_checkpoints) as ckpt:
    # The run axis is padded to the device count, which may differ from the
    # saved run's (num_devices is RESUMABLE); padding runs are never read.
    start, state = ckpt.restore_latest(abstract, strict=strict,
                                       allow_resize=True)
    loader = None
    if start is None:
      start = 0
      state = trainer.init_jit(key)
    else:
      loader = ckpt.loader_state(start)
      if primary:
        print(f"Resuming {workdir} from step {start} of {config.num_steps}.")
    feed = None
    if trainer.streamed and start < config.num_steps:
      if start and loader is None:
        raise ckpt_lib.CorruptCheckpoint(
            f"checkpoint step {start} in {ckpt.directory} holds no data "
            "loader state, which streamed data need to resume; pass "
            "--overwrite to train from the start.")
      feed = trainer.feed(loader)
    writer = metric_writers.MetricWriter(workdir, names, resume_step=start,
                                         enabled=primary)
    try:
      state = _train_loop(trainer, state, key, start, ckpt, writer, on_chunk,
                          feed)
    finally:
      if feed is not None:
        feed.close()
    writer.close()
    ckpt.wait()
  return _finish(trainer, state, workdir, primary)


def load_trained(workdir: str, step: int | None = None
                 ) -> tuple[Trainer, TrainState]:
  """Rebuilds the trainer of a workdir and restores its (latest) state.

  Analysis code uses it to reach what representations.npz does not hold,
  e.g. decoder Jacobians: `trainer.model(hp).apply(variables, z,
  method="decode")`.

  Args:
    workdir: a directory written by `run`.
    step: the checkpoint step; None for the latest.

  Returns:
    (trainer, state) with the stacked, padded state.

  Raises:
    FileNotFoundError: when the workdir holds no config or checkpoint.
    nearid_jax.checkpoint.CorruptCheckpoint: the step cannot be read (no
      fallback: analysis must not silently use an earlier state).
  """
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{cfg_path} not found: {workdir!r} is not a "
                            "training workdir of nearid_jax.train.run.")
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  trainer = get_trainer(config)
  with ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                             keep=config.keep_checkpoints) as ckpt:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir!r}/checkpoints.")
    state = ckpt.restore(step, trainer.abstract_state())
  return trainer, state


def _train_loop(trainer, state, key, start, ckpt, writer, on_chunk,
                feed=None):
  config = trainer.config
  if start >= config.num_steps:
    return state
  n = trainer.runs.num_runs
  try:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=config.num_steps, initial=start, unit="step",
                    disable=not config.progress or jax.process_index() != 0,
                    desc=f"{n} runs")
  except ImportError:
    bar = None
  t0 = time.time()
  bounds = chunk_bounds(start, config.num_steps, config.log_every)
  # Streamed data: the next chunk's batches are read and put on the devices
  # while the device computes this chunk (its dispatch does not wait).
  batches = feed.next_chunk(bounds[0][1] - bounds[0][0]) if feed else None
  for i, (step, end) in enumerate(bounds):
    extra = {} if feed is None else {"batches": batches}
    state, metrics = trainer.chunk_jit(state, key, length=end - step,
                                       **extra)
    position = None
    if feed is not None:
      position = feed.position  # the loader after this chunk's batches
      if i + 1 < len(bounds):
        batches = feed.next_chunk(bounds[i + 1][1] - bounds[i + 1][0])
    if step == start:
      logging.info("First chunk (compile + %d steps): %.1fs",
                   end - step, time.time() - t0)
    metrics = {k: devices.to_host(v)[:n] for k, v in metrics.items()}
    diverged = devices.to_host(state.diverged_step)[:n] >= 0
    scalars = {k: _finite_mean(v) for k, v in metrics.items()}
    scalars["loss_last"] = metrics["loss"][:, -1]
    scalars["diverged"] = diverged
    writer.write(end, scalars)
    if end % config.checkpoint_every == 0 or end == config.num_steps:
      ckpt.save(end, state, loader=position)
    if bar is not None:
      loss = scalars["loss"][~diverged]
      bar.set_postfix(loss=f"{np.median(loss):.4g}" if loss.size else "-",
                      diverged=int(diverged.sum()))
      bar.update(end - step)
    if on_chunk is not None:
      on_chunk(end)
  if bar is not None:
    bar.close()
  return state


def chunk_bounds(start: int, num_steps: int,
                 log_every: int) -> list[tuple[int, int]]:
  """The (first, end) steps of the chunks that take `start` to `num_steps`.

  Chunks end on multiples of `log_every` (and at `num_steps`), whatever the
  start: a run resumed from a checkpoint taken under another `log_every`
  first steps to the next multiple, so it trains exactly `num_steps` steps
  and meets every checkpoint step (a multiple of log_every).

  Examples:
    >>> chunk_bounds(1500, 2000, 400)
    [(1500, 1600), (1600, 2000)]
  """
  ends = list(range((start // log_every + 1) * log_every, num_steps,
                    log_every)) + [num_steps]
  return [(a, b) for a, b in zip([start] + ends[:-1], ends) if a < b]


def _finite_mean(v: np.ndarray) -> np.ndarray:
  """Mean over the chunk axis of the finite values (NaN if there are none)."""
  v = np.asarray(v, np.float64)
  ok = np.isfinite(v)
  count = ok.sum(axis=1)
  total = np.where(ok, v, 0.0).sum(axis=1)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _finish(trainer, state, workdir, primary) -> dict[str, Any]:
  """Writes final.json, representations.npz and the loss-curve plot."""
  config, runs = trainer.config, trainer.runs
  n = runs.num_runs
  ev = trainer.evaluate_in_chunks(state)
  params = jax.tree.map(lambda x: devices.to_host(x)[:n], state.params)
  div_step = devices.to_host(state.diverged_step)[:n]
  last_loss = devices.to_host(state.loss)[:n]
  names = runs.names()
  records = []
  for i in range(n):
    records.append({
        "run": i, "name": names[i], "seed": int(runs.seeds[i]),
        "grid": runs.grid_points[runs.grid_index[i]],
        "final_loss": float(last_loss[i]),
        "eval_loss": float(ev["loss"][i]),
        "diverged": bool(div_step[i] >= 0),
        "diverged_step": int(div_step[i]) if div_step[i] >= 0 else None,
        "param_checksum": param_checksum(
            jax.tree.map(lambda x, i=i: x[i], params)),
    })
  summary = {
      "num_steps": int(config.num_steps), "num_runs": n,
      "diverged_runs": [{"run": r["run"], "name": r["name"],
                         "step": r["diverged_step"]}
                        for r in records if r["diverged"]],
      "runs": records,
  }
  if not primary:
    return summary
  with open(os.path.join(workdir, "final.json"), "w") as f:
    json.dump(summary, f, indent=2)
  eval_batch = jax.tree.map(np.asarray, trainer.eval_batch)
  arrays = {f"z/{l}": ev["reps"][l].astype(np.float32) for l in trainer.layers}
  arrays.update(
      u=eval_batch["u"], label=eval_batch["label"],
      seed=runs.seeds, grid_index=runs.grid_index, valid=div_step < 0)
  if eval_batch["x"].nbytes <= _MAX_SAVED_INPUTS:
    arrays["x"] = eval_batch["x"]
  else:  # e.g. 10,000 64x64x3 images are 491 MB; the set is reproducible
    logging.warning("representations.npz omits the eval inputs x (%d MB); "
                    "trainer.data.eval_set() regenerates them.",
                    eval_batch["x"].nbytes >> 20)
  np.savez(os.path.join(workdir, "representations.npz"), **arrays)
  rows = metric_writers.read_metrics(workdir)
  if rows:
    steps = np.array([r["step"] for r in rows])
    losses = np.array([[np.nan if v is None else v for v in r["loss"]]
                       for r in rows])
    plotting.plot_loss_curves(steps, losses, names,
                              os.path.join(workdir, "loss_curves.png"),
                              diverged=div_step >= 0)
  if summary["diverged_runs"]:
    logging.warning("Diverged runs (frozen at their last finite state): %s",
                    ", ".join(f"{d['name']} at step {d['step']}"
                              for d in summary["diverged_runs"]))
  return summary