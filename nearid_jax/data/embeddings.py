"""Per-well embedding tables joined with their metadata (RxRx3-core style).

RxRx3-core ships a Parquet of per-well embeddings (222,601 wells x 384
OpenPhenom features) and a metadata CSV with one row per well; this module
reads such a pair (or npz / npy / csv embeddings), joins them on
`well_id` and refuses anything that would silently give wrong numbers:
missing metadata columns, duplicate or unmatched ids, NaN/Inf rows (named
by well id), non-numeric features.

    table = read_table("OpenPhenom_rxrx3_core_embeddings.parquet",
                       "metadata_rxrx3_core.csv")
    x = table.embeddings                              # [n, 384] float32
    is_ctrl = table.metadata["well_type_label"] == "control"
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from nearid_jax import validation

METADATA_COLUMNS = ("well_id", "experiment_name", "plate", "address", "gene",
                    "treatment", "SMILES", "concentration",
                    "perturbation_type", "cell_type", "well_type_label")
_PYARROW_HINT = ("reading Parquet needs pyarrow: `pip install pyarrow` "
                 "(or save the embeddings as .npz with arrays 'well_id' and "
                 "'embeddings').")


@dataclasses.dataclass
class EmbeddingTable:
  """Embeddings with their metadata, row-aligned.

  Attributes:
    well_ids: [n] str array.
    embeddings: [n, d] float32 array, all finite.
    metadata: column name -> [n] array (ints, floats or strings).
  """
  well_ids: np.ndarray
  embeddings: np.ndarray
  metadata: dict[str, np.ndarray]

  def __post_init__(self):
    self.well_ids = np.asarray(self.well_ids).astype(str)
    validation.check_ndim("embeddings", self.embeddings, (2,), "[n, d]")
    validation.check_float("embeddings", self.embeddings)
    self.embeddings = np.asarray(self.embeddings, np.float32)
    n = len(self.well_ids)
    if len(self.embeddings) != n:
      raise ValueError(f"{len(self.embeddings)} embedding rows for {n} ids.")
    for k, v in self.metadata.items():
      if len(v) != n:
        raise ValueError(f"metadata column {k!r} has {len(v)} rows, not {n}.")
    _check_unique(self.well_ids, "well_ids")
    _check_finite_rows(self.embeddings, self.well_ids)

  def __len__(self) -> int:
    return len(self.well_ids)

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  def select(self, rows) -> "EmbeddingTable":
    """A sub-table by boolean mask or integer rows."""
    rows = np.asarray(rows)
    return EmbeddingTable(self.well_ids[rows], self.embeddings[rows],
                          {k: v[rows] for k, v in self.metadata.items()})

  def codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes [n], sorted unique values) of a metadata column."""
    if column not in self.metadata:
      raise KeyError(f"no metadata column {column!r}; columns: "
                     f"{sorted(self.metadata)}.")
    uniq, codes = np.unique(self.metadata[column], return_inverse=True)
    return codes.astype(np.int32), uniq


def read_table(embeddings_path: str, metadata_path: str, *,
               id_column: str = "well_id",
               embedding_column: str | None = None,
               feature_prefix: str | None = None,
               ids: Sequence[str] | None = None,
               required_columns: Sequence[str] = METADATA_COLUMNS,
               on_unmatched: str = "error",
               on_nan: str = "error") -> EmbeddingTable:
  """Reads embeddings and a metadata CSV and joins them on `id_column`.

  Args:
    embeddings_path: .parquet (pyarrow), .npz (arrays `well_id` and
      `embeddings`), .npy ([n, d], with `ids`) or .csv (id column plus
      numeric feature columns).
    metadata_path: CSV with a header row holding at least
      `required_columns`.
    id_column: the join key (RxRx3: well_id).
    embedding_column: Parquet only: a list-valued column holding the
      vectors (default: the only list column, else the numeric columns).
    feature_prefix: keep only feature columns whose name starts with it.
    ids: row ids for a .npy file (which has none).
    required_columns: metadata columns that must exist.
    on_unmatched: "error" (default) or "drop" ids present in only one table.
    on_nan: "error" (default) or "drop" rows with NaN/Inf embeddings.

  Returns:
    An EmbeddingTable in the embeddings' row order.

  Raises:
    FileNotFoundError, ImportError (Parquet without pyarrow), ValueError
    (missing columns, duplicate/unmatched ids, NaN rows by well id,
    non-numeric features).

  Examples:
    >>> # table = read_table("emb.parquet", "metadata.csv")
  """
  if on_unmatched not in ("error", "drop") or on_nan not in ("error", "drop"):
    raise ValueError("on_unmatched and on_nan must be 'error' or 'drop'.")
  emb_ids, emb = read_embeddings(embeddings_path, id_column=id_column,
                                 embedding_column=embedding_column,
                                 feature_prefix=feature_prefix, ids=ids)
  meta = read_metadata_csv(metadata_path, required_columns, id_column)
  meta_ids = meta[id_column].astype(str)
  _check_unique(emb_ids, f"{id_column} in {embeddings_path}")
  _check_unique(meta_ids, f"{id_column} in {metadata_path}")

  pos = {w: i for i, w in enumerate(meta_ids)}
  in_meta = np.array([w in pos for w in emb_ids], bool)
  emb_set = set(emb_ids.tolist())
  meta_only = [w for w in meta_ids if w not in emb_set]
  if (~in_meta).any() or meta_only:
    msg = (f"{int((~in_meta).sum())} embedding id(s) have no metadata row "
           f"(e.g. {_few(emb_ids[~in_meta])}) and {len(meta_only)} metadata "
           f"id(s) have no embedding (e.g. {_few(meta_only)}), joining "
           f"{embeddings_path} and {metadata_path} on {id_column!r}")
    if on_unmatched == "error":
      raise ValueError(msg + "; fix the files or pass on_unmatched='drop'.")
    logging.warning("%s; dropping them.", msg)
    emb_ids, emb = emb_ids[in_meta], emb[in_meta]

  bad = ~np.isfinite(emb).all(1)
  if bad.any():
    if on_nan == "error":
      _check_finite_rows(emb, emb_ids)
    logging.warning("dropping %d well(s) with NaN/Inf embeddings: %s",
                    int(bad.sum()), _few(emb_ids[bad]))
    emb_ids, emb = emb_ids[~bad], emb[~bad]

  rows = np.array([pos[w] for w in emb_ids], np.int64)
  metadata = {k: v[rows] for k, v in meta.items()}
  return EmbeddingTable(emb_ids, emb, metadata)


def read_embeddings(path: str, *, id_column: str = "well_id",
                    embedding_column: str | None = None,
                    feature_prefix: str | None = None,
                    ids: Sequence[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n] str, embeddings [n, d] float) from one file; see read_table."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"embeddings file not found: {path}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".parquet":
    return _read_parquet(path, id_column, embedding_column, feature_prefix)
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as z:
      keys = list(z.keys())
      if id_column not in keys:
        raise ValueError(f"{path} has no {id_column!r} array (arrays: "
                         f"{keys}); save ids with np.savez(..., "
                         f"{id_column}=ids, embeddings=x).")
      emb_key = "embeddings" if "embeddings" in keys else None
      if emb_key is None:
        two_d = [k for k in keys if z[k].ndim == 2]
        if len(two_d) != 1:
          raise ValueError(f"{path}: expected an 'embeddings' array, found "
                           f"{keys}.")
        emb_key = two_d[0]
      ids, x = z[id_column].astype(str), _as_features(z[emb_key], path)
    if ids.ndim != 1 or len(ids) != len(x):
      raise ValueError(f"{path}: {ids.size} {id_column!r} ids for "
                       f"{len(x)} rows of {emb_key!r}; save one id per row.")
    return ids, x
  if ext == ".npy":
    x = np.load(path, allow_pickle=False)
    if ids is None:
      raise ValueError(
          f"{path} is a bare .npy with no row ids; pass ids=[...] (one per "
          "row) or save an .npz with 'well_id' and 'embeddings'.")
    ids = np.asarray(ids).astype(str)
    if len(ids) != len(x):
      raise ValueError(f"{len(ids)} ids for {len(x)} rows of {path}.")
    return ids, _as_features(x, path)
  if ext == ".csv":
    cols = _read_csv(path)
    if id_column not in cols:
      raise ValueError(f"{path} has no {id_column!r} column; columns: "
                       f"{_few(list(cols))}.")
    names = [c for c in cols if c != id_column and
             (feature_prefix is None or c.startswith(feature_prefix))]
    feats = []
    for c in names:
      try:
        feats.append(np.array([float(v) if v != "" else np.nan
                               for v in cols[c]], np.float64))
      except ValueError as e:
        raise ValueError(f"{path}: feature column {c!r} is not numeric "
                         f"({e}); use feature_prefix= to select features."
                         ) from e
    if not feats:
      raise ValueError(f"{path} has no feature columns.")
    return np.asarray(cols[id_column]).astype(str), np.stack(feats, 1)
  raise ValueError(f"unsupported embeddings format {ext!r} ({path}); use "
                   ".parquet, .npz, .npy or .csv.")


def _as_features(x, path: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{path}: embeddings must be 2-D [n, d], got shape "
                     f"{x.shape}.")
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{path}: embeddings must be numeric, got {x.dtype}.")
  return x.astype(np.float64)


def _read_parquet(path, id_column, embedding_column, feature_prefix):
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_PYARROW_HINT) from e
  table = pq.read_table(path)
  names = table.column_names
  if id_column not in names:
    raise ValueError(f"{path} has no {id_column!r} column; columns: "
                     f"{_few(names)}.")
  ids = np.asarray(table.column(id_column).to_pylist()).astype(str)
  list_cols = [n for n in names
               if pa.types.is_list(table.schema.field(n).type)
               or pa.types.is_fixed_size_list(table.schema.field(n).type)
               or pa.types.is_large_list(table.schema.field(n).type)]
  if embedding_column is None and len(list_cols) == 1:
    embedding_column = list_cols[0]
  if embedding_column is not None:
    if embedding_column not in names:
      raise ValueError(f"{path} has no column {embedding_column!r}.")
    vecs = table.column(embedding_column).to_pylist()
    lens = {len(v) if v is not None else -1 for v in vecs}
    if len(lens) != 1 or -1 in lens:
      raise ValueError(f"{path}: {embedding_column!r} holds vectors of "
                       f"lengths {sorted(lens)[:5]}; all must be equal.")
    return ids, np.asarray(vecs, np.float64)
  feats = [n for n in names if n != id_column and
           (feature_prefix is None or n.startswith(feature_prefix))]
  non_num = [n for n in feats
             if not (pa.types.is_floating(table.schema.field(n).type)
                     or pa.types.is_integer(table.schema.field(n).type))]
  if non_num:
    raise ValueError(f"{path}: non-numeric feature column(s) {_few(non_num)}"
                     "; pass feature_prefix= (e.g. 'feature_') to select the "
                     "embedding columns.")
  if not feats:
    raise ValueError(f"{path} has no feature columns.")
  x = np.stack([table.column(n).to_numpy(zero_copy_only=False)
                for n in feats], 1)
  return ids, x.astype(np.float64)


def _read_csv(path: str) -> dict[str, list[str]]:
  with open(path, newline="") as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration as e:
      raise ValueError(f"{path} is empty; expected a header row.") from e
    cols: dict[str, list[str]] = {h: [] for h in header}
    for lineno, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(header):
        raise ValueError(f"{path}:{lineno}: {len(row)} fields, header has "
                         f"{len(header)}.")
      for h, v in zip(header, row):
        cols[h].append(v)
  return cols


def _typed(values: list[str]) -> np.ndarray:
  """A CSV column as int64 or float64 (blanks NaN) when it parses, else str."""
  if values and all(v == "" for v in values):
    return np.asarray(values, dtype=str)
  if all(v != "" for v in values):
    try:
      return np.array([int(v) for v in values], np.int64)
    except ValueError:
      pass
  try:
    return np.array([float(v) if v != "" else np.nan for v in values],
                    np.float64)
  except ValueError:
    return np.asarray(values, dtype=str)


def read_metadata_csv(path: str, required_columns: Sequence[str] =
                      METADATA_COLUMNS, id_column: str = "well_id"
                      ) -> dict[str, np.ndarray]:
  """Metadata CSV -> column arrays; checks the required columns exist."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"metadata file not found: {path}")
  cols = _read_csv(path)
  need = list(dict.fromkeys([id_column, *required_columns]))
  missing = [c for c in need if c not in cols]
  if missing:
    raise ValueError(f"{path} lacks column(s) {missing}; it has "
                     f"{list(cols)}.")
  out = {k: _typed(v) for k, v in cols.items()}
  out[id_column] = np.asarray(cols[id_column], dtype=str)
  return out


def write_table(table: EmbeddingTable, embeddings_path: str,
                metadata_path: str, id_column: str = "well_id") -> None:
  """Writes a table as embeddings (.parquet or .npz) + metadata CSV."""
  ext = os.path.splitext(embeddings_path)[1].lower()
  if ext == ".parquet":
    try:
      import pyarrow as pa  # pylint: disable=g-import-not-at-top
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(_PYARROW_HINT) from e
    cols: dict[str, Any] = {id_column: table.well_ids.tolist()}
    for j in range(table.dim):
      cols[f"feature_{j}"] = table.embeddings[:, j]
    pq.write_table(pa.table(cols), embeddings_path)
  elif ext == ".npz":
    np.savez(embeddings_path, **{id_column: table.well_ids,
                                 "embeddings": table.embeddings})
  else:
    raise ValueError(f"write .parquet or .npz, not {ext!r}.")
  meta = {id_column: table.well_ids, **{k: v for k, v in
                                        table.metadata.items()
                                        if k != id_column}}
  with open(metadata_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(meta))
    for i in range(len(table)):
      w.writerow([_fmt(meta[k][i]) for k in meta])


def _fmt(v) -> str:
  if isinstance(v, (float, np.floating)) and np.isnan(v):
    return ""
  return str(v)


def _few(items, k: int = 5) -> str:
  items = [str(i) for i in list(items)[:k + 1]]
  return (", ".join(items[:k]) + (", ..." if len(items) > k else "")
          ) if items else "none"


def _check_unique(ids: np.ndarray, what: str) -> None:
  uniq, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    dup = uniq[counts > 1]
    raise ValueError(f"{len(dup)} duplicate id(s) in {what}: {_few(dup)}.")


def _check_finite_rows(x: np.ndarray, ids: np.ndarray) -> None:
  bad = ~np.isfinite(x).all(1)
  if bad.any():
    n_nan = int(np.isnan(x[bad]).any(1).sum())
    raise ValueError(
        f"embeddings of {int(bad.sum())} well(s) contain NaN/Inf ({n_nan} "
        f"with NaN): {_few(ids[bad], 10)}; drop or impute them (or pass "
        "on_nan='drop').")


def from_arrays(well_ids, embeddings, metadata: Mapping[str, Any]
                ) -> EmbeddingTable:
  """An EmbeddingTable from in-memory arrays (e.g. simulated wells)."""
  return EmbeddingTable(np.asarray(well_ids),
                        np.asarray(embeddings, np.float32),
                        {k: np.asarray(v) for k, v in metadata.items()})
