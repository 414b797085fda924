"""Tests of the Cell Painting-like simulator."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nearid_jax.data import cells
from nearid_jax.data import embeddings

SIM = cells.CellPainting(num_genes=6, num_experiments=3,
                         plates_per_experiment=2, seed=1)
N = 32  # one batch size everywhere: one compile
_SIMULATE = jax.jit(SIM.simulate)


def _wells(gene, exp, plate=0, row=5, col=7, n=N):
  idx = np.zeros((n, 5), np.int32)
  idx[:] = [gene, 0, plate, row, col]
  idx[:, 1] = exp
  return idx


def _channel_means(idx, seed):
  images = _SIMULATE(jax.random.key(seed), jnp.asarray(idx))["images"]
  return np.asarray(images).mean((1, 2))


def test_sample_shapes_range_and_determinism():
  images, idx, values = SIM.sample(jax.random.key(0), N)
  chex.assert_shape(images, (N, 64, 64, 5))
  chex.assert_shape(idx, (N, 5))
  assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
  np.testing.assert_array_equal(values, np.asarray(idx, np.float32))
  again = SIM.sample(jax.random.key(0), N)
  np.testing.assert_array_equal(again[0], images)
  assert not np.array_equal(SIM.sample(jax.random.key(1), N)[0], images)
  assert SIM.factor_sizes == (7, 3, 2, 16, 24)
  # simulate() with the sampler's nuisance key gives the same images, with
  # the truth behind them.
  k_img = jax.random.split(jax.random.key(0))[1]
  truth = _SIMULATE(k_img, idx)
  np.testing.assert_allclose(truth["images"], images, atol=1e-5)
  chex.assert_shape(truth["cell_features"], (N, 6, len(cells.FEATURES)))
  np.testing.assert_allclose(truth["gene_effect"],
                             SIM.gene_effects[np.asarray(idx[:, 0])])
  # Cell features scatter around the gene effect with unit spread.
  resid = truth["cell_features"] - truth["gene_effect"][:, None]
  assert abs(float(resid.mean())) < 0.1 and abs(float(resid.std()) - 1) < 0.1


def test_control_fraction_of_sampled_wells():
  draw = jax.jit(SIM._sample_indices, static_argnums=1)  # pylint: disable=protected-access
  idx = np.asarray(draw(jax.random.key(2), 4000))
  frac = float((idx[:, 0] == 0).mean())
  assert abs(frac - 0.25) < 0.03  # binomial sd ~ 0.007
  knockouts = np.bincount(idx[idx[:, 0] > 0, 0], minlength=7)[1:]
  assert knockouts.min() > 0.7 * knockouts.mean()


def test_gene_effects_are_sparse_and_controls_null():
  eff = SIM.gene_effects
  assert eff.shape == (7, len(cells.FEATURES))
  np.testing.assert_array_equal(eff[0], 0.0)
  nz = (eff[1:] != 0).sum(1)
  assert ((nz >= 2) & (nz <= 3)).all()
  mags = np.abs(eff[1:][eff[1:] != 0])
  assert mags.min() >= 0.6 and mags.max() <= 1.2


def test_batch_effects_follow_the_exposed_gains():
  # Control wells at one interior position, spread over experiments and
  # plates: each well's mean intensity tracks its true technical gain.
  rng = np.random.default_rng(0)
  idx = _wells(0, rng.integers(0, 3, N), plate=0)
  idx[:, 2] = rng.integers(0, 2, N)
  m = _channel_means(idx, 0)
  tech = SIM.technical_factors(idx)
  for c in range(5):
    r = np.corrcoef(m[:, c], tech["gain"][:, c] + 3 * tech["offset"][:, c])
    assert r[0, 1] > 0.6, (cells.CHANNELS[c], r[0, 1])
  # Experiments differ far more than wells within an experiment do.
  groups = [m[idx[:, 1] == e, 2] for e in range(3)]
  between = np.var([g.mean() for g in groups])
  within = np.mean([g.var() for g in groups]) / N * 3
  assert between > 10 * within


def test_knockout_shift_is_visible_within_one_batch():
  eff = SIM.gene_effects
  # A knock-out that moves a channel intensity (features 3..7).
  g, f = next((g, f) for g in range(1, 7) for f in range(3, 8)
              if abs(eff[g, f]) > 0.6)
  c = f - 3
  ko = _channel_means(_wells(g, 0), 1)[:, c]
  ctrl = _channel_means(_wells(0, 0), 2)[:, c]
  t = (ko.mean() - ctrl.mean()) / np.sqrt(ko.var() / N + ctrl.var() / N)
  assert np.sign(t) == np.sign(eff[g, f]) and abs(t) > 3, t


def test_no_batch_effects_when_strength_is_zero():
  flat = cells.CellPainting(num_genes=6, num_experiments=3,
                            plates_per_experiment=2, seed=1,
                            batch_strength=0.0, image_size=24,
                            cells_per_image=2)
  idx = np.array([[2, e, 1, 0, 0] for e in range(3)], np.int32)
  t = flat.technical_factors(idx)
  np.testing.assert_allclose(t["gain"], 1.0)
  np.testing.assert_allclose(t["offset"], 0.0)
  np.testing.assert_allclose(t["crosstalk"], np.tile(np.eye(5), (3, 1, 1)))
  np.testing.assert_allclose(t["vignetting"], 0.0)
  # Same cells (one key per row, equal across rows), three experiments:
  # the same image.
  keys = jnp.stack([jax.random.key(4)] * 3)
  render = jax.jit(jax.vmap(flat._render))  # pylint: disable=protected-access
  imgs = np.asarray(render(jnp.asarray(idx, jnp.float32), keys))
  np.testing.assert_allclose(imgs[0], imgs[1], atol=1e-6)
  np.testing.assert_allclose(imgs[0], imgs[2], atol=1e-6)


def test_edge_wells_are_dimmer():
  idx = np.array([[0, 0, 0, 0, 5], [0, 0, 0, 3, 5], [0, 0, 0, 15, 23]],
                 np.int32)
  gain = SIM.technical_factors(idx)["gain"]
  np.testing.assert_allclose(gain[0] / gain[1], 0.8, rtol=1e-5)
  np.testing.assert_allclose(gain[2], gain[0], rtol=1e-5)


def test_design_and_metadata_look_like_an_rxrx3_screen():
  idx = SIM.design(jax.random.key(0))
  assert idx.shape == (3 * 2 * 384, 5)
  plate0 = idx[(idx[:, 1] == 0) & (idx[:, 2] == 0)]
  assert (plate0[:, 0] == 0).sum() == 96
  counts = np.bincount(plate0[:, 0], minlength=7)[1:]
  assert counts.max() - counts.min() <= 1
  assert len({(r, c) for r, c in plate0[:, 3:]}) == 384
  meta = SIM.well_metadata(idx)
  assert tuple(meta) == embeddings.METADATA_COLUMNS
  assert len(set(meta["well_id"])) == len(idx)
  assert meta["address"][0][0] in "ABCDEFGHIJKLMNOP" and len(
      meta["address"][0]) == 3
  assert set(meta["well_type_label"][idx[:, 0] == 0]) == {"control"}
  assert set(meta["gene"][idx[:, 0] == 3]) == {"GENE003"}
  # The metadata join round-trips through an embeddings table.
  x = np.random.default_rng(0).normal(size=(len(idx), 4))
  table = embeddings.from_arrays(meta["well_id"], x, meta)
  np.testing.assert_array_equal(table.codes("gene")[0] == 0, idx[:, 0] == 0)


def test_bad_input():
  with pytest.raises(ValueError, match="num_genes must be >= 1"):
    cells.CellPainting(num_genes=0)
  with pytest.raises(ValueError, match="control_fraction"):
    cells.CellPainting(control_fraction=1.5)
  with pytest.raises(TypeError, match="key is required"):
    SIM.render(np.zeros(5, np.int32))
  with pytest.raises(ValueError, match="'gene' = 7, allowed 0..6"):
    SIM.render(np.array([7, 0, 0, 0, 0], np.int32), jax.random.key(0))
  with pytest.raises(ValueError, match="'row' = 16"):
    SIM.well_metadata(np.array([[0, 0, 0, 16, 0]]))
