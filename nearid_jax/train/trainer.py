"""The multi-run computation: train state, optimizer, and `Trainer`.

Everything here is pure (nothing is written): `Trainer` holds the jitted
`init`, `chunk` and `evaluate` of all runs of one config, and
`make_train(config)` returns the whole training as one function. The host
driver (`driver.run`) calls these and writes the files.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nearid_jax import data as data_lib
from nearid_jax import models
from nearid_jax import objectives
from nearid_jax.train import devices
from nearid_jax.train.config import make_run_table
from nearid_jax.train.config import mesh_shape
from nearid_jax.train.config import validate_config


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
    placement: the `devices.RunPlacement` (mesh, sharding, grouping).
    mesh, sharding: the placement's mesh (`parallel.mesh`) and run sharding.
    data, spec: the data source and its spec (shapes, factor names).
    eval_batch: the fixed held-out evaluation set {"x", "u", "label"}.
    init_jit, chunk_jit, evaluate_jit: jitted `init`, `chunk`, `evaluate`
      with the run axis sharded over the mesh.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    validate_config(config)
    self.config = ml_collections.FrozenConfigDict(config)
    run_shards, data_shards = mesh_shape(config)
    self.placement = devices.RunPlacement(run_shards, config.runs_per_group,
                                          data_shards)
    self.mesh = self.placement.mesh
    self.sharding = self.placement.sharding
    self.runs = make_run_table(config, self.placement.num_devices)
    self.data = data_lib.build_data(config.data)
    # Stored data too large for device memory: batches come from the host
    # (`feed`), as an argument of `chunk`.
    self.streamed = bool(getattr(self.data, "streamed", False))
    self.spec = self.data.spec
    self.eval_batch = self.data.eval_set()
    self.layers = tuple(config.eval.layers)
    self.init_jit = jax.jit(self.init, out_shardings=self.sharding)
    self.chunk_jit = jax.jit(self.chunk, donate_argnums=0,
                             static_argnames="length",
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
    if self.streamed:  # init needs only the input's shape
      example = jnp.zeros((2,) + tuple(self.spec["obs_shape"]), jnp.float32)
    else:
      example = self.data.sample(jax.random.key(0), 2)["x"]
    variables = dict(self.model(hparams).init(k_init, example))
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
        opt_state=self.optimizer(hparams).init(params),
        diverged_step=jnp.full((), -1, jnp.int32),
        loss=jnp.full((), jnp.nan, jnp.float32))

  def _step_one(self, state: TrainState, run_key, hparams, raw=None):
    _, k_steps = jax.random.split(run_key)
    k_data, k_loss = jax.random.split(jax.random.fold_in(k_steps, state.step))
    if raw is None:
      batch = self.data.sample(k_data, self.config.batch_size)
    else:  # a streamed batch, an argument of the step
      batch = self.data.prepare(raw)
    # With data shards each shard draws and steps its rows of the batch;
    # the loss and gradient means over the rows become all-reduces.
    batch = self.placement.constrain_rows(batch)
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
    return self.placement.constrain(tree)

  def init(self, key: jax.Array) -> TrainState:
    """Initial states of all (padded) runs: leaves [N_padded, ...]."""
    return jax.vmap(self._init_one)(self.run_keys(key), self._hparams())

  def chunk(self, state: TrainState, key: jax.Array,
            length: int | None = None, batches: Any = None):
    """Advances every run by `length` steps (default `log_every`).

    Args:
      state: the stacked state.
      key: the base key.
      length: steps.
      batches: streamed data only: the chunk's raw batches, leaves
        [length, batch_size, ...] (from `feed`), shared by every run.

    Returns:
      (state, metrics) with metrics {name: [N_padded, length]}.

    Raises:
      ValueError: streamed data without `batches`.
    """
    length = length or self.config.log_every
    if self.streamed and batches is None:
      raise ValueError(
          f"config.data.dataset = {self.config.data.dataset!r} is streamed "
          "from the host: pass the chunk's batches (Trainer.feed) to "
          "chunk; train.run does.")

    def one(st, run_key, hp, *shared):
      return jax.lax.scan(
          lambda s, raw: self._step_one(s, run_key, hp, raw), st,
          shared[0] if shared else None, length=length)

    return self.placement.map_runs(one, self._constrain(state),
                                   self.run_keys(key), self._hparams(),
                                   shared=batches)

  def feed(self, state: dict[str, Any] | None = None):
    """The host loader of streamed data (`data.streaming.StreamFeed`):
    chunks of batches laid out for `chunk` (rows over the data shards).

    Args:
      state: a saved `StreamFeed.position` to resume from.
    """
    return self.data.feed(self.config.batch_size,
                          self.placement.batch_sharding(batch_axis=1), state)

  def runs_per_group(self, local_runs: int) -> int:
    """How many of a device's runs are vmapped together (config doc)."""
    return self.placement.group_size(local_runs)

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
      parts.append(jax.tree.map(lambda x: devices.to_host(x)[:n],
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
  # An invalid config never enters the cache: `Trainer` checks it (once).
  return _cached_trainer(ml_collections.FrozenConfigDict(config))


def make_train(config: ml_collections.ConfigDict) -> Callable:
  """Returns the pure `train(key) -> (state, metrics)` for all runs.

  metrics are {name: [N, num_steps]} for the N runs of the run table; the
  state keeps the padded run axis (N rounded up to the device count; the
  first N entries are the real runs). The same key gives the same numbers.

  Examples:
    >>> from nearid_jax.train import default_config
    >>> config = default_config()
    >>> config.num_seeds, config.num_steps, config.log_every = 2, 4, 2
    >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0))
    >>> metrics["loss"].shape
    (2, 4)
  """
  trainer = get_trainer(config)
  if trainer.streamed:
    raise ValueError(
        f"config.data.dataset = {config.data.dataset!r} is streamed from the "
        "host (larger than config.data.resident_max_mb), so training cannot "
        "be one pure function; use train.run, or raise resident_max_mb.")
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


def param_checksum(params: Any) -> str:
  """sha256 over the bytes of every leaf, in tree order (one run)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
  return h.hexdigest()
