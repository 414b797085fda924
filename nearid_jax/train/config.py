"""The trainer's config: its fields, its checks, and the run table it implies.

`default_config()` lists every field the trainer reads; `validate_config`
checks a config before anything is built or compiled; `make_run_table`
expands `config.grid` × seeds into the runs of one program (see the package
docstring for how runs, seeds and keys relate).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from nearid_jax import data as data_lib
from nearid_jax import models
from nearid_jax import objectives
from nearid_jax import parallel

# Fields that may vary over runs inside one program (they enter the
# computation as traced values): `config.grid.<name>` -> the field it sets.
GRIDABLE = {
    "learning_rate": "optimizer.learning_rate",
    "weight_decay": "optimizer.weight_decay",
    "negative_slope": "model.negative_slope",
    "mask_ratio": "objective.mask_ratio",
    "beta": "objective.beta",
}
# The ONE list of fields that may differ when a workdir is resumed (by the
# trainer) or a report is rerun (as "train.<field>"): they change neither the
# computation's numbers nor its result. log_every / checkpoint_every only move
# the chunk boundaries (the driver realigns its chunks to them); num_devices,
# runs_per_group and the mesh only move runs (or a run's batch rows) between
# devices (data shards sum a batch's gradients in another order: equal to
# float rounding); keep_checkpoints, progress and the eval settings only
# change what is written.
RESUMABLE = ("log_every", "checkpoint_every", "keep_checkpoints",
             "progress", "num_devices", "runs_per_group", "mesh.runs",
             "mesh.data", "eval.layers", "eval.batch_size", "eval.pool")
_POOLS = ("flatten", "mean")


def config_diff(old: Any, new: Any, *, section: str = "") -> list[str]:
  """The fields ("a.b: old -> new") in which two configs differ.

  The one comparison used when a training workdir is resumed and when a
  report is rerun. Fields in `RESUMABLE` (at `section`) are ignored; tuples
  and lists compare equal.

  Args:
    old, new: configs as dicts or ConfigDicts (e.g. a saved config.json).
    section: where the trainer's config sits inside them: "" for a trainer
      config, "train." for a report config.

  Returns:
    Sorted "path: old -> new" strings; empty when the configs agree.

  Examples:
    >>> a = default_config()
    >>> b = default_config()
    >>> b.num_seeds, b.log_every = 4, 50
    >>> config_diff(a, b)
    ['num_seeds: 8 -> 4']
  """
  ignore = {section + f for f in RESUMABLE}
  return _diff(_plain(old), _plain(new), "", ignore)


def _plain(config: Any) -> Any:
  if isinstance(config, (ml_collections.ConfigDict,
                         ml_collections.FrozenConfigDict)):
    config = config.to_dict()
  return json.loads(json.dumps(config, default=str))  # tuples vs lists


def _diff(old: dict, new: dict, prefix: str, ignore: set[str]) -> list[str]:
  diffs = []
  for k in sorted(set(old) | set(new)):
    path = f"{prefix}{k}"
    if path in ignore:
      continue
    a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
    # A section one side lacks (a config older than the section) is
    # compared field by field, so ignored fields stay ignored.
    if isinstance(a, dict) and b == "<missing>":
      b = {}
    if isinstance(b, dict) and a == "<missing>":
      a = {}
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _diff(a, b, path + ".", ignore)
    elif a != b:
      diffs.append(f"{path}: {a!r} -> {b!r}")
  return diffs


def default_config() -> ml_collections.ConfigDict:
  """Every field the trainer reads, with defaults (the synthetic AE)."""
  c = ml_collections.ConfigDict()
  c.seed = 0                 # base key; run keys are fold_in(key, seed)
  c.num_seeds = 8            # seeds per grid point
  c.seed_offset = 0          # first seed (to add seeds to a study later)
  # Values per grid-able field; () means "not varied, use the field's value".
  c.grid = ml_collections.ConfigDict({name: () for name in GRIDABLE})
  c.num_steps = 3000
  c.batch_size = 256
  c.log_every = 100          # steps per scan chunk (and per log line)
  c.checkpoint_every = 1000  # a multiple of log_every
  c.keep_checkpoints = 2
  c.num_devices = 0          # 0: all devices
  # The device mesh (runs x data) of those devices: `runs` devices split the
  # run axis, and each run's batch rows are split over `data` devices (data
  # parallel: one large run on several devices; gradients are averaged over
  # the shards). 0: the devices left over by the other (both 0: all on
  # runs). batch_size must be a multiple of the data shards.
  c.mesh = ml_collections.ConfigDict(dict(runs=0, data=1))
  # Runs vmapped together on a device; a device's groups run one after
  # another. 0: auto (4 on CPU, where a group's weights and activations stay
  # in cache; all of them on GPU/TPU).
  c.runs_per_group = 0
  c.progress = True
  c.data = data_lib.synthetic.default_config()
  c.model = ml_collections.ConfigDict(dict(
      name="mlp_ae", encoder_widths=(64, 64), decoder_widths=(64, 64),
      activation="leaky_relu", negative_slope=0.2))
  # The bottleneck follows the number of true factors unless overridden.
  c.model.latent_dim = c.data.get_ref("latent_dim")
  c.objective = objectives.default_config()  # the autoencoder
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, weight_decay=0.0, b1=0.9, b2=0.999,
      schedule="constant", warmup_steps=0, clip_norm=0.0))
  # Representations of the eval set: feature maps and token sequences are
  # flattened ("flatten") or averaged over space / tokens ("mean"); rows
  # go through in chunks of batch_size (0: all at once).
  c.eval = ml_collections.ConfigDict(dict(layers=("latent",), batch_size=0,
                                          pool="flatten"))
  return c



@dataclasses.dataclass(frozen=True)
class RunTable:
  """Host-side description of the runs of one program.

  Attributes:
    seeds: [N] seed of each run.
    grid_index: [N] grid point of each run.
    grid_points: the G grid points, each {field: value}.
    hparams: {short name: [N_padded] float32} traced values per run.
    num_padded: N rounded up to a multiple of the device count; the extra
      runs repeat the last run and are dropped from every output.
  """
  seeds: np.ndarray
  grid_index: np.ndarray
  grid_points: list[dict[str, float]]
  hparams: dict[str, np.ndarray]
  num_padded: int

  @property
  def num_runs(self) -> int:
    return len(self.seeds)

  def names(self) -> list[str]:
    out = []
    for s, g in zip(self.seeds, self.grid_index):
      point = self.grid_points[g]
      tag = ",".join(f"{k}={v:g}" for k, v in point.items())
      out.append(f"seed{s}" + (f"[{tag}]" if tag else ""))
    return out


def mesh_shape(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(run shards, data shards) of `config.mesh` on the config's devices.

  Raises:
    ValueError: naming config.mesh.runs / .data / num_devices when the mesh
      does not fit the devices.

  Examples:
    >>> config = default_config()
    >>> config.num_devices, config.mesh.data = 1, 1
    >>> mesh_shape(config)
    (1, 1)
  """
  total = config.num_devices or parallel.device_count()
  mesh = config.get("mesh", None) or {}
  runs, data = int(mesh.get("runs", 0)), int(mesh.get("data", 1))
  if runs < 0 or data < 0:
    raise ValueError(f"config.mesh: runs = {runs} and data = {data} must be "
                     ">= 0 (0: the devices left over by the other).")
  if not data:
    data = max(total // (runs or total), 1) if runs else 1
  if not runs:
    runs = total // data
  if runs < 1 or runs * data > total:
    raise ValueError(
        f"config.mesh: runs x data = {runs} x {data} devices does not fit "
        f"the {total} device(s) of config.num_devices = {config.num_devices}"
        f"{' (all)' if not config.num_devices else ''}; choose "
        f"config.mesh.runs * config.mesh.data <= {total}.")
  return runs, data


def make_run_table(config: ml_collections.ConfigDict,
                   num_devices: int = 1) -> RunTable:
  """Expands `config.grid` × seeds into runs, padded to the device count."""
  fields = [f for f in GRIDABLE if len(config.grid.get(f, ()))]
  values = [list(config.grid[f]) for f in fields]
  grid_points = [dict(zip(fields, map(float, combo)))
                 for combo in itertools.product(*values)]
  n_seeds = config.num_seeds
  n = len(grid_points) * n_seeds
  n_pad = parallel.RunLayout(n, num_devices).padded  # the one padding rule
  seeds = config.seed_offset + np.arange(n) % n_seeds
  grid_index = np.arange(n) // n_seeds
  pad = np.concatenate([np.arange(n), np.full(n_pad - n, n - 1)])
  hparams = {}
  for short, field in GRIDABLE.items():
    section, name = field.split(".")
    # A model without the field (e.g. no LeakyReLU) ignores its value.
    default = float(config[section].get(name, 0.0))
    per_point = np.array([p.get(short, default) for p in grid_points],
                         np.float32)
    hparams[short] = per_point[grid_index[pad]]
  return RunTable(seeds, grid_index, grid_points, hparams, n_pad)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a config before anything is compiled.

  Raises:
    ValueError: naming the field and the fix.
  """
  def bad(field, msg):
    raise ValueError(f"config.{field}: {msg}")
  if config.num_seeds < 1:
    bad("num_seeds", f"must be >= 1, got {config.num_seeds}; e.g. "
        "--config.num_seeds=8.")
  for f in ("num_steps", "batch_size", "log_every", "checkpoint_every",
            "keep_checkpoints"):
    if config[f] < 1:
      bad(f, f"must be >= 1, got {config[f]}.")
  if config.num_steps % config.log_every:
    bad("log_every", f"num_steps = {config.num_steps} is not a multiple of "
        f"log_every = {config.log_every}; every scan chunk has log_every "
        "steps, so choose e.g. --config.log_every="
        f"{math.gcd(config.num_steps, config.log_every)}.")
  if config.checkpoint_every % config.log_every:
    bad("checkpoint_every", f"= {config.checkpoint_every} must be a multiple "
        f"of log_every = {config.log_every} (checkpoints are taken between "
        "scan chunks).")
  if config.runs_per_group < 0:
    bad("runs_per_group", f"must be >= 0 (0: auto), got "
        f"{config.runs_per_group}.")
  if config.num_devices < 0 or config.num_devices > jax.device_count():
    bad("num_devices", f"= {config.num_devices}, but {jax.device_count()} "
        "device(s) exist; use 0 for all of them.")
  _, data_shards = mesh_shape(config)
  if config.batch_size % data_shards:
    bad("batch_size", f"= {config.batch_size} must be a multiple of the "
        f"{data_shards} data shards (config.mesh.data): each shard takes "
        "batch_size / data rows.")
  data_lib.validate_config(config.data)
  if config.objective.name not in objectives.OBJECTIVES:
    bad("objective.name", f"unknown objective {config.objective.name!r}; "
        f"choose one of {objectives.OBJECTIVES}.")
  for field, vals in config.grid.items():
    if field not in GRIDABLE:
      bad(f"grid.{field}", f"cannot vary inside one program; grid-able "
          f"fields are {sorted(GRIDABLE)}. Run separate experiments for "
          "other fields.")
    if isinstance(vals, (str, bytes)) or not hasattr(vals, "__len__"):
      bad(f"grid.{field}", f"must be a tuple of numbers, e.g. "
          f'--config.grid.{field}="(0.1, 0.2)", got {vals!r}.')
  table = make_run_table(config)
  checks = {
      "mask_ratio": (lambda v: 0 < v < 1, "in (0, 1)"),
      "learning_rate": (lambda v: v > 0, "> 0"),
      "weight_decay": (lambda v: v >= 0, ">= 0"),
      "negative_slope": (lambda v: v >= 0, ">= 0"),
      "beta": (lambda v: v >= 0, ">= 0"),
  }
  for short, (ok, want) in checks.items():
    field = GRIDABLE[short]
    if len(config.grid.get(short, ())):
      field = f"grid.{short}"
    if short == "mask_ratio" and config.objective.name != "masked_autoencoder":
      continue
    vals = table.hparams[short]
    if not all(ok(v) for v in vals):
      bad(field, f"must be {want}, got {sorted(set(vals.tolist()))}.")
  if config.objective.name == "classifier" and "classifier" not in (
      config.model.name):
    bad("model.name", f"{config.model.name!r} cannot serve the classifier "
        "objective; use a classifier model such as 'mlp_classifier'.")
  if config.objective.name != "classifier" and "classifier" in (
      config.model.name):
    bad("objective.name", f"{config.objective.name!r} needs an autoencoder "
        f"model, not {config.model.name!r}.")
  models.check_objective(config.model.name, config.objective.name)
  if len(config.grid.get("negative_slope", ())) and (
      "negative_slope" not in config.model):
    bad("grid.negative_slope", f"{config.model.name} has no LeakyReLU slope "
        "to vary.")
  if config.model.name == "vit_mae" and len(config.grid.get("mask_ratio",
                                                            ())):
    bad("grid.mask_ratio", "cannot vary for vit_mae: the number of visible "
        "patches is a compiled shape. Run one experiment per mask ratio.")
  if config.objective.get("reconstruction", "mse") not in (
      objectives.RECONSTRUCTIONS):
    bad("objective.reconstruction", f"unknown "
        f"{config.objective.reconstruction!r}; choose one of "
        f"{objectives.RECONSTRUCTIONS}.")
  eval_bs = config.eval.get("batch_size", 0)
  if eval_bs < 0 or (eval_bs and config.data.eval_size % eval_bs):
    bad("eval.batch_size", f"= {eval_bs} must be 0 (all rows at once) or "
        f"divide data.eval_size = {config.data.eval_size}.")
  if config.eval.get("pool", "flatten") not in _POOLS:
    bad("eval.pool", f"unknown pooling {config.eval.pool!r}; choose one of "
        f"{_POOLS}.")
  spec = _spec_without_building(config.data)
  model = models.build_model(config.model, spec,
                             objective=config.objective.name)
  names = model.layer_names()
  unknown = [l for l in config.eval.layers if l not in names]
  if unknown or not config.eval.layers:
    bad("eval.layers", f"unknown layer(s) {unknown or '(none given)'}; "
        f"{config.model.name} has layers {list(names)}.")
  if config.optimizer.name not in ("adamw", "sgd"):
    bad("optimizer.name", f"unknown optimizer {config.optimizer.name!r}; "
        "choose 'adamw' or 'sgd'.")
  if config.optimizer.schedule not in ("constant", "cosine"):
    bad("optimizer.schedule", f"unknown schedule "
        f"{config.optimizer.schedule!r}; choose 'constant' or 'cosine'.")


def _spec_without_building(data_config) -> dict[str, Any]:
  """The data spec, computed from the config alone (no arrays created)."""
  if data_config.name == "synthetic":
    return {"obs_shape": (data_config.obs_dim,),
            "num_classes": data_config.num_classes,
            "latent_dim": data_config.latent_dim}
  if data_config.name == "images":
    return data_lib.images.spec_from_config(data_config)
  return data_lib.build_data(data_config).spec
