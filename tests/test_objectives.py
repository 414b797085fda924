"""Tests of the objectives and the optimizer's weight-decay mask."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import special

from nearid_jax import objectives
from nearid_jax import train
from nearid_jax.models import mlp


def test_random_mask_hides_exactly_the_ratio():
  m = np.asarray(objectives.random_mask(jax.random.key(0), (50, 10), 0.3))
  np.testing.assert_array_equal(m.sum(1), 3)
  assert len({tuple(r) for r in m}) > 10  # fresh per row
  traced = jax.jit(objectives.random_mask, static_argnums=1)(
      jax.random.key(0), (4, 10), jnp.float32(0.75))
  np.testing.assert_array_equal(np.asarray(traced).sum(1), 8)  # round(7.5)


def test_masked_autoencoder_loss_is_mse_on_hidden_coordinates():
  model = mlp.MLPAutoencoder((8,), 2, (8,), out_dim=6, mask_input=True)
  x = jax.random.normal(jax.random.key(0), (5, 6))
  v = model.init(jax.random.key(1), x)
  key = jax.random.key(2)
  loss, aux = objectives.masked_autoencoder(model, 0.5)(v, {"x": x}, key)
  m = objectives.random_mask(key, x.shape, 0.5)
  out, _ = model.apply(v, x, mask=m)
  m, err = np.asarray(m), np.asarray(out - x) ** 2
  np.testing.assert_allclose(loss, err[m == 1].mean(), rtol=1e-5)
  np.testing.assert_allclose(aux["mse_visible"], err[m == 0].mean(),
                             rtol=1e-5)
  # The encoder input hides masked values: changing them changes nothing.
  x2 = np.where(m == 1, 100.0, np.asarray(x))
  out2, _ = model.apply(v, jnp.asarray(x2), mask=jnp.asarray(m))
  np.testing.assert_allclose(out2, out, rtol=1e-6)


def test_classifier_loss_is_cross_entropy():
  model = mlp.MLPClassifier((8,), 4, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (7, 5))
  y = jnp.array([0, 1, 2, 0, 1, 2, 2])
  v = model.init(jax.random.key(1), x)
  loss, aux = objectives.classifier(model)(v, {"x": x, "label": y}, None)
  logits = np.asarray(model.apply(v, x)[0], np.float64)
  ref = -np.mean(special.log_softmax(logits, 1)[np.arange(7), y])
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(aux["accuracy"],
                             np.mean(logits.argmax(1) == np.asarray(y)))


def test_weight_decay_touches_weights_only():
  model = mlp.MLPAutoencoder((4,), 2, (4,), out_dim=3)
  params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
  config = train.default_config().optimizer
  tx = train.make_optimizer(
      config, {"learning_rate": 0.1, "weight_decay": 0.5}, num_steps=10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    name = path[-1].key
    if name == "kernel":  # decoupled decay: -lr * wd * w
      np.testing.assert_allclose(
          u, -0.05 * params[path[0].key]["kernel"], rtol=1e-6)
    else:
      np.testing.assert_array_equal(u, 0.0)


def test_clipping_bounds_the_update():
  config = train.default_config().optimizer
  config.name, config.b1, config.clip_norm = "sgd", 0.0, 1.0
  tx = train.make_optimizer(
      config, {"learning_rate": 1.0, "weight_decay": 0.0}, num_steps=10)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)


@pytest.mark.parametrize("objective,model_name", [
    ("autoencoder", "mlp_ae"), ("masked_autoencoder", "mlp_ae"),
    ("classifier", "mlp_classifier")])
def test_each_objective_decreases_its_loss(objective, model_name):
  config = train.default_config()
  config.objective.name = objective
  config.model.name = model_name
  config.model.encoder_widths = config.model.decoder_widths = (32,)
  config.num_seeds, config.num_steps, config.log_every = 2, 150, 50
  config.batch_size = 64
  config.optimizer.learning_rate = 3e-3
  _, metrics = jax.jit(train.make_train(config))(jax.random.key(0))
  loss = np.asarray(metrics["loss"])
  first, last = loss[:, :10].mean(1), loss[:, -10:].mean(1)
  assert np.all(last < 0.75 * first), (first, last)
