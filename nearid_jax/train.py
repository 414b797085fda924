"""Many runs of one model in ONE compiled program.

A *run* is one (seed, hyper-parameter grid point) pair. Runs are stacked on a
leading axis with `jax.vmap`; the step loop is a `jax.lax.scan`; with several
devices the run axis is sharded over a one-axis mesh ("seed"). The pieces:

  * `make_train(config)` returns the pure `train(key) -> (state, metrics)`
    (purejaxrl style: `jax.jit(make_train(config))(key)` trains everything);
  * `Trainer` exposes the same computation in chunks (`init`, `chunk`,
    `evaluate`), which `run(config, workdir)` drives from the host with
    checkpoints, a progress bar and logs.

Runs and randomness. The grid (`config.grid`, e.g.
`--config.grid.weight_decay="(0, 1e-4)"`) and the seeds form a run table:
run i has grid point i // num_seeds and seed seed_offset + i % num_seeds. The grid is a second
axis of that table, flattened into the one vmapped axis so that sharding and
padding treat every run alike (any G·R works on any device count). Run i's
key is fold_in(key, seed), shared across grid points (common random numbers:
grid points differ only by their hyper-parameters); the key of step t is
fold_in(run key, t), so a resumed run draws exactly the batches an
uninterrupted one would have drawn.

Divergence. A run whose loss, gradients or updated parameters are not finite
keeps its last good state, is frozen from then on, and records the step.
The other runs are unaffected.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from nearid_jax import checkpoint as ckpt_lib
from nearid_jax import data as data_lib
from nearid_jax import metric_writers
from nearid_jax import models
from nearid_jax import objectives
from nearid_jax import plotting

# Fields that may vary over runs inside one program (they enter the
# computation as traced values): `config.grid.<name>` -> the field it sets.
GRIDABLE = {
    "learning_rate": "optimizer.learning_rate",
    "weight_decay": "optimizer.weight_decay",
    "negative_slope": "model.negative_slope",
    "mask_ratio": "objective.mask_ratio",
    "beta": "objective.beta",
}
# Fields that change neither the computation nor its result; a workdir may be
# resumed with different values.
_NON_NUMERIC = ("log_every", "checkpoint_every", "keep_checkpoints",
                "progress", "num_devices", "runs_per_group", "eval.layers",
                "eval.batch_size", "eval.pool")
_POOLS = ("flatten", "mean")
# representations.npz keeps the eval inputs up to this size.
_MAX_SAVED_INPUTS = 64 << 20
_OUTPUTS = ("checkpoints", "metrics.jsonl", "tb", "final.json",
            "representations.npz", "loss_curves.png", "config.json")


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


@flax.struct.dataclass
class TrainState:
  """The state of one run (stacked: every leaf has a leading run axis).

  Attributes:
    step: steps taken (the same for every run; frozen runs count too).
    params: the model's "params" collection.
    model_state: the model's other collections (e.g. batch statistics).
    opt_state: optimizer state.
    diverged_step: -1 while healthy, else the first step whose update was not
      finite; the run is frozen from then on.
    loss: the loss of the last step.
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  diverged_step: jax.Array
  loss: jax.Array


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


def make_run_table(config: ml_collections.ConfigDict,
                   num_devices: int = 1) -> RunTable:
  """Expands `config.grid` × seeds into runs, padded to the device count."""
  fields = [f for f in GRIDABLE if len(config.grid.get(f, ()))]
  values = [list(config.grid[f]) for f in fields]
  grid_points = [dict(zip(fields, map(float, combo)))
                 for combo in itertools.product(*values)]
  n_seeds = config.num_seeds
  n = len(grid_points) * n_seeds
  n_pad = math.ceil(n / num_devices) * num_devices
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


def weight_decay_mask(params: Any) -> Any:
  """True for weights (kernels, embeddings), False for biases and norms."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in ("kernel",
                                                         "embedding"),
      params)


def make_optimizer(config: ml_collections.ConfigDict,
                   hparams: dict[str, Any],
                   num_steps: int) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`, with traced lr / weight decay.

  Weight decay applies to weights only (`weight_decay_mask`), decoupled as
  in AdamW; gradient clipping by global norm precedes it when clip_norm > 0.
  """
  lr = peak = hparams["learning_rate"]
  # Unit-peak schedules scaled by the (possibly traced) rate: optax's
  # cosine schedule branches on its peak value in Python.
  if config.schedule == "cosine":
    unit = optax.warmup_cosine_decay_schedule(
        0.0, 1.0, max(config.warmup_steps, 1), num_steps)
    lr = lambda step: peak * unit(step)
  elif config.warmup_steps:
    unit = optax.linear_schedule(0.0, 1.0, config.warmup_steps)
    lr = lambda step: peak * unit(step)
  if config.name == "adamw":
    tx = optax.adamw(lr, config.b1, config.b2,
                     weight_decay=hparams["weight_decay"],
                     mask=weight_decay_mask)
  else:
    tx = optax.chain(
        optax.add_decayed_weights(hparams["weight_decay"], weight_decay_mask),
        optax.sgd(lr, momentum=config.b1 or None))
  if config.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


class Trainer:
  """The multi-run computation of one config, as pure and jitted pieces.

  Attributes:
    config: the (validated, frozen) config.
    runs: the `RunTable`.
    mesh: the device mesh with one axis "seed".
    data, spec: the data source and its spec (shapes, factor names).
    eval_batch: the fixed held-out evaluation set {"x", "u", "label"}.
    init_jit, chunk_jit, evaluate_jit: jitted `init`, `chunk`, `evaluate`
      with the run axis sharded over the mesh.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    validate_config(config)
    self.config = ml_collections.FrozenConfigDict(config)
    n_dev = config.num_devices or jax.device_count()
    self.mesh = jax.make_mesh((n_dev,), ("seed",),
                              axis_types=(jax.sharding.AxisType.Auto,),
                              devices=jax.devices()[:n_dev])
    self.sharding = NamedSharding(self.mesh, P("seed"))
    self.runs = make_run_table(config, n_dev)
    self.data = data_lib.build_data(config.data)
    self.spec = self.data.spec
    self.eval_batch = self.data.eval_set()
    self.layers = tuple(config.eval.layers)
    self.init_jit = jax.jit(self.init, out_shardings=self.sharding)
    self.chunk_jit = jax.jit(self.chunk, donate_argnums=0,
                             out_shardings=self.sharding)
    self.evaluate_jit = jax.jit(self.evaluate, out_shardings=self.sharding)

  # --- per-run pieces -----------------------------------------------------

  def model(self, hparams):
    return models.build_model(self.config.model, self.spec, hparams,
                              objective=self.config.objective.name)

  def loss_fn(self, hparams):
    return objectives.build_loss(self.config.objective.name,
                                 self.model(hparams), hparams,
                                 self.config.objective, self.spec)

  def optimizer(self, hparams):
    return make_optimizer(self.config.optimizer, hparams,
                          self.config.num_steps)

  def _init_one(self, run_key, hparams) -> TrainState:
    k_init, _ = jax.random.split(run_key)
    example = self.data.sample(jax.random.key(0), 2)["x"]
    variables = dict(self.model(hparams).init(k_init, example))
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
        opt_state=self.optimizer(hparams).init(params),
        diverged_step=jnp.full((), -1, jnp.int32),
        loss=jnp.full((), jnp.nan, jnp.float32))

  def _step_one(self, state: TrainState, run_key, hparams):
    _, k_steps = jax.random.split(run_key)
    k_data, k_loss = jax.random.split(jax.random.fold_in(k_steps, state.step))
    batch = self.data.sample(k_data, self.config.batch_size)
    loss_fn = self.loss_fn(hparams)

    def objective(params):
      loss, aux = loss_fn({"params": params, **state.model_state}, batch,
                          k_loss)
      return loss, aux

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    model_state = aux.pop("model_state", state.model_state)
    tx = self.optimizer(hparams)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    healthy = state.diverged_step < 0
    ok = (healthy & jnp.isfinite(loss) & _all_finite(grads)
          & _all_finite(params) & _all_finite(model_state))
    keep = lambda new, old: jax.tree.map(
        lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        model_state=keep(model_state, state.model_state),
        opt_state=keep(opt_state, state.opt_state),
        diverged_step=jnp.where(healthy & ~ok, state.step,
                                state.diverged_step),
        loss=loss.astype(jnp.float32))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return new_state, metrics

  # --- stacked (all runs) pure functions ------------------------------------

  def run_keys(self, key: jax.Array) -> jax.Array:
    seeds = np.concatenate([self.runs.seeds, np.full(
        self.runs.num_padded - self.runs.num_runs, self.runs.seeds[-1])])
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, seeds)
    return self._constrain(keys)

  def _hparams(self) -> dict[str, jax.Array]:
    return self._constrain({k: jnp.asarray(v)
                            for k, v in self.runs.hparams.items()})

  def _constrain(self, tree):
    if self.mesh.size == 1:
      return tree
    return jax.lax.with_sharding_constraint(tree, self.sharding)

  def init(self, key: jax.Array) -> TrainState:
    """Initial states of all (padded) runs: leaves [N_padded, ...]."""
    return jax.vmap(self._init_one)(self.run_keys(key), self._hparams())

  def chunk(self, state: TrainState, key: jax.Array):
    """Advances every run by `log_every` steps.

    Returns:
      (state, metrics) with metrics {name: [N_padded, log_every]}.
    """
    def one(st, run_key, hp):
      return jax.lax.scan(lambda s, _: self._step_one(s, run_key, hp), st,
                          None, length=self.config.log_every)

    def local(st, run_keys, hp):  # the runs of one device
      group = self.runs_per_group(run_keys.shape[0])
      if group == run_keys.shape[0]:
        return jax.vmap(one)(st, run_keys, hp)
      return jax.lax.map(lambda a: one(*a), (st, run_keys, hp),
                         batch_size=group)

    args = (self._constrain(state), self.run_keys(key), self._hparams())
    if self.mesh.size == 1:
      return local(*args)
    # Runs are independent (no collectives), so each device steps its own.
    return jax.shard_map(local, mesh=self.mesh, in_specs=P("seed"),
                         out_specs=P("seed"), check_vma=False)(*args)

  def runs_per_group(self, local_runs: int) -> int:
    """How many of a device's runs are vmapped together (config doc)."""
    group = self.config.runs_per_group
    if not group:
      group = 4 if jax.default_backend() == "cpu" else local_runs
    return min(group, local_runs)

  def evaluate(self, state: TrainState,
               batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Held-out loss and representations at `config.eval.layers`.

    Models run in evaluation mode (train=False: running batch statistics).

    Args:
      state: the stacked state.
      batch: rows to evaluate; None for the whole eval set (see
        `evaluate_in_chunks` for large sets).

    Returns:
      {"loss": [N_padded], aux names: [N_padded], "reps": {layer:
      [N_padded, n_eval, d]}} (feature maps and token sequences are
      flattened to d, or averaged when config.eval.pool = "mean").
    """
    batch = self.eval_batch if batch is None else batch
    key = jax.random.fold_in(jax.random.key(self.config.seed), 2)
    pool = self.config.eval.get("pool", "flatten")

    def rep(r):
      if pool == "mean" and r.ndim > 2:
        r = r.mean(axis=tuple(range(1, r.ndim - 1)))
      return r.reshape(r.shape[0], -1)

    def one(st, hp):
      variables = {"params": st.params, **st.model_state}
      loss, aux = self.loss_fn(hp)(variables, batch, key, train=False)
      aux.pop("model_state", None)
      _, reps, _ = objectives.apply_model(self.model(hp), variables,
                                          batch["x"], train=False)
      return {"loss": loss, **aux,
              "reps": {l: rep(reps[l]) for l in self.layers}}
    return jax.vmap(one)(self._constrain(state), self._hparams())

  def evaluate_in_chunks(self, state: TrainState) -> dict[str, np.ndarray]:
    """`evaluate` over the eval set in chunks of config.eval.batch_size.

    Only one chunk's representations are on the device at a time; the
    chunks' losses (means over equal-sized chunks) are averaged.

    Returns:
      Host arrays, as `evaluate`, for the N real runs.
    """
    n = self.runs.num_runs
    batch = self.eval_batch
    rows = batch["x"].shape[0]
    size = self.config.eval.get("batch_size", 0) or rows
    parts = []
    for start in range(0, rows, size):
      chunk = jax.tree.map(lambda a, s=start: a[s:s + size], batch)
      parts.append(jax.tree.map(lambda x: _to_host(x)[:n],
                                self.evaluate_jit(state, chunk)))
    out = {k: np.mean([p[k] for p in parts], axis=0)
           for k in parts[0] if k != "reps"}
    out["reps"] = {l: np.concatenate([p["reps"][l] for p in parts], axis=1)
                   for l in self.layers}
    return out

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the stacked state (nothing computed)."""
    shapes = jax.eval_shape(self.init, jax.random.key(0))
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=self.sharding), shapes)


@functools.lru_cache(maxsize=16)
def _cached_trainer(config: ml_collections.FrozenConfigDict) -> Trainer:
  return Trainer(config)


def get_trainer(config: ml_collections.ConfigDict) -> Trainer:
  """A Trainer shared by equal configs, so their programs compile once.

  Raises:
    ValueError: for an invalid config (before anything compiles).
  """
  validate_config(config)
  return _cached_trainer(ml_collections.FrozenConfigDict(config))


def make_train(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure `train(key) -> (state, metrics)` for all runs.

  metrics are {name: [N, num_steps]} for the N runs of the run table; the
  state keeps the padded run axis (N rounded up to the device count; the
  first N entries are the real runs). The same key gives the same numbers.

  Examples:
    >>> config = default_config()
    >>> config.num_seeds, config.num_steps, config.log_every = 2, 4, 2
    >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0))
    >>> metrics["loss"].shape
    (2, 4)
  """
  trainer = get_trainer(config)
  n_chunks = config.num_steps // config.log_every
  n_runs = trainer.runs.num_runs

  def train(key):
    state = trainer.init(key)
    state, metrics = jax.lax.scan(lambda s, _: trainer.chunk(s, key), state,
                                  None, length=n_chunks)
    # [chunks, N_padded, log_every] -> [N, num_steps], real runs only.
    metrics = jax.tree.map(
        lambda m: jnp.moveaxis(m, 0, 1).reshape(m.shape[1], -1)[:n_runs],
        metrics)
    return state, metrics

  return train


# --- host-side driver ---------------------------------------------------------


def _to_host(x) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def param_checksum(params: Any) -> str:
  """sha256 over the bytes of every leaf, in tree order (one run)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
  return h.hexdigest()


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
  diffs = []
  for k in sorted(set(old) | set(new)):
    path = f"{prefix}{k}"
    if path in _NON_NUMERIC:
      continue
    a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _config_diff(a, b, path + ".")
    elif _normalise(a) != _normalise(b):
      diffs.append(f"{path}: {a!r} -> {b!r}")
  return diffs


def _normalise(v):
  return json.loads(json.dumps(v))  # tuples vs lists


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
  return _config_diff(old, _normalise(config.to_dict()))


def _prepare_workdir(config, workdir: str, overwrite: bool) -> None:
  """Checks the workdir is writable and holds nothing of another config."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"--workdir {workdir!r} is not writable ({e}); choose "
                     "a directory you can write to.") from e
  cfg_path = os.path.join(workdir, "config.json")
  if overwrite:
    for name in _OUTPUTS:
      p = os.path.join(workdir, name)
      if os.path.isdir(p):
        shutil.rmtree(p)
      elif os.path.exists(p):
        os.remove(p)
    return
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


def run(config: ml_collections.ConfigDict, workdir: str, *,
        overwrite: bool = False,
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
    on_chunk: called with the global step after each chunk (tests use it to
      interrupt a run).

  Returns:
    The content of final.json as a dict.

  Raises:
    ValueError: for invalid configs or workdirs, before anything compiles.
  """
  trainer = get_trainer(config)  # validates the config first
  primary = jax.process_index() == 0
  if primary:
    _prepare_workdir(config, workdir, overwrite)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)
  runs = trainer.runs
  names = runs.names()
  key = jax.random.key(config.seed)
  abstract = trainer.abstract_state()

  with ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                             keep=config.keep_checkpoints) as ckpt:
    start = ckpt.latest_step()
    if start is None:
      start = 0
      state = trainer.init_jit(key)
    else:
      if primary:
        print(f"Resuming {workdir} from step {start} of {config.num_steps}.")
      state = ckpt.restore(start, abstract)
    writer = metric_writers.MetricWriter(workdir, names, resume_step=start,
                                         enabled=primary)
    state = _train_loop(trainer, state, key, start, ckpt, writer, on_chunk)
    writer.close()
    ckpt.wait()
  return _finish(trainer, state, workdir, primary)


def load_trained(workdir: str, step: int | None = None
                 ) -> tuple["Trainer", TrainState]:
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


def _train_loop(trainer, state, key, start, ckpt, writer, on_chunk):
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
  for step in range(start, config.num_steps, config.log_every):
    state, metrics = trainer.chunk_jit(state, key)
    if step == start:
      logging.info("First chunk (compile + %d steps): %.1fs",
                   config.log_every, time.time() - t0)
    end = step + config.log_every
    metrics = {k: _to_host(v)[:n] for k, v in metrics.items()}
    diverged = _to_host(state.diverged_step)[:n] >= 0
    scalars = {k: _finite_mean(v) for k, v in metrics.items()}
    scalars["loss_last"] = metrics["loss"][:, -1]
    scalars["diverged"] = diverged
    writer.write(end, scalars)
    if end % config.checkpoint_every == 0 or end == config.num_steps:
      ckpt.save(end, state)
    if bar is not None:
      loss = scalars["loss"][~diverged]
      bar.set_postfix(loss=f"{np.median(loss):.4g}" if loss.size else "-",
                      diverged=int(diverged.sum()))
      bar.update(config.log_every)
    if on_chunk is not None:
      on_chunk(end)
  if bar is not None:
    bar.close()
  return state


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
  params = jax.tree.map(lambda x: _to_host(x)[:n], state.params)
  div_step = _to_host(state.diverged_step)[:n]
  last_loss = _to_host(state.loss)[:n]
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
