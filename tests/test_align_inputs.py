"""align on degenerate and extreme input: x64 mode, near-dead latents,
constant factors, extreme scales (issues 14 and 20).

Shapes and kinds are those of test_align.py (n = 600, d = 4), so most
programs are compiled once for both files.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nearid_jax import align

N, D = 600, 4
ALL = ("identity", "perm", "rigid", "similarity", "linear", "ica")
KEY = jax.random.key(0)
STATS = ("mean", "max", "q99")


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(21)
  s = np.c_[rng.laplace(size=(N, 2)), rng.uniform(-1.7, 1.7, (N, 2))]
  zt = (s @ rng.standard_normal((D, D)).T).astype(np.float32)
  zs = (s @ rng.standard_normal((D, D)).T
        + 0.05 * rng.standard_normal((N, D))).astype(np.float32)
  return zt, zs


def _close(a, b, kinds, rtol, ica_rtol=2e-2):
  for k in kinds:
    for s in STATS:
      np.testing.assert_allclose(float(a[k][s]), float(b[k][s]),
                                 rtol=ica_rtol if k == "ica" else rtol,
                                 atol=1e-6, err_msg=f"{k} {s}")


# --- near-dead latents -------------------------------------------------------


def test_near_dead_source_latent_is_kept_and_scale_free(pair):
  # One source latent with 1e-4 of the others' spread is not collinear:
  # linear and ICA are invariant to a source column's scale, so their ε
  # must not move (was: "rank-deficient ... collinear columns").
  zt, zs = pair
  dead = zs.copy()
  dead[:, 3] = 1e-4 * (zs[:, 3] - zs[:, 3].mean()) + 0.3
  base = align.epsilon(zt, zs, ALL, key=KEY)
  got = align.epsilon(zt, dead, ALL, key=KEY)
  _close(got, base, ("linear",), rtol=1e-3)
  _close(got, base, ("ica",), rtol=2e-2)
  assert got["linear"]["notes"] == ()


def test_dead_latent_dropped_with_a_note(pair):
  zt, zs = pair
  runs = np.stack([zt, zs])
  runs[1, :, 3] *= 1e-7  # below 100 float32 epsilons of the largest spread
  kinds = ("linear",)
  with pytest.warns(UserWarning, match=r"dropped 1 dead latent.*: 3 \("):
    res = align.pairwise_epsilon(runs, kinds, key=KEY)
  assert res.info["dropped_columns"] == (3,)
  assert "run(s) [1]" in res.info["notes"][0]
  want = align.pairwise_epsilon(runs[..., :3], kinds, key=KEY)
  for k in kinds:
    np.testing.assert_allclose(res[k]["mean"], want[k]["mean"], rtol=1e-6)
    assert np.isfinite(np.asarray(res[k]["mean"])).all()


def test_rank_message_states_spreads_and_remedies(pair):
  zt, zs = pair
  coll = np.stack([zt, zs, zs])
  coll[0, :, 3] = coll[0, :, 0] + coll[0, :, 1]
  with pytest.raises(ValueError, match=(
      r"rank-deficient.*run 0.*correlation matrix.*spreads range from "
      r"[0-9.]+ to 1.*collinear.*ridge > 0.*leave 'ica' out")):
    align.pairwise_epsilon(coll, ALL, key=KEY, pair_chunk=4)


# --- factors: constant columns, scale ---------------------------------------


@pytest.fixture(scope="module")
def factors():
  rng = np.random.default_rng(23)
  u = rng.laplace(size=(N, 3)).astype(np.float32)
  zs = np.stack([(u @ rng.standard_normal((D, 3)).T * 2 + 1
                  + 0.05 * rng.standard_normal((N, D))).astype(np.float32)
                 for _ in range(2)])
  return u, zs


def test_structural_drops_a_constant_factor_with_a_note(factors):
  u, zs = factors
  kinds = ("rigid", "linear")
  with_const = np.c_[u[:, :2], np.full((N, 1), 0.1, np.float32)]
  with pytest.warns(UserWarning, match=r"dropped constant column\(s\) \[2\]"):
    res = align.structural(zs, with_const, kinds, key=KEY,
                           with_sources=False)
  assert res.factor_columns == (0, 1)
  want = align.structural(zs, u[:, :2], kinds, key=KEY, with_sources=False)
  for k in kinds:
    assert np.isfinite(np.asarray(res["epsilon"][k]["mean"])).all()
    np.testing.assert_allclose(res["epsilon"][k]["mean"],
                               want["epsilon"][k]["mean"], rtol=1e-6)


def test_structural_scale_of_the_factors_does_not_matter(factors):
  u, zs = factors
  kinds = ("rigid", "linear")  # the programs of the test above (k = 2)
  base = align.structural(zs, u[:, :2], kinds, key=KEY, with_sources=False)
  big = align.structural(zs, u[:, :2] * np.float32(1e20), kinds, key=KEY,
                         with_sources=False)
  for k in kinds:
    np.testing.assert_allclose(big["epsilon"][k]["mean"],
                               base["epsilon"][k]["mean"], rtol=1e-4)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_global_scale_of_the_codes_does_not_matter(pair, scale):
  zt, zs = pair
  base = align.epsilon(zt, zs, ALL, key=KEY)
  s = np.float32(scale)
  got = align.epsilon(zt * s, zs * s, ALL, key=KEY)
  _close(got, base, ALL, rtol=1e-4)
  np.testing.assert_allclose(float(got["rigid"]["diameter"]),
                             float(base["rigid"]["diameter"]) * scale,
                             rtol=1e-5)
  h0 = align.fit_map(zt, zs, "linear")
  h = align.fit_map(zt * s, zs * s, "linear")
  np.testing.assert_allclose(h.matrix, h0.matrix, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(np.asarray(h.offset) / scale, h0.offset,
                             rtol=1e-3, atol=1e-4)


# --- x64 mode ---------------------------------------------------------------


def test_every_public_function_works_under_x64():
  # Small shapes: every program compiles anew in x64 mode. Inputs are exact
  # maps of each other, so every class fits them to rounding.
  rng = np.random.default_rng(25)
  z64 = rng.laplace(size=(64, 2))
  other = -z64[:, ::-1] + 1.0  # a signed permutation plus a shift
  z32, other32 = z64.astype(np.float32), other.astype(np.float32)
  with jax.enable_x64(True):
    # "ica" is left out for time: FastICA's x64 test is in test_ica.py, and
    # its maps meet the same pair engine as "perm"'s.
    got = align.epsilon(z64, other, ("perm", "rigid", "linear"),
                        key=KEY)  # float64 input
    pw = align.pairwise_epsilon([z32, other32], ("perm", "rigid"),
                                key=KEY)  # float32 input
    st = align.structural(np.stack([other32]), z32, ("rigid", "linear"),
                          key=KEY, with_sources=False)
    h = align.fit_map(z64, other, "rigid")
    bl = align.decoder_bi_lipschitz(lambda v: 2.0 * v, jnp.ones((3, 2)))
  for k in ("perm", "rigid", "linear"):
    assert got[k]["mean"].dtype == np.float64
    assert float(got[k]["max"]) < 1e-12, (k, got[k])
  assert pw["rigid"]["mean"].dtype == np.float32
  assert float(np.nanmax(np.asarray(pw["perm"]["max"]))) < 1e-5
  assert float(np.max(st["epsilon"]["linear"]["max"])) < 1e-5
  np.testing.assert_allclose(h.matrix, [[0, -1], [-1, 0]], atol=1e-12)
  assert float(bl["one_plus_l"]) == 2.0 and float(bl["condition"]) == 1.0


def test_decoder_condition_number_is_scale_free():
  w = jnp.asarray(np.diag([3.0, 0.25]))
  for c in (1.0, 100.0):
    out = align.decoder_bi_lipschitz(lambda v, c=c: c * (w @ v),
                                     jnp.ones((4, 2)))
    np.testing.assert_allclose(float(out["condition"]), 12.0, rtol=1e-5)
  np.testing.assert_allclose(float(out["one_plus_l"]), 300.0, rtol=1e-5)
