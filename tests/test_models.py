"""Tests of the image models and their objectives (no trainer).

Shapes are checked with `jax.eval_shape` (tracing, no compiling); the
numerics on 16x16 images with the "tiny" sizes, one compile per objective.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import integrate
from scipy import special
from scipy import stats

from nearid_jax import models
from nearid_jax import objectives
from nearid_jax.data import images
from nearid_jax.models import conv
from nearid_jax.models import conv_ae
from nearid_jax.models import resnet
from nearid_jax.models import vit

KEY = jax.random.key(0)


def _init_shapes(model, x, **kwargs):
  """(output shape, {layer: shape}, variable shapes), traced only."""
  (out, reps), variables = jax.eval_shape(
      lambda k: model.init_with_output(k, x, **kwargs), KEY)
  return out.shape, {k: v.shape for k, v in reps.items()}, variables


# --- documented shapes -------------------------------------------------------


@pytest.mark.parametrize("size,shape,variational", [
    ("tiny", (16, 16, 1), False), ("small", (32, 32, 3), True),
    ("full", (64, 64, 3), False)])
def test_conv_autoencoder_layers_have_documented_shapes(size, shape,
                                                        variational):
  cfg = conv_ae.default_config(size, latent_dim=12, variational=variational)
  model = models.build_model(cfg, {"obs_shape": shape})
  n = 3
  out, reps, variables = _init_shapes(model, jnp.zeros((n,) + shape))
  assert out == (n,) + shape
  assert set(reps) == set(model.layer_names())
  side = shape[0]
  for i, (c, s) in enumerate(zip(cfg.encoder_widths, cfg.encoder_strides)):
    side //= s
    assert reps[f"enc_{i}"] == (n, side, side, c)
  assert reps["features"] == (n, cfg.encoder_dense[-1])
  assert reps["latent"] == (n, 12)
  if variational:
    assert reps["latent_sigma"] == (n, 12)
  assert reps["style"] == (n, cfg.decoder_dense[-1])
  for i, (c, s) in enumerate(zip(cfg.decoder_widths, cfg.decoder_strides)):
    side *= s
    assert reps[f"dec_{i}"] == (n, side, side, c)
  assert reps["output"] == (n,) + shape
  if size == "full":  # the published widths: 32 -> 256 over 12 blocks
    assert len(cfg.encoder_widths) == len(cfg.decoder_widths) == 12
    kernel = variables["params"]["encoder"]["enc_11"]["conv"]["kernel"]
    assert kernel.shape == (4, 4, 256, 256)


@pytest.mark.parametrize("size,shape,n_visible", [
    ("tiny", (16, 16, 5), 4), ("tiny", (16, 16, 5), None),
    ("vit_b16", (64, 64, 3), 4)])
def test_vit_mae_layers_have_documented_shapes(size, shape, n_visible):
  cfg = vit.default_config(size)
  model = models.build_model(cfg, {"obs_shape": shape})
  n, t, d = 2, (shape[0] // cfg.patch_size) ** 2, cfg.width
  visible = (None if n_visible is None
             else jnp.tile(jnp.arange(n_visible), (n, 1)))
  v = t if n_visible is None else n_visible
  out, reps, _ = _init_shapes(model, jnp.zeros((n,) + shape),
                              visible=visible)
  assert out == (n, t, cfg.patch_size ** 2 * shape[-1])
  assert set(reps) == set(model.layer_names())
  assert reps["patch_embed"] == (n, v, d)
  for i in range(cfg.depth):
    assert reps[f"block_{i}"] == (n, 1 + v, d)
    assert reps[f"block_{i}/cls"] == reps[f"block_{i}/mean"] == (n, d)
  assert reps["latent"] == reps["patch_mean"] == (n, d)
  assert reps["output"] == out


@pytest.mark.parametrize("cfg,shape", [
    (resnet.resnet_config("tiny", norm="batch"), (16, 16, 1)),
    (resnet.resnet_config("resnet18", norm="group"), (64, 64, 3)),
    (resnet.resnet_config("resnet18", stem="imagenet"), (64, 64, 3)),
    (resnet.cnn_config("batch"), (32, 32, 3))])
def test_classifier_layers_have_documented_shapes(cfg, shape):
  model = models.build_model(cfg, {"obs_shape": shape, "num_classes": 7})
  n = 2
  out, reps, variables = _init_shapes(model, jnp.zeros((n,) + shape))
  assert out == (n, 7) and reps["logits"] == (n, 7)
  assert set(reps) == set(model.layer_names())
  assert ("batch_stats" in variables) == (cfg.norm == "batch")
  if cfg.name == "cnn_classifier":
    side = shape[0]
    for i, (c, s) in enumerate(zip(cfg.widths, cfg.strides)):
      side //= s
      assert reps[f"conv_{i}"] == (n, side, side, c)
    assert reps["latent"] == (n, cfg.latent_dim)
    return
  side = shape[0] // (4 if cfg.stem == "imagenet" else 1)
  assert reps["stem"] == (n, side, side, cfg.width)
  for s in range(len(cfg.stage_sizes)):
    side //= 2 if s else 1
    assert reps[f"stage_{s}"] == (n, side, side, cfg.width * 2 ** s)
  assert reps["latent"] == (n, cfg.width * 2 ** (len(cfg.stage_sizes) - 1))
  if cfg.size == "resnet18":  # 11.2M parameters without the 1000-way head
    count = sum(math.prod(p.shape)
                for p in jax.tree.leaves(variables["params"]))
    assert 11.1e6 < count < 11.3e6


def test_bad_geometry_and_data_rank_are_clear_errors():
  with pytest.raises(ValueError, match="strides"):
    models.build_model(conv_ae.default_config("full"),
                       {"obs_shape": (16, 16, 1)})
  with pytest.raises(ValueError, match="patch_size"):
    models.build_model(vit.default_config("vit_s16"),
                       {"obs_shape": (20, 20, 3)})
  with pytest.raises(ValueError, match="needs images"):
    models.build_model(conv_ae.default_config("tiny"), {"obs_shape": (16,)})
  with pytest.raises(ValueError, match="cannot serve"):
    models.check_objective("conv_ae", "classifier")


# --- pure numerics -------------------------------------------------------------


def test_sincos_positions_match_the_closed_form_inner_product():
  dim, h, w = 16, 3, 4
  emb = vit.sincos_2d(h, w, dim)
  assert emb.shape == (h * w, dim)
  omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
  rows, cols = np.divmod(np.arange(h * w), w)
  dr = rows[:, None, None] - rows[None, :, None]
  dc = cols[:, None, None] - cols[None, :, None]
  expected = (np.cos(dc * omega).sum(-1) + np.cos(dr * omega).sum(-1))
  np.testing.assert_allclose(emb @ emb.T, expected, atol=1e-5)
  np.testing.assert_allclose(emb[w + 2, :dim // 4], np.sin(2 * omega),
                             atol=1e-6)  # row 1, column 2: column first


def test_patchify_round_trip_and_patch_content():
  x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  p = vit.patchify(jnp.asarray(x), 4)
  assert p.shape == (2, 6, 48)
  # Patch 4 is grid row 1, column 1 (3 patches per row).
  np.testing.assert_array_equal(p[1, 4], x[1, 4:8, 4:8].reshape(-1))
  np.testing.assert_array_equal(vit.unpatchify(p, 4, 8, 12), x)


@pytest.mark.parametrize("kernel,stride,pad,side", [
    (3, 1, (1, 1), 8), (4, 2, (1, 1), 9), (3, 2, (0, 1), 8), (1, 2, (0, 0), 8),
    (7, 2, (3, 3), 10)])
def test_conv2d_gradients_equal_autodiff(kernel, stride, pad, side):
  # conv.conv2d's hand-written VJP (canonical convolutions, fast inside
  # XLA:CPU loops) against autodiff of lax.conv_general_dilated.
  rng = np.random.default_rng(kernel + side)
  x = jnp.asarray(rng.normal(size=(2, side, side, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  padding = (pad, pad)
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride,) * 2, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, w: conv.conv2d(x, w, (stride,) * 2, padding)
  y, vjp_ref = jax.vjp(ref, x, w)
  y2, vjp_ours = jax.vjp(ours, x, w)
  np.testing.assert_allclose(y2, y, atol=1e-5)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for a, b in zip(vjp_ours(g), vjp_ref(g)):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (3, 1)])
def test_transposed_conv_is_the_gradient_of_a_strided_conv(kernel, stride):
  # The definition: a transposed conv is the VJP of the conv it transposes.
  rng = np.random.default_rng(0)
  pad = (kernel - stride) // 2
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  conv = lambda y: jax.lax.conv_general_dilated(
      y, jnp.swapaxes(w, 2, 3), (stride,) * 2, ((pad, pad),) * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _, vjp = jax.vjp(conv, jnp.zeros((2, 5 * stride, 6 * stride, 4)))
  np.testing.assert_allclose(conv_ae.conv_transpose(x, w, stride, pad),
                             vjp(x)[0], atol=1e-5)


def test_gaussian_kl_matches_numerical_integration():
  mean = np.array([[0.3, -1.2]])
  sigma = np.array([[0.5, 1.7]])
  ref = 0.0
  for m, s in zip(mean[0], sigma[0]):
    p, q = stats.norm(m, s), stats.norm(0, 1)
    ref += integrate.quad(lambda z: p.pdf(z) * (p.logpdf(z) - q.logpdf(z)),
                          -30, 30)[0]
  got = objectives.gaussian_kl(jnp.asarray(mean), jnp.asarray(sigma))
  np.testing.assert_allclose(got, [ref], rtol=1e-5)


def test_tc_decomposition_matches_brute_force():
  rng = np.random.default_rng(1)
  m, d, big_n = 6, 3, 1000
  mean = rng.normal(size=(m, d))
  sigma = rng.uniform(0.3, 1.5, size=(m, d))
  z = mean + sigma * rng.normal(size=(m, d))
  got = objectives.tc_decomposition(jnp.asarray(z), jnp.asarray(mean),
                                    jnp.asarray(sigma), big_n)
  log_qz_x = stats.norm.logpdf(z, mean, sigma).sum(-1)
  log_pz = stats.norm.logpdf(z).sum(-1)
  log_qz, log_prod = np.zeros(m), np.zeros(m)
  for i in range(m):
    comp = np.array([stats.norm.logpdf(z[i], mean[j], sigma[j])
                     for j in range(m)])  # [j, k]
    log_qz[i] = special.logsumexp(comp.sum(-1)) - np.log(big_n * m)
    log_prod[i] = (special.logsumexp(comp, axis=0) - np.log(big_n * m)).sum()
  np.testing.assert_allclose(got["mutual_information"], log_qz_x - log_qz,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got["total_correlation"], log_qz - log_prod,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got["dimension_wise_kl"], log_prod - log_pz,
                             rtol=1e-4, atol=1e-4)
  total = sum(np.asarray(v) for v in got.values())
  np.testing.assert_allclose(total, log_qz_x - log_pz, rtol=1e-4, atol=1e-4)


def test_beta_tcvae_needs_a_dataset_size():
  model = models.build_model(conv_ae.default_config("tiny", 4, True),
                             {"obs_shape": (16, 16, 1)})
  with pytest.raises(ValueError, match="dataset_size"):
    objectives.build_loss("beta_tcvae", model, {}, None, {})


# --- training on tiny data -----------------------------------------------------


@pytest.fixture(scope="module")
def batch():
  """16 dSprites images at 16x16 with positive partners (one factor moved)."""
  c = images.default_config()
  c.image_size, c.positive_pairs = 16, True
  return images.ImageData(c).sample(jax.random.key(3), 16)


def _model_for(name):
  spec = {"obs_shape": (16, 16, 1), "num_classes": 3}
  if name in ("autoencoder", "bioae"):
    return models.build_model(conv_ae.default_config("tiny", 4), spec)
  if name in ("beta_vae", "beta_tcvae"):
    return models.build_model(conv_ae.default_config("tiny", 4, True), spec)
  if name == "masked_autoencoder":
    return models.build_model(vit.default_config("tiny"), spec)
  if name == "classifier":
    return models.build_model(resnet.resnet_config("tiny"), spec)
  if name == "qlae":
    cfg = conv_ae.default_config("tiny", 4)
    cfg.name = "conv_qlae"
    return models.build_model(cfg, spec)
  cfg = conv_ae.default_config("tiny", 4)
  cfg.name = "conv_encoder"
  return models.build_model(cfg, spec)


_INITS = {}


def _init(name):
  model = _model_for(name)
  key = (type(model), getattr(model, "variational", None))
  if key not in _INITS:  # conv models shared by two objectives init once
    _INITS[key] = jax.jit(model.init)(jax.random.key(1),
                                      jnp.zeros((2, 16, 16, 1)))
  return model, _INITS[key]


@pytest.mark.parametrize("name", ["autoencoder", "beta_vae", "beta_tcvae",
                                  "bioae", "qlae", "masked_autoencoder",
                                  "classifier", "infonce"])
def test_each_objective_decreases_its_loss_on_tiny_data(batch, name):
  model, variables = _init(name)
  cfg = ml_collections.ConfigDict(dict(reconstruction="sigmoid_ce",
                                       mask_ratio=0.75, dataset_size=737280,
                                       beta=2.0))
  loss_fn = objectives.build_loss(name, model, {}, cfg)
  tx = optax.adam(3e-3)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}

  def step(carry, _):
    params, state, opt = carry
    # A fixed key: the loss is a deterministic function of the params, so
    # its decrease is not sampling noise.
    (loss, aux), grads = jax.value_and_grad(
        lambda p: loss_fn({"params": p, **state}, batch, jax.random.key(7)),
        has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates),
            aux.pop("model_state", state), opt), loss

  (_, new_state, _), losses = jax.jit(
      lambda p, s: jax.lax.scan(step, (p, s, tx.init(p)), None, length=12))(
          params, state)
  losses = np.asarray(losses)
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < 0.9 * losses[0], losses
  if name == "classifier":  # BatchNorm statistics moved with the batches
    before = jax.tree.leaves(state["batch_stats"])[0]
    after = jax.tree.leaves(new_state["batch_stats"])[0]
    assert not np.allclose(before, after)


def test_mae_encoder_never_sees_masked_patches(batch):
  model, variables = _init("masked_autoencoder")
  x = batch["x"]
  n, t, p = x.shape[0], model.num_patches, model.patch_size
  order = jnp.argsort(jax.random.uniform(jax.random.key(5), (n, t)), axis=1)
  visible = jnp.sort(order[:, :t // 4], axis=1)
  hidden = np.ones((n, t), bool)
  hidden[np.arange(n)[:, None], np.asarray(visible)] = False
  pixel_hidden = np.asarray(vit.unpatchify(
      jnp.repeat(jnp.asarray(hidden, jnp.float32)[..., None], p * p, -1),
      p, 16, 16)) > 0
  noise = np.random.default_rng(0).uniform(size=x.shape).astype(np.float32)
  x_changed = np.where(pixel_hidden, noise, x)
  assert np.abs(x_changed - x).max() > 0.5
  apply = jax.jit(lambda xx: model.apply(variables, xx, visible=visible))
  (out1, reps1), (out2, reps2) = apply(x), apply(jnp.asarray(x_changed))
  for layer in model.layer_names():
    np.testing.assert_array_equal(reps1[layer], reps2[layer], err_msg=layer)
  np.testing.assert_array_equal(out1, out2)
  # Control: a visible pixel does reach the encoder.
  x_vis = np.where(pixel_hidden, x, noise)
  _, reps3 = apply(jnp.asarray(x_vis))
  assert not np.allclose(reps3["latent"], reps1["latent"])


def test_batchnorm_train_vs_eval_mode(batch):
  model, variables = _init("classifier")
  x = batch["x"]
  f_eval = jax.jit(lambda xx: objectives.apply_model(
      model, variables, xx, train=False)[:2])
  f_train = jax.jit(lambda xx: objectives.apply_model(
      model, variables, xx, train=True))
  # Eval mode: a row's output does not depend on the other rows.
  full, _ = f_eval(x)
  np.testing.assert_allclose(f_eval(x[:4])[0], full[:4], rtol=1e-5,
                             atol=1e-6)
  # Train mode: batch statistics couple the rows and update the state.
  out_a, _, state_a = f_train(x)
  out_b, _, _ = f_train(x[:4])
  assert not np.allclose(out_b, out_a[:4], atol=1e-4)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       state_a["batch_stats"], variables["batch_stats"])
  assert max(jax.tree.leaves(moved)) > 0
  # The evaluation helper of the trainer drops no state for stateless models.
  ae, ae_vars = _init("autoencoder")
  assert objectives.apply_model(ae, ae_vars, x, train=True)[2] is None


def test_decode_inverts_nothing_but_reproduces_the_decoder(batch):
  model, variables = _init("autoencoder")
  out, reps = jax.jit(model.apply)(variables, batch["x"])
  dec = jax.jit(lambda z: model.apply(variables, z, method="decode"))
  np.testing.assert_allclose(dec(reps["latent"]), out, rtol=1e-4, atol=1e-5)
  assert dec(reps["latent"][:3][None]).shape == (1, 3, 16, 16, 1)
  clf, clf_vars = _init("classifier")
  logits, creps = jax.jit(clf.apply)(clf_vars, batch["x"])
  np.testing.assert_allclose(
      clf.apply(clf_vars, creps["latent"], method="decode"), logits,
      rtol=1e-4, atol=1e-5)


def test_mlp_autoencoder_takes_image_shaped_inputs():
  cfg = ml_collections.ConfigDict(dict(
      name="mlp_ae", encoder_widths=(8,), decoder_widths=(8,),
      activation="leaky_relu", negative_slope=0.2, latent_dim=3))
  model = models.build_model(cfg, {"obs_shape": (8, 8, 1)})
  x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1))
  v = model.init(jax.random.key(1), x)
  out, reps = model.apply(v, x)
  assert out.shape == x.shape and reps["latent"].shape == (5, 3)
  flat = models.build_model(cfg, {"obs_shape": (64,)})
  out_flat, _ = flat.apply(v, x.reshape(5, 64))  # same parameters
  np.testing.assert_allclose(out.reshape(5, 64), out_flat, rtol=1e-6)
  np.testing.assert_allclose(
      model.apply(v, reps["latent"], method="decode"), out, rtol=1e-6)
