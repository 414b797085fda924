"""The trained runs an experiment needs: train (resuming), load, measure.

`train_models(configs, workdir)` trains every trainer config of an
experiment with `nearid_jax.train.run` into `workdir/train/<name>` (all
seeds and grid points of a model in one compiled program; rerunning
resumes), timing the steady-state chunks (steps per second, compile
excluded), and returns each model's held-out representations
(`Trained`). `decoder_one_plus_l` measures every run's decoder
bi-Lipschitz constant; `planned_flops` the training cost of a config from
its lowered one-step program (XLA's cost analysis; nothing is compiled).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nearid_jax import align
from nearid_jax import train


@dataclasses.dataclass
class Trained:
  """One model's runs.

  Attributes:
    name: the model's key in the experiment config.
    workdir: its training workdir.
    z: {layer: [R, n, d] float32} held-out representations.
    u: [n, K] factors of the held-out rows; label: [n].
    seed, grid_index: [R] of each run; valid: [R] not diverged.
    grid_points: the trainer's grid points ({field: value} each).
    steps_per_second: steady-state training speed of all runs together
      (None when nothing was trained in this call, or a single chunk).
    summary: the trainer's final.json.
  """
  name: str
  workdir: str
  z: dict[str, np.ndarray]
  u: np.ndarray
  label: np.ndarray
  seed: np.ndarray
  grid_index: np.ndarray
  valid: np.ndarray
  grid_points: list
  steps_per_second: float | None
  summary: dict

  def runs_at(self, grid_index: int) -> np.ndarray:
    """Indices of the valid runs of one grid point."""
    return np.flatnonzero((self.grid_index == grid_index) & self.valid)


def train_model(name: str, config: ml_collections.ConfigDict,
                workdir: str) -> Trained:
  """Trains (or resumes) one model's runs and loads its representations."""
  out = os.path.join(workdir, "train", name)
  times = []
  summary = train.run(config, out, on_chunk=lambda _: times.append(
      time.perf_counter()))
  sps = None
  if len(times) >= 2:  # the first chunk includes compilation
    sps = float(config.log_every * (len(times) - 1) / (times[-1] - times[0]))
  with np.load(os.path.join(out, "representations.npz")) as f:
    z = {k[2:]: f[k] for k in f.files if k.startswith("z/")}
    arrays = {k: f[k] for k in ("u", "label", "seed", "grid_index", "valid")}
  grid = [r["grid"] for r in summary["runs"]]
  points = []
  for g in grid:
    if g not in points:
      points.append(g)
  return Trained(name, out, z, arrays["u"], arrays["label"], arrays["seed"],
                 arrays["grid_index"], arrays["valid"].astype(bool),
                 points, sps, summary)


def train_models(configs: Mapping[str, ml_collections.ConfigDict],
                 workdir: str) -> dict[str, Trained]:
  """`train_model` for every (name, trainer config), in order."""
  return {name: train_model(name, cfg, workdir)
          for name, cfg in configs.items()}


def decoder_one_plus_l(trained: Trained, points: int = 256) -> np.ndarray:
  """1 + L of every run's decoder at its own first `points` latent codes.

  Theorem 1's estimate (`align.decoder_bi_lipschitz`): the extreme
  singular values of the decoder Jacobian, all runs in one jitted vmap.

  Returns:
    [R] float64, NaN for diverged runs.

  Raises:
    ValueError: when the model has no decoder.
  """
  trainer, state = train.load_trained(trained.workdir)
  probe = trainer.model(trainer.runs.hparams)
  if not hasattr(probe, "decode"):
    raise ValueError(f"model {type(probe).__name__} of {trained.name!r} has "
                     "no decoder; Theorem 1's estimate needs one.")
  r = len(trained.valid)
  m = min(int(points), trained.z["latent"].shape[1])
  params = jax.tree.map(lambda x: x[:r], state.params)
  model_state = jax.tree.map(lambda x: x[:r], state.model_state)
  hps = {k: jnp.asarray(v[:r]) for k, v in trainer.runs.hparams.items()}
  zp = jnp.asarray(trained.z["latent"][:, :m])

  def one(p, ms, hp, z):
    model = trainer.model(hp)

    def decode(v):  # one latent [k] -> the flattened output [D]
      return model.apply({"params": p, **ms}, v[None],
                         method="decode").reshape(-1)
    return align.decoder_bi_lipschitz(decode, z)["one_plus_l"]

  vals = np.asarray(jax.jit(jax.vmap(one))(params, model_state, hps, zp),
                    np.float64)
  return np.where(trained.valid, vals, np.nan)


def planned_flops(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Training FLOPs of `config` from XLA's cost analysis of one step.

  Lowers (does not compile) the one-step, one-seed program of the config
  and scales it: total = per-run-step FLOPs × steps × runs. Initialisation
  is counted once per step here, a negligible overestimate.

  Returns:
    {"flops_per_run_step", "runs", "steps", "total"}.
  """
  one = config.copy_and_resolve_references()
  one.num_steps = one.log_every = one.checkpoint_every = 1
  one.num_seeds = 1
  for field in one.grid:
    one.grid[field] = ()
  one.num_devices = 1
  lowered = jax.jit(train.make_train(one)).lower(jax.random.key(0))
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  per = float((cost or {}).get("flops", float("nan")))
  grid = 1
  for vals in config.grid.values():
    grid *= max(len(vals), 1)
  runs = int(config.num_seeds) * grid
  return {"flops_per_run_step": per, "runs": runs,
          "steps": int(config.num_steps),
          "total": per * runs * int(config.num_steps)}


def speed_rows(trained: Mapping[str, Trained],
               configs: Mapping[str, ml_collections.ConfigDict],
               full_configs: Mapping[str, ml_collections.ConfigDict] | None
               ) -> list[dict[str, Any]]:
  """Per model: measured steps/s (this run) and planned FLOPs (full size).

  `full_configs` (same keys) are the full-size configs whose FLOPs are
  planned; None skips the planning.
  """
  rows = []
  for name, t in trained.items():
    cfg = configs[name]
    row = {"model": name, "runs": int(len(t.valid)),
           "batch_size": int(cfg.batch_size),
           "steps_per_second": t.steps_per_second,
           "backend": jax.default_backend()}
    if full_configs is not None and name in full_configs:
      row["planned"] = planned_flops(full_configs[name])
    rows.append(row)
  return rows


def speed_markdown(rows) -> str:
  """The speed rows as a markdown table."""
  lines = ["| model | runs | steps/s (all runs, this machine) | "
           "planned FLOP/run-step (full) | planned total FLOP (full) |",
           "|---|---|---|---|---|"]
  for r in rows:
    sps = ("–" if r["steps_per_second"] is None
           else f"{r['steps_per_second']:.2f}")
    p = r.get("planned")
    per = "–" if p is None else f"{p['flops_per_run_step']:.3g}"
    tot = "–" if p is None else f"{p['total']:.3g}"
    lines.append(f"| {r['model']} | {r['runs']} | {sps} | {per} | {tot} |")
  return "\n".join(lines)


def drop_constant_columns(z: np.ndarray, rel_tol: float = 1e-6
                          ) -> tuple[np.ndarray, list[int]]:
  """Drops the columns that are constant in any run (e.g. dead ReLUs).

  `align` refuses dimensions without variance; columns need not
  correspond across runs, so dropping the union loses only the dropped
  units' variation in the runs where they are alive (reported).

  Args:
    z: [R, n, d].
    rel_tol: a column is constant when its standard deviation is at most
      rel_tol × the run's largest column standard deviation.

  Returns:
    (z[..., keep], dropped column indices).
  """
  sd = z.std(axis=1)  # [R, d]
  dead = np.any(sd <= rel_tol * np.maximum(sd.max(axis=1, keepdims=True),
                                           1e-30), axis=0)
  return z[..., ~dead], np.flatnonzero(dead).tolist()


def reduce_to_rank(z: np.ndarray, rel_tol: float | None = None
                   ) -> tuple[np.ndarray, int]:
  """Each run's centred rows in its top-r principal coordinates.

  r is the smallest numerical rank over runs (singular values above
  rel_tol × the largest). The default, 3·sqrt(d · float32 eps), keeps a
  margin over `align`'s float32 rank test on half the rows (eigenvalues
  above d · eps × the largest), so the reduced runs pass it. Projecting centred rows onto their principal
  subspace is an isometry on the data up to the discarded variance, so
  rigid, linear and ICA errors are those of the full representation; only
  the coordinate-bound "perm" changes, which is why callers keep it on the
  raw coordinates.

  Args:
    z: [R, n, d].

  Returns:
    ([R, n, r] float32, r).
  """
  if rel_tol is None:
    rel_tol = 3 * float(np.sqrt(z.shape[-1] * np.finfo(np.float32).eps))
  zc = z - z.mean(axis=1, keepdims=True)
  u, s, _ = np.linalg.svd(zc.astype(np.float64), full_matrices=False)
  r = int(min(np.sum(si > rel_tol * si[0]) for si in s))
  return (u[:, :, :r] * s[:, None, :r]).astype(np.float32), r
