"""Tests of the synthetic data-generating process against closed forms."""
import math

import jax
import numpy as np
import pytest
from scipy import stats

from nearid_jax.data import synthetic


def _process(**overrides):
  config = synthetic.default_config()
  config.update(overrides)
  return synthetic.make_process(config)


def test_same_key_same_data_different_key_different_data():
  proc = _process()
  a = proc.sample(jax.random.key(3), 64)
  b = _process().sample(jax.random.key(3), 64)  # rebuilt from the config
  c = proc.sample(jax.random.key(4), 64)
  for k in ("x", "u", "label"):
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.allclose(a["x"], c["x"])
  np.testing.assert_array_equal(proc.eval_set()["x"], proc.eval_set()["x"])


@pytest.mark.parametrize("source,beta,excess_kurtosis", [
    ("laplace", None, 3.0),
    ("uniform", None, -1.2),
    # Generalized normal: Γ(5/β)Γ(1/β)/Γ(3/β)² - 3.
    ("gennorm", 4.0, math.gamma(5 / 4) * math.gamma(1 / 4)
     / math.gamma(3 / 4) ** 2 - 3),
    ("gennorm", 1.5, math.gamma(5 / 1.5) * math.gamma(1 / 1.5)
     / math.gamma(3 / 1.5) ** 2 - 3),
])
def test_source_marginals(source, beta, excess_kurtosis):
  proc = _process(source=source, gennorm_beta=beta or 1.0, latent_dim=3)
  u = np.asarray(proc.sample_latents(jax.random.key(0), 200_000), np.float64)
  np.testing.assert_allclose(u.mean(0), 0.0, atol=0.02)
  np.testing.assert_allclose(u.var(0), 1.0, atol=0.03)
  np.testing.assert_allclose(stats.kurtosis(u, axis=0), excess_kurtosis,
                             atol=0.15)
  corr = np.corrcoef(u.T)[np.triu_indices(3, 1)]
  np.testing.assert_allclose(corr, 0.0, atol=0.02)


@pytest.mark.parametrize("source", ["laplace", "uniform", "gennorm"])
def test_gaussian_copula_spearman_and_marginals(source):
  rho = 0.6
  proc = _process(source=source, gennorm_beta=3.0, dependence="copula",
                  correlation=rho, latent_dim=3)
  u = np.asarray(proc.sample_latents(jax.random.key(1), 100_000))
  # Spearman's rho of a Gaussian copula is (6/π) asin(ρ/2).
  expected = 6 / math.pi * math.asin(rho / 2)
  got = stats.spearmanr(u).statistic[np.triu_indices(3, 1)]
  np.testing.assert_allclose(got, expected, atol=0.01)
  # The copula leaves the marginals unchanged: compare to independent draws.
  ref = np.asarray(_process(source=source, gennorm_beta=3.0,
                            latent_dim=3).sample_latents(
                                jax.random.key(2), 100_000))
  for j in range(3):
    assert stats.ks_2samp(u[:, j], ref[:, j]).statistic < 0.01


def test_gennorm_inverse_cdf_matches_scipy():
  config = synthetic.default_config()
  config.update(source="gennorm", gennorm_beta=3.0)
  p = np.linspace(0.001, 0.999, 101)
  got = np.asarray(synthetic._marginal_icdf(config, jax.numpy.asarray(p)))
  scale = synthetic._gennorm_scale(3.0)
  np.testing.assert_allclose(got, stats.gennorm.ppf(p, 3.0) * scale,
                             atol=2e-4)


def test_mixing_of_sources_gives_equicorrelation():
  proc = _process(dependence="mix", correlation=0.4, latent_dim=4)
  u = np.asarray(proc.sample_latents(jax.random.key(0), 100_000))
  got = np.corrcoef(u.T)[np.triu_indices(4, 1)]
  np.testing.assert_allclose(got, 0.4, atol=0.015)


@pytest.mark.parametrize("mixing,layers,alpha,delta", [
    ("mlp", 1, 1.0, 0.0), ("mlp", 3, 1.0, 0.0), ("mlp", 3, 0.3, 0.0),
    ("near_isometric", 2, 1.0, 0.2)])
def test_mixing_bi_lipschitz_bounds(mixing, layers, alpha, delta):
  proc = _process(mixing=mixing, mixing_layers=layers, negative_slope=alpha,
                  isometry_delta=delta, latent_dim=3, obs_dim=7)
  u = proc.sample_latents(jax.random.key(0), 4000)
  v = proc.sample_latents(jax.random.key(1), 4000)
  ratio = np.asarray(np.linalg.norm(proc.mix(u) - proc.mix(v), axis=1)
                     / np.linalg.norm(u - v, axis=1))
  if mixing == "mlp" and alpha == 1.0:
    np.testing.assert_allclose(ratio, 1.0, atol=1e-5)  # an isometry
  elif mixing == "mlp":
    assert ratio.max() <= 1 + 1e-5 and ratio.min() >= alpha ** (layers - 1)
    assert ratio.min() < 0.9  # genuinely nonlinear
  else:
    assert 1 - delta - 1e-5 <= ratio.min() and ratio.max() <= 1 + delta + 1e-5
  bound = synthetic.bi_lipschitz_bound(proc.config)
  assert max(ratio.max(), 1 / ratio.min()) <= bound + 1e-4


def test_labels_are_argmax_of_linear_scores_with_noise_rate():
  proc = _process(num_classes=5)
  u = proc.sample_latents(jax.random.key(0), 50_000)
  clean = np.argmax(np.asarray(u @ proc.label_weights.T + proc.label_bias), 1)
  np.testing.assert_array_equal(proc.labels(jax.random.key(1), u), clean)
  noisy = _process(num_classes=5, label_noise=0.3)
  y = np.asarray(noisy.labels(jax.random.key(1), u))
  # A flipped label lands on the clean one with probability 1/C.
  np.testing.assert_allclose((y != clean).mean(), 0.3 * (1 - 1 / 5),
                             atol=0.01)


@pytest.mark.parametrize("field,value,match", [
    ("obs_dim", 2, "obs_dim.*latent_dim"),
    ("negative_slope", 0.0, "negative_slope"),
    ("source", "cauchy", "unknown source"),
    ("dependence", "copula", "correlation"),  # with correlation = 1, below
    ("mixing", "flow", "unknown mixing"),
    ("label_noise", 1.5, "label_noise"),
])
def test_invalid_configs_name_the_field(field, value, match):
  config = synthetic.default_config()
  config[field] = value
  if field == "dependence":
    config.correlation = 1.0
  with pytest.raises(ValueError, match=match):
    synthetic.make_process(config)
