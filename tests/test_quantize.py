"""Tests of latent quantization (QLAE): quantizer, gradients, losses."""
import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import objectives
from nearid_jax.models import conv_ae
from nearid_jax.models import quantize


def test_nearest_values_match_brute_force():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 3)).astype(np.float32)
  cb = np.sort(rng.normal(size=(3, 7)), axis=1).astype(np.float32)
  q, idx = jax.jit(quantize.nearest_values)(z, cb)
  ref_idx = np.abs(z[:, :, None] - cb[None]).argmin(-1)
  np.testing.assert_array_equal(idx, ref_idx)
  np.testing.assert_array_equal(q, np.take_along_axis(
      np.broadcast_to(cb, (50, 3, 7)), ref_idx[..., None], -1)[..., 0])


def test_straight_through_gradient_is_identity_and_codebook_gets_none():
  z = jnp.array([[0.3, -0.7], [0.1, 0.45]])
  cb = quantize.initial_codebook(2, 3)   # [-0.5, 0, 0.5] per latent
  w = jnp.array([[1.0, 2.0], [3.0, 4.0]])

  def f(z, cb):
    q, _ = quantize.nearest_values(z, cb)
    return jnp.sum(w * quantize.straight_through(z, q))
  gz, gcb = jax.grad(f, argnums=(0, 1))(z, cb)
  np.testing.assert_allclose(gz, w)
  np.testing.assert_allclose(gcb, 0.0)
  q, _ = quantize.nearest_values(z, cb)
  np.testing.assert_allclose(q, [[0.5, -0.5], [0.0, 0.5]])
  np.testing.assert_allclose(quantize.straight_through(z, q), q)


def test_losses_closed_form_and_their_gradients():
  z = jnp.array([[0.3, -0.7], [0.1, 0.45]])
  cb = quantize.initial_codebook(2, 3)

  def losses(z, cb):
    return quantize.quantization_losses(z, quantize.nearest_values(z, cb)[0])
  out = losses(z, cb)
  # (0.3-0.5)², (-0.7+0.5)², (0.1-0)², (0.45-0.5)², mean over 4.
  expect = (0.04 + 0.04 + 0.01 + 0.0025) / 4
  np.testing.assert_allclose(out["quantization"], expect, rtol=1e-6)
  np.testing.assert_allclose(out["commitment"], expect, rtol=1e-6)
  gq = jax.grad(lambda z, cb: losses(z, cb)["quantization"], (0, 1))(z, cb)
  gc = jax.grad(lambda z, cb: losses(z, cb)["commitment"], (0, 1))(z, cb)
  np.testing.assert_allclose(gq[0], 0.0)   # quantization moves the codebook
  np.testing.assert_allclose(gc[1], 0.0)   # commitment moves the encoder
  q = np.array([[0.5, -0.5], [0.0, 0.5]])
  np.testing.assert_allclose(gc[0], 2 * (np.asarray(z) - q) / 4, rtol=1e-6)
  # Latent 0: value 0.5 chosen by z=0.3 (2(0.5-0.3)/4), value 0 by z=0.1
  # (2(0-0.1)/4), value -0.5 by none.
  np.testing.assert_allclose(gq[1][0], [0.0, -0.05, 0.1], atol=1e-7)


def test_qlae_objective_adds_weighted_losses_to_reconstruction():
  model = quantize.QuantizedConvAutoencoder((16, 16, 1), 3,
                                            **conv_ae.SIZES["tiny"])
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1))
  v = model.init(jax.random.key(1), x)
  loss, aux = objectives.build_loss(
      "qlae", model, {}, {"quantization_weight": 0.5,
                          "commitment_weight": 0.25,
                          "reconstruction": "sigmoid_ce"})(v, {"x": x}, None)
  out, reps = model.apply(v, x)
  rec = np.mean(np.asarray(objectives.reconstruction_error(out, x,
                                                           "sigmoid_ce")))
  d = np.mean((np.asarray(reps["latent"])
               - np.asarray(reps["latent_quantized"])) ** 2)
  np.testing.assert_allclose(aux["quantization"], d, rtol=1e-5)
  np.testing.assert_allclose(loss, rec + 0.75 * d, rtol=1e-5)
  # The decoder saw the quantized code: decoding q gives the same logits.
  np.testing.assert_allclose(
      model.apply(v, reps["latent_quantized"], method="decode"), out,
      rtol=1e-5, atol=1e-6)
