"""Image data through the multi-run trainer: adapter, optimizer, BatchNorm."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from nearid_jax import models
from nearid_jax import train
from nearid_jax.data import images
from nearid_jax.models import conv_ae
from nearid_jax.models import resnet
from nearid_jax.models import vit


def _data_config(**overrides):
  c = images.default_config()
  c.image_size, c.eval_size = 16, 16
  c.update(overrides)
  return c


# --- the data adapter ------------------------------------------------------------


def test_samples_are_pooled_renders_with_factor_labels():
  data = images.ImageData(_data_config())
  key = jax.random.key(4)
  batch = jax.jit(data.sample, static_argnums=1)(key, 6)
  assert batch["x"].shape == (6, 16, 16, 1) and batch["x"].dtype == jnp.float32
  assert batch["u"].shape == (6, 5) and batch["label"].dtype == jnp.int32
  # dSprites' shape values are 1, 2, 3 and the label is the shape's index.
  np.testing.assert_array_equal(batch["label"], np.asarray(batch["u"][:, 0]) - 1)
  # Each pixel is the mean of a 4x4 block of the native 64x64 render.
  k_data, _ = jax.random.split(key)
  full = np.asarray(data.dataset.sample(k_data, 6)[0])
  blocks = full.reshape(6, 16, 4, 16, 4, 1).mean(axis=(2, 4))
  np.testing.assert_allclose(batch["x"], blocks, atol=1e-6)
  assert data.spec == {
      "obs_shape": (16, 16, 1), "num_classes": 3, "latent_dim": 5,
      "num_examples": 737280, "factor_names": data.dataset.factor_names,
      "factor_sizes": (3, 6, 40, 32, 32)}


def test_eval_set_is_fixed_across_chunks_and_calls(monkeypatch):
  monkeypatch.setattr(images, "_EVAL_CHUNK", 8)  # 20 rows -> 3 chunks
  data = images.ImageData(_data_config(eval_size=20))
  a, b = data.eval_set(), data.eval_set()
  assert isinstance(a["x"], np.ndarray) and a["x"].shape == (20, 16, 16, 1)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert len({r.tobytes() for r in a["u"]}) == 20  # chunks differ
  other = images.ImageData(_data_config(eval_size=20, seed=1)).eval_set()
  assert not np.array_equal(other["u"], a["u"])


def test_positive_partners_differ_in_exactly_one_factor():
  data = images.ImageData(_data_config(positive_pairs=True, image_size=0))
  batch = jax.jit(data.sample, static_argnums=1)(jax.random.key(2), 8)
  ds = data.dataset
  idx = ds.values_to_indices(np.asarray(batch["u"]))
  # Every single-step neighbour of every row, rendered in one call.
  cands = []
  for f in range(ds.num_factors):
    for step in (-1, 1):
      moved = idx.copy()
      moved[:, f] = np.clip(moved[:, f] + step, 0, ds.factor_sizes[f] - 1)
      cands.append(moved)
  renders = np.asarray(ds.render(np.stack(cands).astype(np.int32)))
  x_pos = np.asarray(batch["x_pos"])
  for i in range(8):
    err = np.abs(renders[:, i] - x_pos[i]).reshape(len(cands), -1).max(-1)
    moved = [c[i] for c, e in zip(cands, err) if e < 1e-5]
    assert moved, f"row {i}: partner is no single-factor neighbour"
    assert any((m != idx[i]).sum() == 1 for m in moved)


def test_stored_digits_use_the_same_interface():
  data = images.ImageData(_data_config(dataset="digits", label_factor="digit",
                                       image_size=0))
  batch = data.sample(jax.random.key(0), 5)
  assert batch["x"].shape == (5, 8, 8, 1)
  assert data.spec["num_classes"] == 10 and data.spec["num_examples"] == 1797
  np.testing.assert_array_equal(batch["label"], batch["u"][:, 0])


def test_prepared_tfds_data_use_the_same_interface(tmp_path):
  from nearid_jax.data import builders  # pylint: disable=g-import-not-at-top
  from nearid_jax.data import procedural  # pylint: disable=g-import-not-at-top
  builders.materialize(procedural.DSprites(), str(tmp_path), num_examples=24,
                       key=jax.random.key(0))
  config = _data_config(dataset="tfds/procedural_dsprites",
                        data_dir=str(tmp_path), eval_size=8)
  data = images.ImageData(config)
  assert data.spec["obs_shape"] == (16, 16, 1)
  assert data.spec["num_examples"] == 24  # distinct stored rows
  batch = data.sample(jax.random.key(1), 5)
  assert batch["x"].shape == (5, 16, 16, 1)
  np.testing.assert_array_equal(batch["label"],
                                np.asarray(batch["u"][:, 0]) - 1)
  with pytest.raises(Exception, match="prepare|not prepared|no prepared"):
    images.validate_config(_data_config(dataset="tfds/mpi3d",
                                        data_dir=str(tmp_path / "none")))


@pytest.mark.parametrize("overrides,match", [
    (dict(dataset="mnist"), "data.dataset.*tfds/"),
    (dict(label_factor="colour"), "data.label_factor"),
    (dict(image_size=24), "data.image_size"),
    (dict(eval_size=1), "data.eval_size"),
    (dict(dataset="digits", label_factor="digit", image_size=0,
          positive_pairs=True), "data.positive_pairs"),
])
def test_invalid_image_configs_name_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    images.validate_config(_data_config(**overrides))


# --- the optimizer ----------------------------------------------------------------


def _ones_params(model, shape):
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((2,) + shape))
  return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                      variables["params"])


@pytest.mark.parametrize("cfg", [
    conv_ae.default_config("tiny"), vit.default_config("tiny"),
    resnet.resnet_config("tiny", norm="group")])
def test_weight_decay_applies_to_weights_only(cfg):
  model = models.build_model(cfg, {"obs_shape": (16, 16, 1),
                                   "num_classes": 3})
  params = _ones_params(model, (16, 16, 1))
  opt = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, schedule="constant", warmup_steps=0,
      clip_norm=1.0))
  tx = train.make_optimizer(opt, {"learning_rate": 0.1, "weight_decay": 0.5},
                            10)
  state = tx.init(params)
  # Zero gradients: Adam's step is 0, so the update is the decay alone.
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, state, params)
  decayed = []
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    if path[-1].key in ("kernel", "embedding"):
      np.testing.assert_allclose(u, -0.05, err_msg=name)
      decayed.append(name)
    else:  # biases, norm scales, class / mask tokens, the input map
      np.testing.assert_array_equal(u, 0.0, err_msg=name)
  assert decayed
  # The optimizer's state holds Adam moments for every leaf, decayed or not.
  mu = state[1][0].mu
  assert jax.tree.structure(mu) == jax.tree.structure(params)


def test_global_norm_clipping_bounds_the_update():
  opt = ml_collections.ConfigDict(dict(
      name="sgd", b1=0.0, schedule="constant", warmup_steps=0,
      clip_norm=1.0))
  params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"bias": jnp.ones(5)}}
  grads = jax.tree.map(lambda p: 1e3 * jnp.arange(p.size, dtype=jnp.float32)
                       .reshape(p.shape), params)
  hp = {"learning_rate": 1.0, "weight_decay": 0.0}
  tx = train.make_optimizer(opt, hp, 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  norm = float(optax.tree.norm(updates))
  np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
  # The direction is the gradient's.
  scale = float(optax.tree.norm(grads))
  jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -g / scale,
                                                       rtol=1e-5), updates,
               grads)
  opt.clip_norm = 0.0
  tx = train.make_optimizer(opt, hp, 10)
  unclipped, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(float(optax.tree.norm(unclipped)), scale,
                             rtol=1e-5)


@pytest.mark.parametrize("schedule,warmup", [("cosine", 4), ("constant", 4)])
def test_schedules_take_a_traced_learning_rate(schedule, warmup):
  opt = ml_collections.ConfigDict(dict(
      name="sgd", b1=0.0, schedule=schedule, warmup_steps=warmup,
      clip_norm=0.0))
  params = {"w": {"kernel": jnp.ones(3)}}

  def lr_at(lr, step):
    tx = train.make_optimizer(opt, {"learning_rate": lr, "weight_decay": 0.0},
                              20)
    state = tx.init(params)
    for _ in range(step + 1):
      updates, state = tx.update({"w": {"kernel": -jnp.ones(3)}}, state,
                                 params)
    return updates["w"]["kernel"][0]
  rates = [float(jax.jit(lr_at, static_argnums=1)(jnp.float32(0.5), s))
           for s in (0, 2, 4)]
  np.testing.assert_allclose(rates, [0.0, 0.25, 0.5], rtol=1e-5)


# --- the trainer: per-seed BatchNorm, chunked evaluation ---------------------------


def _bn_config():
  c = train.default_config()
  c.data = _data_config()
  c.model = resnet.resnet_config("tiny", norm="batch")
  c.objective.name = "classifier"
  c.num_seeds, c.num_steps, c.batch_size = 2, 4, 8
  c.log_every, c.checkpoint_every = 2, 4
  c.num_devices, c.progress = 1, False
  c.eval.update(dict(layers=("stage_0", "latent"), batch_size=8,
                     pool="mean"))
  return c


@pytest.fixture(scope="module")
def bn_chunk():
  trainer = train.get_trainer(_bn_config())
  key = jax.random.key(0)
  state0 = trainer.init_jit(key)
  kept = jax.tree.map(np.asarray, state0)  # chunk_jit donates its input
  state1, metrics = trainer.chunk_jit(state0, key)
  return trainer, kept, state1, metrics


def test_vmapped_batchnorm_runs_equal_single_runs(bn_chunk):
  trainer, state0, state1, metrics = bn_chunk
  key = jax.random.key(0)
  run_keys = trainer.run_keys(key)
  hparams = trainer._hparams()  # pylint: disable=protected-access
  single = jax.jit(lambda st, k, hp: jax.lax.scan(
      lambda s, _: trainer._step_one(s, k, hp), st, None,  # pylint: disable=protected-access
      length=trainer.config.log_every))
  take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
  for i in range(2):
    s_i, m_i = single(take(state0, i), run_keys[i], take(hparams, i))
    np.testing.assert_allclose(m_i["loss"], metrics["loss"][i], rtol=1e-5)
    for part in ("params", "model_state"):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-4, atol=1e-6), getattr(s_i, part),
                   take(getattr(state1, part), i))
  # Each seed carries its own batch statistics, moved by its own batches.
  stats0 = jax.tree.leaves(state0.model_state["batch_stats"])
  stats1 = jax.tree.leaves(state1.model_state["batch_stats"])
  assert all(not np.allclose(a[0], b[0]) for a, b in zip(stats0, stats1))
  assert any(not np.allclose(b[0], b[1]) for b in stats1)


def test_run_writes_chunked_pooled_representations(bn_chunk, tmp_path):
  trainer = bn_chunk[0]
  config = _bn_config()
  summary = train.run(config, str(tmp_path))
  assert train.get_trainer(config) is trainer  # compiled programs shared
  assert summary["num_runs"] == 2 and not summary["diverged_runs"]
  reps = np.load(tmp_path / "representations.npz")
  assert reps["z/stage_0"].shape == (2, 16, 8)   # spatial mean of 8 channels
  assert reps["z/latent"].shape == (2, 16, 16)
  assert reps["x"].shape == (16, 16, 16, 1) and reps["u"].shape == (16, 5)
  # Chunks of 8 rows give what the whole set gives at once.
  _, state = train.load_trained(str(tmp_path))
  whole = jax.tree.map(np.asarray, trainer.evaluate_jit(state))
  chunked = trainer.evaluate_in_chunks(state)
  np.testing.assert_allclose(chunked["loss"], whole["loss"][:2], rtol=1e-5)
  for layer in ("stage_0", "latent"):
    np.testing.assert_allclose(chunked["reps"][layer],
                               whole["reps"][layer][:2], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(reps[f"z/{layer}"], chunked["reps"][layer],
                               rtol=1e-6)
  final = json.loads((tmp_path / "final.json").read_text())
  assert all(np.isfinite(r["eval_loss"]) for r in final["runs"])


# --- configs ------------------------------------------------------------------------


CONFIGS = {
    "conv_ae": ("smoke", "shapes3d", "dsprites,smoke", "cells"),
    "beta_vae": ("smoke", "shapes3d"),
    "beta_tcvae": ("smoke", "shapes3d"),
    "bioae": ("smoke", "dsprites"),
    "vit_mae": ("smoke", "cells", "shapes3d,vit_b16"),
    "classifier": ("smoke", "cnn,smoke", "resnet,shapes3d"),
    "infonce": ("smoke", "shapes3d"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_image_configs_are_valid(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "Command:" in module.__doc__ and "Expected result" in module.__doc__
  for arg in CONFIGS[name]:
    config = module.get_config(arg)
    train.validate_config(config)
    if "smoke" in arg:
      assert config.num_steps <= 20 and config.num_seeds <= 2
  with pytest.raises(ValueError, match="unknown config argument"):
    module.get_config("nonsense")


def test_published_baseline_weights_per_dataset():
  beta_vae = importlib.import_module("experiments.configs.beta_vae")
  beta_tcvae = importlib.import_module("experiments.configs.beta_tcvae")
  bioae = importlib.import_module("experiments.configs.bioae")
  datasets = ("shapes3d", "mpi3d", "falcor3d", "isaac3d")
  assert [beta_vae.get_config(d).objective.beta for d in datasets] == [
      3, 0.1, 10, 0.3]
  assert [beta_tcvae.get_config(d).objective.beta for d in datasets] == [
      3, 0.3, 3, 1]
  c = bioae.get_config("shapes3d")
  assert (c.objective.nonnegative_weight, c.objective.activity_weight,
          c.optimizer.weight_decay) == (1, 0.01, 1e-4)
  assert c.model.latent_dim == 12  # 2 x 6 factors


@pytest.mark.parametrize("overrides,match", [
    (dict(objective="classifier", model="conv_ae"), "model.name"),
    (dict(objective="beta_vae", model="conv_ae"), "model.name"),
    (dict(objective="masked_autoencoder", model="vit_mae",
          grid_mask=(0.5, 0.75)), "grid.mask_ratio"),
    (dict(objective="autoencoder", model="conv_ae", rec="l1"),
     "objective.reconstruction"),
    (dict(objective="autoencoder", model="conv_ae", eval_bs=5),
     "eval.batch_size"),
    (dict(objective="autoencoder", model="conv_ae", layer="enc_9"),
     "eval.layers"),
])
def test_invalid_image_training_configs_fail_before_compiling(overrides,
                                                              match):
  c = train.default_config()
  c.data = _data_config()
  c.model = {"conv_ae": conv_ae.default_config("tiny"),
             "vit_mae": vit.default_config("tiny")}[overrides["model"]]
  c.objective.name = overrides["objective"]
  c.eval.layers = (overrides.get("layer", "latent"),)
  if "grid_mask" in overrides:
    c.grid.mask_ratio = overrides["grid_mask"]
  c.objective.reconstruction = overrides.get("rec", "mse")
  c.eval.batch_size = overrides.get("eval_bs", 0)
  with pytest.raises(ValueError, match=match):
    train.validate_config(c)
