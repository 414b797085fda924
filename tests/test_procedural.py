"""Tests of the procedural benchmarks and the ground-truth interface."""
import colorsys

import chex
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nearid_jax.data import errors
from nearid_jax.data import ground_truth
from nearid_jax.data import procedural
from nearid_jax.data import registry
from nearid_jax.data.procedural import dsprites as dsprites_lib
from nearid_jax.data.procedural import shapes3d as shapes3d_lib

DS = procedural.DSprites()
S3 = procedural.Shapes3D()


def _grid_images(ds, subgrid, batch_size=256):
  ims, idx = [], []
  for im, i, _ in ds.enumerate_grid(batch_size, subgrid=subgrid):
    ims.append(np.asarray(im))
    idx.append(np.asarray(i))
  return np.concatenate(ims), np.concatenate(idx)


def _mean_sq_dist(images):
  x = images.reshape(len(images), -1).astype(np.float64)
  sq = (x * x).sum(1)
  d2 = np.maximum(sq[:, None] + sq[None] - 2.0 * x @ x.T, 0.0) / x.shape[1]
  iu = np.triu_indices(len(x), 1)
  return d2[iu], iu


# ---- the interface ---------------------------------------------------------


@pytest.mark.parametrize("ds", [DS, S3, procedural.ColorDSprites(),
                                procedural.NoisyDSprites()],
                         ids=lambda d: d.name)
def test_sample_triple(ds):
  images, idx, values = ds.sample(jax.random.key(0), 6)
  chex.assert_shape(images, (6,) + ds.observation_shape)
  chex.assert_shape(idx, (6, ds.num_factors))
  assert images.dtype == jnp.float32 and idx.dtype == jnp.int32
  assert values.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  assert (np.asarray(idx) < np.asarray(ds.factor_sizes)).all()
  np.testing.assert_allclose(values, ds.indices_to_values(idx))
  # Same key, same batch; another key, another batch.
  again = ds.sample(jax.random.key(0), 6)
  np.testing.assert_array_equal(again[0], images)
  assert not np.array_equal(ds.sample(jax.random.key(1), 6)[1], idx)


def test_published_grids():
  assert DS.factor_sizes == (3, 6, 40, 32, 32) and DS.num_examples == 737280
  assert DS.observation_shape == (64, 64, 1)
  np.testing.assert_allclose(DS.factor_values[1], np.linspace(0.5, 1, 6))
  np.testing.assert_allclose(DS.factor_values[2],
                             np.arange(40) * 2 * np.pi / 40, rtol=1e-6)
  assert DS.factor_values[2].max() < 2 * np.pi
  assert S3.factor_sizes == (10, 10, 10, 8, 4, 15) and len(S3) == 480000
  np.testing.assert_allclose(S3.factor_values[0], np.arange(10) / 10)
  np.testing.assert_allclose(S3.factor_values[3], np.linspace(0.75, 1.25, 8))
  np.testing.assert_allclose(S3.factor_values[5], np.linspace(-30, 30, 15))


def test_sample_inside_jit_vmapped_over_seeds_compiles_once():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(keys):
    images, _, values = jax.vmap(lambda k: DS.sample(k, 4))(keys)
    return images.mean((1, 2, 3, 4)), values

  m, v = step(jax.random.split(jax.random.key(0), 3))
  step(jax.random.split(jax.random.key(1), 3))
  chex.assert_shape(m, (3,))
  chex.assert_shape(v, (3, 4, 5))


def test_sample_fixed_holds_the_factor_and_flags_invalid_under_jit():
  images, idx, _ = DS.sample_fixed(jax.random.key(0), 16, "scale", 4)
  assert (np.asarray(idx[:, 1]) == 4).all()
  assert len(np.unique(np.asarray(idx[:, 3]))) > 1  # others still vary
  fixed = jax.jit(lambda k, f, v: DS.sample_fixed(k, 8, f, v))
  images, idx, _ = fixed(jax.random.key(1), 2, 17)
  assert (np.asarray(idx[:, 2]) == 17).all() and np.isfinite(images).all()
  bad, _, _ = fixed(jax.random.key(1), 2, 40)      # orientation 40 is off
  assert np.isnan(bad).all()
  bad, _, _ = fixed(jax.random.key(1), 5, 0)       # no factor 5
  assert np.isnan(bad).all()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 4), st.data())
def test_sample_fixed_any_factor_value(factor, data):
  value = data.draw(st.integers(0, DS.factor_sizes[factor] - 1))
  _, idx, values = _FIXED(jax.random.key(value), factor, value)
  assert (np.asarray(idx[:, factor]) == value).all()
  np.testing.assert_allclose(values[:, factor],
                             DS.factor_values[factor][value], rtol=1e-6)


_FIXED = jax.jit(lambda k, f, v: DS.sample_fixed(k, 4, f, v))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_index_value_flat_roundtrips(seeds):
  flat = np.array(seeds) % DS.num_examples
  idx = DS.unflat_index(flat)
  np.testing.assert_array_equal(DS.flat_index(idx), flat)
  values = np.asarray(DS.indices_to_values(jnp.asarray(idx)))
  np.testing.assert_array_equal(DS.values_to_indices(values), idx)


def test_all_factor_indices_is_the_row_major_published_order():
  grid = DS.all_factor_indices()
  assert grid.shape == (737280, 5) and grid.dtype == np.int32
  np.testing.assert_array_equal(grid[1], [0, 0, 0, 0, 1])
  np.testing.assert_array_equal(grid[32], [0, 0, 0, 1, 0])
  np.testing.assert_array_equal(DS.flat_index(grid[::997]),
                                np.arange(0, 737280, 997))
  sub = S3.all_factor_indices({"shape": [1, 3], "orientation": [0]})
  assert len(sub) == 10 * 10 * 10 * 8 * 2
  assert set(sub[:, 4]) == {1, 3} and set(sub[:, 5]) == {0}


def test_enumerate_grid_chunks_match_render():
  sub = {"shape": [2], "scale": [5], "orientation": [0, 1, 2],
         "y_position": [9]}
  chunks = list(DS.enumerate_grid(batch_size=40, subgrid=sub))
  assert [len(c[1]) for c in chunks] == [40, 40, 16]
  idx = np.concatenate([np.asarray(c[1]) for c in chunks])
  np.testing.assert_array_equal(idx, DS.all_factor_indices(sub))
  np.testing.assert_allclose(chunks[2][0], DS.render(chunks[2][1]))


# ---- bad input ---------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="orientation.*= 40, allowed 0..39"):
    DS.render(np.array([0, 0, 40, 0, 0]))
  with pytest.raises(TypeError, match="integer array"):
    DS.render(np.zeros(5))
  with pytest.raises(ValueError, match=r"shape \[..., 5\]"):
    DS.render(np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="'scale' = 0.4, allowed"):
    DS.render_values(np.array([1.0, 0.4, 0.0, 0.0, 0.0]))
  with pytest.raises(ValueError, match="NaN"):
    DS.render_values(np.array([1.0, np.nan, 0.0, 0.0, 0.0]))
  with pytest.raises(ValueError, match="unknown factor 'colour'"):
    DS.sample_fixed(jax.random.key(0), 2, "colour", 0)
  with pytest.raises(ValueError, match=r"value must be an index in \[0, 6\)"):
    DS.sample_fixed(jax.random.key(0), 2, "scale", 6)
  with pytest.raises(TypeError, match="static Python int"):
    DS.sample(jax.random.key(0), 2.0)
  with pytest.raises(TypeError, match="key is required"):
    procedural.NoisyDSprites().render(np.zeros(5, np.int32))
  with pytest.raises(ValueError, match="off the dsprites grid"):
    DS.values_to_indices(np.array([1.0, 0.55, 0.0, 0.0, 0.0]))
  with pytest.raises(errors.UnknownDatasetError, match="known datasets:.*"
                     "shapes3d"):
    registry.get("shapes4d")
  with pytest.raises(ValueError, match="disjoint"):
    procedural.CorrelatedFactors(DS, (("scale", "shape"), ("shape", "x_"
                                                           "position")))


def test_render_under_jit_gives_nan_for_out_of_grid_indices():
  f = jax.jit(DS.render)
  ok = f(jnp.array([[0, 1, 2, 3, 4]]))
  bad = f(jnp.array([[3, 1, 2, 3, 4]]))
  assert np.isfinite(ok).all() and np.isnan(bad).all()


# ---- faithfulness ------------------------------------------------------------


_HEART_AREA = (0.5 + np.pi / 8) / dsprites_lib._HEART_HEIGHT ** 2
_AREAS = {0: 1.0, 1: np.pi * 0.55 * 0.27, 2: _HEART_AREA}


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2), st.integers(0, 5), st.integers(0, 39),
       st.integers(10, 21), st.integers(10, 21))
def test_sprite_area_matches_closed_form_at_any_pose(shape, scale, orient,
                                                     x, y):
  # The anti-aliased coverage integrates to the shape's area, whatever the
  # rotation and position (away from the border).
  img = _RENDER(jnp.array([[shape, scale, orient, x, y]], jnp.int32))
  unit_px = dsprites_lib._BASE_SIZE * DS.factor_values[1][scale] * 64
  want = _AREAS[shape] * unit_px ** 2
  np.testing.assert_allclose(float(img.sum()), want, rtol=0.02)


_RENDER = jax.jit(DS.render)


def test_binary_option_gives_binary_images_of_the_same_area():
  b = procedural.DSprites(antialias=False)
  idx = np.array([[2, 5, 3, 16, 16]], np.int32)
  img = np.asarray(b.render(idx))
  assert set(np.unique(img)) <= {0.0, 1.0}
  np.testing.assert_allclose(img.sum(), np.asarray(DS.render(idx)).sum(),
                             rtol=0.05)


def test_heart_points_down_and_is_mirror_symmetric():
  img = np.asarray(DS.render(np.array([2, 5, 0, 15, 15], np.int32)))[..., 0]
  rows = np.flatnonzero(img.sum(1) > 0.5)
  widths = img.sum(1)[rows]
  # Widest in the upper half (two lobes), narrowing to the tip below.
  assert widths.argmax() < len(rows) / 2 and widths[-1] < widths.max() / 3
  # Mirror symmetric about the sprite's vertical axis: the horizontal
  # centroid is the sprite centre and the horizontal skewness is zero.
  x = np.arange(64) + 0.5
  w = img.sum(0) / img.sum()
  centre = (dsprites_lib._POS_LO + (dsprites_lib._POS_HI
                                    - dsprites_lib._POS_LO) * 15 / 31) * 64
  mean = (w * x).sum()
  sd = np.sqrt((w * (x - mean) ** 2).sum())
  assert abs(mean - centre) < 0.05  # px; coverage is approximate
  assert abs((w * (x - mean) ** 3).sum()) / sd ** 3 < 0.01


@pytest.mark.parametrize("antialias", [True, False])
def test_dsprites_unique_except_documented_symmetries(antialias):
  ds = procedural.DSprites(antialias=antialias)
  sub = {"scale": [0, 5], "x_position": [0, 31], "y_position": [7]}
  images, idx = _grid_images(ds, sub)
  d2, (i, j) = _mean_sq_dist(images)
  same = d2 < 1e-9
  a, b = idx[i], idx[j]
  rest_equal = (a[:, [0, 1, 3, 4]] == b[:, [0, 1, 3, 4]]).all(1)
  turn = (a[:, 2] - b[:, 2]) % 40
  documented = rest_equal & (((a[:, 0] == 0) & (turn % 10 == 0))
                             | ((a[:, 0] == 1) & (turn % 20 == 0)))
  np.testing.assert_array_equal(same, documented)
  assert d2[~same].min() > 1e-4  # distinct images differ by >= a pixel


def test_shapes3d_geometries_unique_and_hues_separate():
  geo, idx = _grid_images(S3, {"floor_hue": [0], "wall_hue": [3],
                               "object_hue": [6]}, batch_size=240)
  assert len(geo) == 480
  d2, _ = _mean_sq_dist(geo)
  assert d2.min() > 1e-6, "two scale/shape/orientation images coincide"
  hues, _ = _grid_images(S3, {"floor_hue": [0, 5], "wall_hue": [0, 5],
                              "object_hue": [0, 5], "scale": [7],
                              "shape": [0], "orientation": [7]})
  d2, _ = _mean_sq_dist(hues)
  assert d2.min() > 1e-3


def test_shapes3d_table_equals_the_ray_caster():
  images, _, values = S3.sample(jax.random.key(5), 8)
  direct = S3.render_values(values)
  np.testing.assert_allclose(images, direct, atol=2e-3)


def test_shapes3d_shading_matches_closed_form_lambert():
  # Floor (bottom-left) and wall (top corners) pixels far from the object:
  # albedo x (ambient + (1 - ambient) max(n.l, 0)), with the HSV albedo
  # from the standard library.
  fh, wh = 3, 7
  img = np.asarray(S3.render(np.array([fh, wh, 0, 0, 2, 7], np.int32)))
  light = shapes3d_lib._LIGHT_DIR / np.linalg.norm(shapes3d_lib._LIGHT_DIR)
  amb = shapes3d_lib._AMBIENT

  def albedo(h):
    return np.array(colorsys.hsv_to_rgb(h / 10, shapes3d_lib._SATURATION,
                                        shapes3d_lib._VALUE))

  floor = albedo(fh) * (amb + (1 - amb) * light[1])
  np.testing.assert_allclose(img[63, 0], floor, atol=1e-4)
  walls = [albedo(wh) * (amb + (1 - amb) * max(n, 0.0))
           for n in (-light[2], -light[0])]
  for px in (img[0, 0], img[0, 63]):
    assert min(np.abs(px - w).max() for w in walls) < 1e-4
  # The two walls differ in brightness (the room corner is visible).
  assert np.abs(img[0, 0] - img[0, 63]).max() > 0.02


def test_shapes3d_object_casts_a_shadow_on_the_floor():
  # Red floor, green wall, cyan object: only floor pixels in full shadow
  # have red = 1 x ambient (the wall's and object's red albedo is lower).
  img = np.asarray(S3.render(np.array([0, 3, 5, 7, 0, 7], np.int32)))
  light = shapes3d_lib._LIGHT_DIR / np.linalg.norm(shapes3d_lib._LIGHT_DIR)
  amb = shapes3d_lib._AMBIENT
  red = img[..., 0]
  shadow = np.abs(red - amb) < 2e-3
  lit = np.abs(red - (amb + (1 - amb) * light[1])) < 2e-3
  assert shadow.sum() > 20 and lit.sum() > 500
  # The shadow lies beside the object, below the horizon, not at the border.
  rows, cols = np.nonzero(shadow)
  assert rows.min() > 20 and cols.min() > 20


# ---- harder variants -----------------------------------------------------------


def test_nuisance_variants_change_with_the_key_not_the_sprite():
  idx = np.array([1, 4, 5, 10, 20], np.int32)
  for ds in (procedural.ColorDSprites(), procedural.NoisyDSprites()):
    a = np.asarray(ds.render(idx, jax.random.key(0)))
    b = np.asarray(ds.render(idx, jax.random.key(1)))
    assert a.shape == (64, 64, 3) and np.abs(a - b).max() > 0.05
  coverage = np.asarray(DS.render(idx))[..., 0]
  mask = coverage > 0.999
  col = np.asarray(procedural.ColorDSprites().render(idx, jax.random.key(3)))
  assert (col[mask] >= 0.5 - 1e-6).all() and (col[coverage == 0] == 0).all()
  noisy = np.asarray(procedural.NoisyDSprites().render(idx, jax.random.key(3)))
  np.testing.assert_allclose(noisy[mask], 1.0, atol=1e-6)


def test_correlated_factors_follow_the_kernel():
  ds = registry.get("dsprites_correlated", sigma=0.15)
  _, idx, _ = ds.sample(jax.random.key(0), 4000)
  idx = np.asarray(idx)
  joint = np.zeros((32, 32))
  np.add.at(joint, (idx[:, 3], idx[:, 4]), 1)
  want = np.exp(ds.joint_log_probs())
  # Total variation between the empirical and the target joint is small
  # (a 4000-sample histogram of 1024 cells has TV ~ 0.2 by chance).
  assert 0.5 * np.abs(joint / 4000 - want).sum() < 0.3
  assert np.corrcoef(idx[:, 3], idx[:, 4])[0, 1] > 0.8
  # Uncorrelated factors stay uniform and independent.
  assert abs(np.corrcoef(idx[:, 1], idx[:, 2])[0, 1]) < 0.1
  # Fixing one of the pair draws its partner from the conditional.
  _, fx, _ = ds.sample_fixed(jax.random.key(1), 2000, "x_position", 0)
  fx = np.asarray(fx)
  assert (fx[:, 3] == 0).all()
  cond = want[0] / want[0].sum()
  emp = np.bincount(fx[:, 4], minlength=32) / 2000
  assert 0.5 * np.abs(emp - cond).sum() < 0.1
  assert ds.render(fx[:2]).shape == (2, 64, 64, 1)


def test_registry_builds_every_procedural_dataset():
  for name in registry.PROCEDURAL:
    ds = registry.get(name)
    assert isinstance(ds, ground_truth.GroundTruthDataset)
    meta = ds.metadata
    assert len(meta["factor_names"]) == len(meta["factor_sizes"])
    assert meta["num_examples"] == int(np.prod(ds.factor_sizes))
    assert hash(ds) == hash(registry.get(name))  # a static jit argument
