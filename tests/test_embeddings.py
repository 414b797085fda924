"""Tests of the embedding-table reader (RxRx3-core style)."""
import csv
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nearid_jax.data import embeddings

COLS = embeddings.METADATA_COLUMNS


def _metadata(ids, path, drop=()):
  rows = []
  for i, w in enumerate(ids):
    rows.append({"well_id": w, "experiment_name": f"exp{i % 2}",
                 "plate": str(1 + i % 3), "address": f"A{i + 1:02d}",
                 "gene": "EIF3H" if i % 4 else "", "treatment": "",
                 "SMILES": "", "concentration": "" if i % 4 else "0.25",
                 "perturbation_type": "CRISPR" if i % 4 else "COMPOUND",
                 "cell_type": "HUVEC",
                 "well_type_label": "treatment" if i % 4 else "control"})
  header = [c for c in COLS if c not in drop]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, header, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  return path


@pytest.fixture
def data(tmp_path):
  rng = np.random.default_rng(0)
  ids = np.array([f"well_{i:03d}" for i in range(12)])
  x = rng.normal(size=(12, 5)).astype(np.float32)
  meta = _metadata(ids, tmp_path / "meta.csv")
  return tmp_path, ids, x, meta


def _wide_parquet(path, ids, x):
  cols = {"well_id": ids.tolist()}
  cols.update({f"feature_{j}": x[:, j] for j in range(x.shape[1])})
  pq.write_table(pa.table(cols), path)
  return path


def test_parquet_wide_and_list_columns_join_in_embedding_order(data):
  d, ids, x, meta = data
  # Metadata in another order than the embeddings: the join realigns it.
  perm = np.random.default_rng(1).permutation(12)
  _metadata(ids[perm], meta)
  t = embeddings.read_table(str(_wide_parquet(d / "e.parquet", ids, x)),
                            str(meta))
  np.testing.assert_array_equal(t.well_ids, ids)
  np.testing.assert_allclose(t.embeddings, x)
  assert t.metadata["plate"].dtype == np.int64
  # Row i's metadata is the metadata written for well ids[i].
  want_exp = np.array([f"exp{np.flatnonzero(perm == i)[0] % 2}"
                       for i in range(12)])
  np.testing.assert_array_equal(t.metadata["experiment_name"], want_exp)
  assert np.isnan(t.metadata["concentration"]).sum() == 9
  pq.write_table(pa.table({"well_id": ids.tolist(),
                           "embedding": [list(map(float, r)) for r in x]}),
                 d / "l.parquet")
  t2 = embeddings.read_table(str(d / "l.parquet"), str(meta))
  np.testing.assert_allclose(t2.embeddings, x)


def test_npz_npy_csv_formats(data):
  d, ids, x, meta = data
  np.savez(d / "e.npz", well_id=ids, embeddings=x)
  np.save(d / "e.npy", x)
  with open(d / "e.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["well_id"] + [f"f{j}" for j in range(5)])
    for i in range(12):
      w.writerow([ids[i]] + [repr(float(v)) for v in x[i]])
  for t in (embeddings.read_table(str(d / "e.npz"), str(meta)),
            embeddings.read_table(str(d / "e.npy"), str(meta), ids=ids),
            embeddings.read_table(str(d / "e.csv"), str(meta))):
    np.testing.assert_allclose(t.embeddings, x, rtol=1e-6)
    np.testing.assert_array_equal(t.well_ids, ids)
  with pytest.raises(ValueError, match="bare .npy with no row ids"):
    embeddings.read_table(str(d / "e.npy"), str(meta))


def test_write_read_roundtrip(data):
  d, ids, x, meta = data
  t = embeddings.read_table(str(_wide_parquet(d / "e.parquet", ids, x)),
                            str(meta))
  for ext in (".parquet", ".npz"):
    embeddings.write_table(t, str(d / ("w" + ext)), str(d / "w.csv"))
    r = embeddings.read_table(str(d / ("w" + ext)), str(d / "w.csv"))
    np.testing.assert_allclose(r.embeddings, t.embeddings)
    for k in t.metadata:
      np.testing.assert_array_equal(r.metadata[k], t.metadata[k])


def test_missing_metadata_columns_are_listed(data):
  d, ids, x, _ = data
  meta = _metadata(ids, d / "bad.csv", drop=("gene", "SMILES"))
  emb = str(_wide_parquet(d / "e.parquet", ids, x))
  with pytest.raises(ValueError, match=r"lacks column\(s\) \['gene', "
                     r"'SMILES'\]"):
    embeddings.read_table(emb, str(meta))


def test_unmatched_ids_error_or_drop(data):
  d, ids, x, meta = data
  ids2 = ids.copy()
  ids2[3] = "well_999"
  emb = str(_wide_parquet(d / "e.parquet", ids2, x))
  with pytest.raises(ValueError, match="1 embedding id.*well_999.*1 "
                     "metadata id.*well_003"):
    embeddings.read_table(emb, str(meta))
  t = embeddings.read_table(emb, str(meta), on_unmatched="drop")
  assert len(t) == 11 and "well_999" not in t.well_ids


def test_nan_rows_are_reported_by_well_id(data):
  d, ids, x, meta = data
  x = x.copy()
  x[2, 1] = np.nan
  x[7, 0] = np.inf
  emb = str(_wide_parquet(d / "e.parquet", ids, x))
  with pytest.raises(ValueError, match=r"2 well\(s\).*well_002, well_007"):
    embeddings.read_table(emb, str(meta))
  t = embeddings.read_table(emb, str(meta), on_nan="drop")
  assert len(t) == 10 and np.isfinite(t.embeddings).all()


def test_duplicates_and_non_numeric_features(data):
  d, ids, x, meta = data
  dup = ids.copy()
  dup[5] = dup[4]
  with pytest.raises(ValueError, match="duplicate id.*well_004"):
    embeddings.read_table(str(_wide_parquet(d / "e.parquet", dup, x)),
                          str(meta))
  pq.write_table(pa.table({"well_id": ids.tolist(), "feature_0": x[:, 0],
                           "note": ["a"] * 12}), d / "n.parquet")
  with pytest.raises(ValueError, match="non-numeric feature column.*note"):
    embeddings.read_table(str(d / "n.parquet"), str(meta))
  t = embeddings.read_table(str(d / "n.parquet"), str(meta),
                            feature_prefix="feature_")
  assert t.dim == 1
  with pytest.raises(FileNotFoundError, match="nope.parquet"):
    embeddings.read_table(str(d / "nope.parquet"), str(meta))


def test_parquet_without_pyarrow_names_the_install(data, monkeypatch):
  d, ids, x, meta = data
  emb = str(_wide_parquet(d / "e.parquet", ids, x))
  monkeypatch.setitem(sys.modules, "pyarrow", None)
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
  with pytest.raises(ImportError, match="pip install pyarrow"):
    embeddings.read_table(emb, str(meta))


def test_codes_and_select(data):
  d, ids, x, meta = data
  t = embeddings.read_table(str(_wide_parquet(d / "e.parquet", ids, x)),
                            str(meta))
  codes, names = t.codes("well_type_label")
  assert list(names) == ["control", "treatment"]
  ctrl = t.select(codes == 0)
  assert len(ctrl) == 3 and set(ctrl.metadata["gene"]) == {""}
  with pytest.raises(KeyError, match="no metadata column 'batch'"):
    t.codes("batch")


def test_npz_id_count_must_match_rows(data):
  # 40 ids for 50 rows used to blame the metadata join (and IndexError with
  # on_unmatched='drop').
  d, ids, x, meta = data
  np.savez(d / "short.npz", well_id=ids[:10], embeddings=x)
  for on_unmatched in ("error", "drop"):
    with pytest.raises(ValueError, match=r"short.npz: 10 'well_id' ids for "
                       r"12 rows of 'embeddings'"):
      embeddings.read_table(str(d / "short.npz"), str(meta),
                            on_unmatched=on_unmatched)
