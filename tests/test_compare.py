"""`nearid_jax.compare` and `experiments.compare`: ε between embedding files.

Shapes (3 files of n = 400, d = 3) match tests/test_report.py, so the two
share compiled programs.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nearid_jax import compare

N, D = 400, 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """a: Laplace rows; b = a rotated + 1 (npz key 'emb'); c = a signed and
  permuted; the same three as csv with ids, rows shuffled."""
  tmp = tmp_path_factory.mktemp("emb")
  rng = np.random.default_rng(0)
  a = rng.laplace(size=(N, D))
  q, _ = np.linalg.qr(rng.normal(size=(D, D)))
  b = a @ q + 1.0
  c = a[:, [2, 0, 1]] * np.array([1.0, -1.0, 1.0])
  np.save(tmp / "a.npy", a)
  np.savez(tmp / "b.npz", emb=b, other=np.zeros(3))
  np.savez(tmp / "c.npz", embeddings=c)
  ids = np.array([f"w{i:03d}" for i in range(N)])
  for name, x in (("a", a), ("b", b), ("c", c)):
    # The first file's row order is the joined order; the others are shuffled.
    order = np.arange(N) if name == "a" else rng.permutation(N)
    with open(tmp / f"{name}.csv", "w") as f:
      f.write("id," + ",".join(f"f{j}" for j in range(D)) + "\n")
      for i in order:
        f.write(ids[i] + "," + ",".join(f"{v:.17g}" for v in x[i]) + "\n")
  return tmp


@pytest.fixture(scope="module")
def done(files):
  out = files / "out"
  specs = [str(files / "a.npy"), str(files / "b.npz:emb"),
           str(files / "c.npz")]
  return out, compare.run(specs, str(out))


def test_compare_closed_forms_and_files(done):
  out, c = done
  assert c.names == ["a.npy", "b.npz:emb", "c.npz"] and c.dims == [3, 3, 3]
  eps = c.epsilon
  # b is a rigid copy of a: rigid and linear ε vanish both ways; c is a
  # signed permutation of a: perm ε vanishes too.
  for i, j in ((0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)):
    assert eps["rigid"]["max"][i, j] < 1e-4
    assert eps["linear"]["max"][i, j] < 1e-4
  for i, j in ((0, 2), (2, 0)):
    assert eps["perm"]["max"][i, j] < 1e-5
  assert eps["perm"]["mean"][0, 1] > 0.05   # a rotation is no permutation
  # The three statistics are ordered for every pair.
  off = ~np.eye(3, dtype=bool)
  assert np.all(eps["perm"]["mean"][off] <= eps["perm"]["q99"][off] + 1e-7)
  assert np.all(eps["perm"]["q99"][off] <= eps["perm"]["max"][off] + 1e-7)
  # Per-dimension R² of each map, one value per target dimension.
  assert len(c.r2["linear"][0][1]) == D
  assert min(c.r2["linear"][0][1]) > 0.999
  # Efficiency from the mean errors over pairs.
  p, r, i_ = (eps[k]["mean"][off].mean() for k in ("perm", "rigid", "ica"))
  assert c.efficiency == pytest.approx((p - i_) / (p - r), rel=1e-9)
  with open(out / "compare.json") as f:
    js = json.load(f)
  assert len(js["pairs"]) == 6 and js["pairs"][0]["target"] == "a.npy"
  assert js["pairs"][0]["source"] == "b.npz:emb"
  assert js["pairs"][0]["epsilon"]["rigid"]["max"] < 1e-4
  md = (out / "compare.md").read_text()
  assert "| a.npy ← c.npz | 0.000 / 0.000 / 0.000 |" in md
  assert os.path.getsize(out / "compare_heatmap.png") > 1000


def test_csv_joined_on_ids_gives_the_same_numbers(files, done):
  _, ref = done
  c = compare.run([str(files / f"{n}.csv") for n in "abc"])
  for kind in compare.KINDS:
    np.testing.assert_allclose(c.epsilon[kind]["mean"],
                               ref.epsilon[kind]["mean"], rtol=1e-4,
                               atol=1e-6)


def test_different_widths_pad_and_pca(files):
  a = np.load(files / "a.npy")
  wide = np.c_[a, 0.1 * np.random.default_rng(1).normal(size=(N, 1))]
  rigid = {}
  for dims in ("pca", "pad"):
    c = compare.compare([a, wide], ["a", "wide"], kinds=("rigid", "linear"),
                        key=jax.random.key(0), dims=dims)
    assert c.dims == [3, 4] and c.settings["dims"] == dims
    # a is the first 3 coordinates of wide: a linear map is exact.
    assert c.epsilon["linear"]["mean"][0, 1] < 1e-4
    assert len(c.r2["linear"][0][1]) == 3 and len(c.r2["linear"][1][0]) == 4
    # The extra coordinate of wide is not in a: R² of it is ~0.
    assert c.r2["linear"][1][0][3] < 0.1
    rigid[dims] = c.epsilon["rigid"]["mean"][0, 1] * c.diameter[0]
  # "pca" keeps wide's top 3 directions (a's); "pad" asks the rigid map to
  # send wide's extra coordinate to a's zero padding, so its variation counts
  # as error: E|0.1 · N(0, 1)| = 0.1 · sqrt(2/π) in absolute terms.
  assert rigid["pca"] < 1e-3, rigid
  assert rigid["pad"] == pytest.approx(0.1 * np.sqrt(2 / np.pi), rel=0.15)


def _emb(name, x, ids=None):
  return compare.Embedding(name, np.asarray(x, float),
                           None if ids is None else np.asarray(ids))


def test_bad_inputs_are_named(files, tmp_path):
  x = np.random.default_rng(0).normal(size=(20, 3))
  with pytest.raises(ValueError, match=r"row counts differ \(a: 20, b: 19\)"):
    compare.join([_emb("a", x), _emb("b", x[:19])])
  ids = [f"r{i}" for i in range(20)]
  with pytest.raises(ValueError, match=r"ids differ: 1 id\(s\) of a are "
                     r"missing from b \(e\.g\. r19\).*--join=inner"):
    compare.join([_emb("a", x, ids), _emb("b", x, ids[:19] + ["zz"])])
  arrays, joined, notes = compare.join(
      [_emb("a", x, ids), _emb("b", x[::-1], ids[::-1][:19] + ["zz"])],
      how="inner")
  # Rows follow the first file's ids; b's row for r0 was its last row.
  assert list(joined) == ids[1:] and np.array_equal(arrays[1], x[1:])
  assert notes == ["joined on 19 shared ids; dropped 1 of a, 1 of b."]
  bad = x.copy()
  bad[[4, 9]] = np.nan
  with pytest.raises(ValueError, match=r"b: 2 row\(s\) hold NaN/Inf "
                     r"\(first: row 4 \(id r4\)\)"):
    compare.join([_emb("a", x, ids), _emb("b", bad, ids)])
  with pytest.raises(ValueError, match=r"without \(b\)"):
    compare.join([_emb("a", x, ids), _emb("b", x)])
  with pytest.raises(ValueError, match=r"duplicate id"):
    compare.join([_emb("a", x, ["r0"] * 20), _emb("b", x, ids)])
  with pytest.raises(ValueError, match=r"wide: 20 rows for 16 dimensions; "
                     r"ε fits each map on fit_fraction · n = 10 rows"):
    compare.compare([x, np.c_[x, x, x, x, x, x[:, :1]]], ["a", "wide"],
                    key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"has no array 'embeddings' \(arrays: "
                     r"\['emb', 'other'\]\)"):
    compare.read_embedding(str(files / "b.npz"))
  with pytest.raises(FileNotFoundError, match="not found"):
    compare.read_embedding(str(tmp_path / "missing.npy"))
  with pytest.raises(ValueError, match="has no 'well' column"):
    compare.read_embedding(str(files / "a.csv"), id_column="well")


def test_binary_prints_one_error_line(files):
  np.save(files / "short.npy", np.zeros((10, 3)))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.compare", str(files / "a.npy"),
       str(files / "short.npy")], capture_output=True, text=True,
      timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: row counts differ (a.npy: 400, short.npy: 10); without ids the "
      "rows must be the same inputs in the same order. Use files with an id "
      "column to join on."]
