"""Tests for nearid_jax.metrics against scikit-learn / SciPy references.

One batch of four codes (a linear mixture, an exact permuted rescaled copy of
the factors, a random rotation of that copy, pure noise) is scored once per
metric with R = 4 runs; the references (tests/sklearn_metrics.py) score each
run separately. Shapes are shared so every metric compiles at most twice.
"""
import warnings

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nearid_jax import metrics
from nearid_jax.metrics import dci_score
from nearid_jax.metrics import intervention_scores
import sklearn_metrics as ref

N, D = 1500, 5
SIZES = (3, 5, 8)
RUNS = ("mix", "copy", "rotation", "noise")


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  u = np.stack([rng.integers(0, c, N) for c in SIZES], 1)
  scaled = (u - u.mean(0)) / u.std(0)
  mix = scaled @ rng.standard_normal((3, D)) + 0.3 * rng.standard_normal(
      (N, D))
  # Latents 0..2 are factors 2, 0, 1 rescaled (one negated); 3, 4 are tiny
  # noise, inactive for InfoMEC (range < max range / 20).
  copy = np.concatenate([scaled[:, [2, 0, 1]] * [2.0, -0.5, 1.0],
                         1e-3 * rng.standard_normal((N, 2))], 1)
  q, _ = np.linalg.qr(rng.standard_normal((D, D)))
  full = np.concatenate([scaled[:, [2, 0, 1]],
                         0.3 * rng.standard_normal((N, 2))], 1)
  rotation = full @ q
  noise = rng.standard_normal((N, D))
  zs = np.stack([mix, copy, rotation, noise]).astype(np.float32)
  perm = np.asarray(jax.random.permutation(jax.random.key(0), N))
  n_test = round(N / 3)
  return dict(u=u, zs=zs, test=perm[:n_test], train=perm[n_test:])


def _split(data, r):
  z = data["zs"][r].astype(np.float64)
  tr, te = data["train"], data["test"]
  return z[tr], data["u"][tr], z[te], data["u"][te]


@pytest.fixture(scope="module")
def batched(data):
  """Every metric once on the R = 4 batch (the default split key is 0)."""
  zs, u = data["zs"], data["u"]
  out = {}
  out.update(metrics.infomec(zs, u))
  out.update({f"dci_{k}": v for k, v in metrics.dci(zs, u).items()})
  out.update(metrics.mig(zs, u))
  out.update(metrics.sap(zs, u))
  out.update(metrics.modularity_explicitness(zs, u))
  out["mcc_pearson"] = metrics.mcc(zs, u)["mcc"]
  out["mcc_spearman"] = metrics.mcc(zs, u, method="spearman")["mcc"]
  out.update(metrics.r2(zs, u))
  return out


def test_batched_shapes_and_finite(batched):
  for name, val in batched.items():
    assert val.shape == (4,), name
    assert np.all(np.isfinite(val)), name


def test_mig_modularity_explicitness_match_sklearn(data, batched):
  for r in range(4):
    z = data["zs"][r].astype(np.float64)
    assert abs(batched["mig"][r] - ref.mig(z, data["u"])) <= 0.01
    assert abs(batched["modularity"][r] - ref.modularity(z, data["u"])) <= 0.01
    z_tr, u_tr, z_te, u_te = _split(data, r)
    e_tr, e_te = ref.explicitness(z_tr, u_tr, z_te, u_te)
    assert abs(batched["explicitness_train"][r] - e_tr) <= 0.01, RUNS[r]
    assert abs(batched["explicitness_test"][r] - e_te) <= 0.01, RUNS[r]


def test_sap_matches_linear_svc(data, batched):
  for r in range(4):
    want = ref.sap(*_split(data, r))
    assert abs(batched["sap"][r] - want) <= 0.01, RUNS[r]


def test_mcc_and_r2_match_scipy_sklearn(data, batched):
  u = data["u"]
  for r in range(4):
    z = data["zs"][r].astype(np.float64)
    assert abs(batched["mcc_pearson"][r] - ref.mcc(z, u)) <= 0.01
    assert abs(batched["mcc_spearman"][r] - ref.mcc(z, u, "spearman")) <= 0.01
    z_tr, u_tr, z_te, u_te = _split(data, r)
    want = ref.r2(z_tr, u_tr.astype(float), z_te, u_te.astype(float))
    assert abs(batched["r2"][r] - want) <= 0.01, RUNS[r]


@pytest.mark.timeout(200)
def test_infomec_matches_authors_definition(data, batched):
  for r in (0, 2):  # the reference is slow; mix and rotation cover the rest
    want = ref.infomec(data["zs"][r], data["u"])
    for name in ("infom", "infoe", "infoc"):
      assert abs(batched[name][r] - want[name]) <= 0.03, (RUNS[r], name)


def test_dci_importance_formulas_match_scipy_entropy():
  rng = np.random.default_rng(1)
  for shape in [(5, 3), (4, 4), (6, 2)]:
    imp = rng.random(shape) * (rng.random(shape) < 0.6)
    got = dci_score._scores_from_importance(jnp.asarray(imp, jnp.float32))
    d, c = ref.dci_from_importance(imp)
    assert abs(float(got["disentanglement"]) - d) <= 1e-4
    assert abs(float(got["completeness"]) - c) <= 1e-4
  got = dci_score.scores_from_importance(jnp.zeros((3, 2)))
  assert np.isfinite(float(got["disentanglement"]))


def test_dci_on_device_matches_sklearn_objective(data, batched):
  # The same L1-penalised multinomial objective solved by sklearn's saga.
  for r in (0, 2):
    d, c, i_tr, i_te = ref.dci_l1_logistic(*_split(data, r))
    assert abs(batched["dci_disentanglement"][r] - d) <= 0.03, RUNS[r]
    assert abs(batched["dci_completeness"][r] - c) <= 0.03, RUNS[r]
    assert abs(batched["dci_informativeness_test"][r] - i_te) <= 0.02


@pytest.mark.timeout(200)
def test_dci_gbt_is_disentanglement_lib(data):
  z = data["zs"][[1, 2], :600]
  u = data["u"][:600]
  got = metrics.dci(z, u, estimator="gbt")
  perm = np.asarray(jax.random.permutation(jax.random.key(0), 600))
  te, tr = perm[:200], perm[200:]
  for i in range(2):
    d, c, _, i_te = ref.dci_gbt(z[i][tr], u[tr], z[i][te], u[te])
    # GradientBoostingClassifier breaks split ties at random.
    assert abs(got["disentanglement"][i] - d) <= 0.02
    assert abs(got["completeness"][i] - c) <= 0.02
    assert abs(got["informativeness_test"][i] - i_te) <= 0.02
  assert got["disentanglement"][0] > 0.9 and got["completeness"][0] > 0.9
  assert got["disentanglement"][1] < got["disentanglement"][0] - 0.3


def test_closed_form_copy_rotation_noise(batched):
  mix, copy, rot, noise = range(4)
  b = batched
  for name in ("dci_disentanglement", "dci_completeness", "mig", "infom",
               "infoc", "mcc_pearson", "mcc_spearman"):
    assert b[name][copy] >= 0.95, name
  # A rotation hides the axes: modularity-type scores drop markedly...
  assert b["infom"][rot] < b["infom"][copy] - 0.3
  assert b["mig"][rot] < b["mig"][copy] - 0.5
  assert b["dci_disentanglement"][rot] < b["dci_disentanglement"][copy] - 0.3
  # ...while the information stays linearly available.
  assert b["r2"][rot] >= 0.95 and b["r2"][copy] >= 0.99
  assert abs(b["infoe"][rot] - b["infoe"][copy]) <= 0.1
  # Pure noise carries nothing.
  for name in ("mig", "sap", "infoe", "r2", "dci_informativeness_test"):
    assert b[name][noise] <= (0.45 if name.startswith("dci") else 0.05), name
  assert b["mcc_pearson"][noise] <= 0.1
  assert abs(b["explicitness_test"][noise] - 0.5) <= 0.05


def test_batched_equals_per_run(data, batched):
  zs, u = data["zs"], data["u"]
  r = 2
  single = {}
  single.update(metrics.infomec(zs[r], u))
  single.update({f"dci_{k}": v for k, v in metrics.dci(zs[r], u).items()})
  single.update(metrics.mig(zs[r], u))
  single.update(metrics.sap(zs[r], u))
  single.update(metrics.modularity_explicitness(zs[r], u))
  single["mcc_pearson"] = metrics.mcc(zs[r], u)["mcc"]
  single.update(metrics.r2(zs[r], u))
  for name, val in single.items():
    assert isinstance(val, float), name
    np.testing.assert_allclose(val, batched[name][r], atol=2e-5, err_msg=name)


def test_explicit_test_set_equals_internal_split(data):
  z, u = data["zs"][2], data["u"]
  tr, te = data["train"], data["test"]
  for fn in (metrics.r2, metrics.sap, metrics.dci):
    a = fn(z, u)
    b = fn(z[tr], u[tr], z_test=z[te], factors_test=u[te])
    for name in a:
      np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
  with pytest.raises(ValueError, match="never take"):
    metrics.sap(z[tr], u[tr], z_test=z[te], factors_test=u[te] + 100)


def test_udr_matches_disentanglement_lib(data):
  zs = data["zs"]
  for method in ("lasso", "spearman"):
    got = metrics.udr(zs, method=method)
    want = ref.udr(zs.astype(np.float64), method)
    np.testing.assert_allclose(got["udr"], want, atol=0.01)
    assert got["pairwise"].shape == (4, 4)


@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_relabelling_and_rescaling_latents_changes_nothing(data, seed):
  rng = np.random.default_rng(seed)
  z, u = data["zs"][0], data["u"]
  perm = rng.permutation(D)
  scale = rng.uniform(0.5, 2.0, D) * rng.choice([-1.0, 1.0], D)
  z2 = (z[:, perm] * scale + rng.normal(size=D)).astype(np.float32)
  a, b = metrics.mig(z, u)["mig"], metrics.mig(z2, u)["mig"]
  assert abs(a - b) <= 0.02  # only float binning of edge points may move
  a, b = metrics.mcc(z, u)["mcc"], metrics.mcc(z2, u)["mcc"]
  assert abs(a - b) <= 1e-4


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_global_scale_of_the_codes_does_not_matter(data, batched, scale):
  # float32 moments of codes at 1e20 overflow and at 1e-30 underflow (DCI,
  # MCC and InfoE came out 0); the codes are brought into range by a power
  # of two first. SAP (a fixed-C linear SVM) depends on the scale by its
  # definition and is left out.
  zs, u = data["zs"] * np.float32(scale), data["u"]
  got = {}
  got.update(metrics.infomec(zs, u))
  got.update({f"dci_{k}": v for k, v in metrics.dci(zs, u).items()})
  got.update(metrics.mig(zs, u))
  got.update(metrics.modularity_explicitness(zs, u))
  got["mcc_pearson"] = metrics.mcc(zs, u)["mcc"]
  got.update(metrics.r2(zs, u))
  for name, val in got.items():
    np.testing.assert_allclose(val, batched[name], atol=2e-3, err_msg=name)


def _toy_sampler(key, factor, values):
  """Observations are the factor indices themselves (a known function)."""
  m = values.shape[0]
  u = jnp.stack([jax.random.randint(jax.random.fold_in(key, k), (m,), 0, s)
                 for k, s in enumerate(SIZES)], 1)
  return u.at[:, factor].set(values).astype(jnp.float32)


class _ToyDataset:
  factor_sizes = SIZES

  def sample_fixed(self, key, n, factor, value):
    obs = _toy_sampler(key, 0, jnp.zeros((n,), jnp.int32))
    col = jnp.arange(len(SIZES)) == factor
    obs = jnp.where(col[None, :], jnp.asarray(value, jnp.float32), obs)
    return obs, obs.astype(jnp.int32), obs


_MIX = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])


def _encode_two_runs(obs):
  """Run 0: a rescaled permuted copy; run 1: factors 0, 1 mixed at 45 deg."""
  x = (obs - jnp.asarray([1.0, 2.0, 3.5])) / jnp.asarray([0.82, 1.41, 2.29])
  return jnp.stack([x[:, ::-1] * jnp.asarray([2.0, -1.0, 0.5]),
                    x @ jnp.asarray(_MIX, jnp.float32)])


@pytest.mark.timeout(200)
def test_beta_vae_and_factor_vae_protocols():
  key = jax.random.key(0)
  kw = dict(num_train=400, num_eval=200)
  beta = metrics.beta_vae_score(_encode_two_runs, _toy_sampler, key,
                                factor_sizes=SIZES, **kw)
  assert beta["eval_accuracy"].shape == (2,)
  assert beta["eval_accuracy"][0] == 1.0 and beta["train_accuracy"][0] == 1.0
  fvae = metrics.factor_vae_score(_encode_two_runs, _ToyDataset(), key,
                                  num_variance_estimate=2000, **kw)
  assert fvae["eval_accuracy"][0] == 1.0
  # Fixing factor 0 or 1 shrinks latents 0 and 1 alike: votes split.
  assert fvae["eval_accuracy"][1] < 0.85
  assert fvae["num_active_dims"].tolist() == [3.0, 3.0]
  # No active latent (all std < threshold): scores 0, as disentanglement_lib.
  dead = metrics.factor_vae_score(_encode_two_runs, _ToyDataset(), key,
                                  num_variance_estimate=2000,
                                  prune_threshold=1e9, **kw)
  np.testing.assert_array_equal(dead["eval_accuracy"], [0.0, 0.0])
  np.testing.assert_array_equal(dead["num_active_dims"], [0.0, 0.0])


def test_beta_vae_classifier_matches_sklearn():
  # Same shapes as the protocol test above: [R=2, 400 | 200, d=3], K = 3.
  rng = np.random.default_rng(2)
  y_tr, y_ev = rng.integers(0, 3, 400), rng.integers(0, 3, 200)
  centers = rng.normal(size=(2, 3, 3))
  x_tr = centers[:, y_tr] + rng.normal(size=(2, 400, 3))
  x_ev = centers[:, y_ev] + rng.normal(size=(2, 200, 3))
  got = intervention_scores.beta_vae_accuracy(
      jnp.asarray(x_tr, jnp.float32), jnp.asarray(y_tr),
      jnp.asarray(x_ev, jnp.float32), jnp.asarray(y_ev), 3)
  for r in range(2):
    want = ref.beta_vae_classifier(x_tr[r], y_tr, x_ev[r], y_ev)
    assert abs(float(got["train_accuracy"][r]) - want[0]) <= 0.01
    assert abs(float(got["eval_accuracy"][r]) - want[1]) <= 0.01


def test_factor_vae_majority_vote():
  votes_tr = jnp.asarray([[[5, 0, 1], [1, 4, 0]]], jnp.float32)  # [1, K, d]
  votes_ev = jnp.asarray([[[2, 1, 0], [0, 3, 4]]], jnp.float32)
  acc_tr, acc_ev = intervention_scores.factor_vae_accuracy(votes_tr, votes_ev)
  # Latent 0 -> factor 0, latent 1 -> factor 1, latent 2 -> factor 0.
  assert float(acc_tr[0]) == pytest.approx(10 / 11)
  assert float(acc_ev[0]) == pytest.approx(5 / 10)


def test_evaluate_all_table_and_markdown(data):
  zs, u = data["zs"], data["u"]
  table = metrics.evaluate_all(zs, u, metrics=("mig", "mcc", "r2", "udr"))
  assert set(table) == {"mig", "mcc_pearson", "mcc_spearman", "r2", "udr"}
  assert all(v.shape == (4,) for v in table.values())
  np.testing.assert_allclose(table["mig"], metrics.mig(zs, u)["mig"])
  np.testing.assert_allclose(table["udr"], metrics.udr(zs)["udr"])
  md = metrics.to_markdown(table, run_names=list(RUNS))
  assert md.splitlines()[0].startswith("| run | mig |")
  assert "| mean |" in md and md.count("\n") == 7
  with pytest.raises(ValueError, match="unknown metrics"):
    metrics.evaluate_all(zs, u, metrics=("nope",))


def test_bad_input_is_refused_or_handled(data):
  z, u = data["zs"][0], data["u"]
  with pytest.raises(ValueError, match="1500 rows but the codes have 1499"):
    metrics.mig(z[:-1], u)
  bad = z.copy()
  bad[7, 2] = np.nan
  with pytest.raises(ValueError, match=r"1 NaN .*row\(s\) \[7\]"):
    metrics.infomec(bad, u)
  bad[7, 2] = np.inf
  with pytest.raises(ValueError, match="Inf"):
    metrics.dci(bad, u)
  with pytest.raises(TypeError, match="floating-point"):
    metrics.mig(u, u)
  with pytest.raises(ValueError, match="NaN"):
    metrics.mcc(z, np.where(u == 0, np.nan, u))
  with pytest.raises(ValueError, match=r"\[n, K\]"):
    metrics.mig(z, u[:, 0])
  with pytest.raises(ValueError, match="at least 2 latents"):
    metrics.mig(z[:, :1], u)
  with pytest.raises(ValueError, match="R >= 2"):
    metrics.udr(z)
  # A factor with one class is dropped with a warning (else every score of
  # it would be 0/0); no factor left is an error.
  one = np.concatenate([u, np.zeros((N, 1), int)], 1)
  with pytest.warns(UserWarning, match="single value"):
    got = metrics.mig(z, one)["mig"]
  assert got == pytest.approx(metrics.mig(z, u)["mig"], abs=1e-6)
  with pytest.raises(ValueError, match="every column"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    metrics.mig(z, np.zeros((N, 2)))
  # Fewer samples than classes.
  many = np.arange(40)[:, None] % 30
  with pytest.raises(ValueError, match="fewer samples than classes"):
    metrics.sap(np.random.default_rng(0).normal(size=(40, 2)).astype(
        np.float32), many)
  # Non-integer factors: categorical with a warning; continuous: binned.
  with pytest.warns(UserWarning, match="non-integer"):
    a = metrics.mig(z, u * 0.5)["mig"]
  assert a == pytest.approx(metrics.mig(z, u)["mig"], abs=1e-6)
  cont = np.random.default_rng(0).normal(size=(N, 2))
  with pytest.warns(UserWarning, match="continuous"):
    s = metrics.mig(z, cont)["mig"]
  assert np.isfinite(s)
  # A constant latent is allowed and gives finite scores.
  zc = z.copy()
  zc[:, 1] = 3.0
  assert np.isfinite(metrics.modularity_explicitness(zc, u)["modularity"])
  with pytest.raises(ValueError, match="estimator"):
    metrics.dci(z, u, estimator="forest")


@pytest.mark.timeout(120)
def test_lbfgs_ends_when_no_curvature_pair_is_ever_kept():
  # A linear objective: every step decreases f but s.y = 0, so no curvature
  # pair is stored. Each step still counts, so the solver stops at max_iter
  # (it used to loop forever); without pairs it steps a unit along -g.
  from nearid_jax.metrics import linear_models  # pylint: disable=g-import-not-at-top
  x = jax.jit(lambda x0: linear_models.lbfgs_minimize(
      jnp.sum, x0, max_iter=5))(jnp.zeros((2,), jnp.float32))
  np.testing.assert_allclose(x, -5 / np.sqrt(2) * np.ones(2), rtol=1e-5)


def test_knn_mutual_info_matches_mutual_info_classif():
  # Tie-free latents, so sklearn's 1e-10 noise changes no order and the
  # estimates agree to float32 rounding. Factors cover a class with one
  # member (left out), one with two (k = 1) and classes that are runs of
  # the sorted latent (the k-th neighbour always on one side, the search
  # for m on the other reaching the array's end).
  from nearid_jax.metrics import information  # pylint: disable=g-import-not-at-top
  from sklearn import feature_selection  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  n = 700
  x = rng.standard_normal((n, 3))
  x[:, 2] = np.sort(x[:, 2])
  u = np.stack([rng.integers(0, 4, n), rng.integers(0, 12, n),
                np.arange(n) * 5 // n], 1)
  u[0, 0], u[1:3, 1] = 4, 12
  got = jax.jit(lambda z, e, y: information.knn_mutual_info_matrix(
      z, e, y, 13))(jnp.asarray(x, jnp.float32),
                    jax.random.normal(jax.random.key(0), (n, 3)),
                    jnp.asarray(u))
  for j in range(3):
    for k in range(3):
      want = feature_selection.mutual_info_classif(
          x[:, j:j + 1], u[:, k], n_neighbors=10, random_state=0)[0]
      assert abs(float(got[j, k]) - want) <= 1e-4, (j, k)
