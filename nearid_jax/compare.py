"""ε between any two or more embeddings of the same inputs, no factors needed.

For users whose representations come from elsewhere (PyTorch, Hugging Face
models, a cloud API): given embedding files of the same inputs, measure ε
for each map class (perm, rigid, linear, ICA; mean / 99th percentile / max
of the ℓ2 error over the evaluation rows, divided by the target's
diameter), the per-dimension R² of each map, and the ICA efficiency, for
every ordered pair (`python -m experiments.compare`).

Files (`read_embedding`): `.npy` ([n, d], rows in input order), `.npz`
(the array named by `key`, or `file.npz:name`; an id array `id_column` if
present), `.csv` / `.parquet` (an id column plus numeric feature columns,
as `nearid_jax.data.embeddings.read_embeddings` reads them). Files with ids
are joined on them (`join="exact"`: the same ids, any order; `"inner"`:
the ids they share, with a note); files without ids must have the same
rows in the same order. Different widths: "linear" and "ica" handle them
directly, "perm" and "rigid" pad the smaller side with zeros
(`dims="pad"`) or reduce the larger by PCA (`dims="pca"`); see
`nearid_jax.align`.

Examples:
  >>> import jax, numpy as np
  >>> x = np.random.default_rng(0).laplace(size=(300, 3))
  >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
  >>> c = compare([x, x @ q + 1.0], ["a", "b"], kinds=("rigid",),
  ...             key=jax.random.key(0))
  >>> float(c.epsilon["rigid"]["mean"][0, 1]) < 1e-5
  True
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
from matplotlib.figure import Figure
import numpy as np

from nearid_jax import align
from nearid_jax import distributed
from nearid_jax import parallel
from nearid_jax.data import embeddings as embeddings_lib

KINDS = ("perm", "rigid", "linear", "ica")
JOINS = ("exact", "inner")
STATS = ("mean", "q99", "max")
# The report's FastICA settings (`nearid_jax.report` config.ica).
ICA_OPTIONS = {"max_iter": 400, "tol": 1e-4, "n_restarts": 1}


@dataclasses.dataclass
class Embedding:
  """One file's embeddings.

  Attributes:
    name: a label (the file name, with ":key" for a named npz array).
    x: [n, d] float64.
    ids: [n] str row ids, or None (rows in input order).
  """
  name: str
  x: np.ndarray
  ids: np.ndarray | None


def _few(items, k: int = 3) -> str:
  items = [str(i) for i in list(items)]
  return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


def read_embedding(spec: str, *, key: str = "embeddings",
                   id_column: str = "id") -> Embedding:
  """Reads one embedding file (see the module docstring for formats).

  Args:
    spec: a path, or "file.npz:name" for a named array of an .npz.
    key: the .npz array when the spec names none.
    id_column: the id column of .csv / .parquet (and the id array of .npz).

  Returns:
    An `Embedding`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: unsupported format, missing key or id column, not [n, d],
      non-numeric features.
  """
  path = spec
  if not os.path.exists(spec) and ":" in spec:
    path, key = spec.rsplit(":", 1)
    name = f"{os.path.basename(path)}:{key}"
  else:
    name = os.path.basename(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"embedding file not found: {path}")
  ext = os.path.splitext(path)[1].lower()
  ids = None
  if ext == ".npy":
    x = np.load(path, allow_pickle=False)
  elif ext == ".npz":
    with np.load(path, allow_pickle=False) as f:
      if key not in f.files:
        raise ValueError(f"{path} has no array {key!r} (arrays: "
                         f"{sorted(f.files)}); name one with --key or "
                         f"{path}:<array>.")
      x = f[key]
      if id_column in f.files:
        ids = f[id_column].astype(str)
  elif ext in (".csv", ".parquet"):
    ids, x = embeddings_lib.read_embeddings(path, id_column=id_column)
  else:
    raise ValueError(f"{path}: unsupported format {ext!r}; use .npy, .npz, "
                     ".csv or .parquet.")
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{path}: embeddings must be [n, d], got shape "
                     f"{x.shape}.")
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{path}: embeddings must be numeric, got {x.dtype}.")
  if ids is not None and len(ids) != len(x):
    raise ValueError(f"{path}: {len(ids)} ids for {len(x)} rows.")
  return Embedding(name, x.astype(np.float64), ids)


def join(embs: Sequence[Embedding], *, how: str = "exact"
         ) -> tuple[list[np.ndarray], np.ndarray | None, list[str]]:
  """Row-aligns the embeddings: on their ids, or by position.

  Args:
    embs: two or more `Embedding`s.
    how: "exact" (every file has the same ids) or "inner" (keep the ids all
      files share, with a note).

  Returns:
    (arrays [n, d_i] in one row order, the ids or None, notes).

  Raises:
    ValueError: some files with ids and some without, duplicate ids,
      different ids (with how="exact"), no shared id, different row counts
      without ids, NaN/Inf rows (count and first row).
  """
  if how not in JOINS:
    raise ValueError(f"join must be one of {JOINS}, got {how!r}.")
  if len(embs) < 2:
    raise ValueError(f"compare needs at least 2 embedding files, got "
                     f"{len(embs)}.")
  notes: list[str] = []
  with_ids = [e.ids is not None for e in embs]
  if any(with_ids) and not all(with_ids):
    raise ValueError(
        "cannot join files with row ids ("
        + _few([e.name for e in embs if e.ids is not None]) + ") and files "
        "without (" + _few([e.name for e in embs if e.ids is None]) + "); "
        "give every file ids (an id column / array) or none.")
  ids = None
  if all(with_ids):
    for e in embs:
      uniq, counts = np.unique(e.ids, return_counts=True)
      if (counts > 1).any():
        raise ValueError(f"{e.name}: {int((counts > 1).sum())} duplicate "
                         f"id(s), e.g. {_few(uniq[counts > 1])}.")
    ref = embs[0]
    shared = set(ref.ids)
    for e in embs[1:]:
      shared &= set(e.ids)
    for e in embs:
      missing = [i for i in e.ids if i not in shared]
      if missing and how == "exact":
        lacking = [o.name for o in embs
                   if o is not e and not set(missing) <= set(o.ids)]
        raise ValueError(
            f"ids differ: {len(missing)} id(s) of {e.name} are missing from "
            f"{_few(lacking)} (e.g. {_few(missing)}); pass --join=inner to "
            "compare the rows all files share.")
    if not shared:
      raise ValueError("the files share no id: nothing to compare.")
    ids = np.array([i for i in ref.ids if i in shared])
    if how == "inner" and any(len(e.ids) != len(ids) for e in embs):
      notes.append(f"joined on {len(ids)} shared ids; dropped "
                   + ", ".join(f"{len(e.ids) - len(ids)} of {e.name}"
                               for e in embs) + ".")
    arrays = []
    for e in embs:
      pos = {v: r for r, v in enumerate(e.ids)}
      arrays.append(e.x[[pos[i] for i in ids]])
  else:
    rows = [len(e.x) for e in embs]
    if len(set(rows)) > 1:
      raise ValueError(
          "row counts differ (" + ", ".join(f"{e.name}: {len(e.x)}"
                                            for e in embs)
          + "); without ids the rows must be the same inputs in the same "
          "order. Use files with an id column to join on.")
    arrays = [e.x for e in embs]
  for e, x in zip(embs, arrays):
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
      first = int(np.argmax(bad))
      where = f"row {first}" + (f" (id {ids[first]})" if ids is not None
                                else "")
      raise ValueError(f"{e.name}: {int(bad.sum())} row(s) hold NaN/Inf "
                       f"(first: {where}); drop or impute them.")
  return arrays, ids, notes


@dataclasses.dataclass
class Comparison:
  """ε between every ordered pair of embeddings (row target, column source).

  Attributes:
    names: F labels.
    dims: F widths.
    n_rows: rows compared.
    kinds: map classes.
    epsilon: {kind: {stat: [F, F]}} (diagonal 0).
    r2: {kind: F × F nested lists of [d_target] per-dimension R²}.
    efficiency: (mean perm − mean ICA) / (mean perm − mean rigid) over the
      pairs (None without those classes).
    efficiency_per_pair: [F, F] the same per pair (NaN diagonal).
    diameter: [F] each embedding's diameter.
    settings: the options used.
    notes: notes in words.
  """
  names: list[str]
  dims: list[int]
  n_rows: int
  kinds: tuple[str, ...]
  epsilon: dict[str, dict[str, np.ndarray]]
  r2: dict[str, list[list[np.ndarray | None]]]
  efficiency: float | None
  efficiency_per_pair: np.ndarray | None
  diameter: np.ndarray
  settings: dict[str, Any]
  notes: list[str] = dataclasses.field(default_factory=list)


def compare(arrays: Sequence[np.ndarray], names: Sequence[str], *,
            kinds: Sequence[str] = KINDS, key, dims: str = "pad",
            fit_fraction: float = 0.5, diameter: str = "max",
            ridge: float = 0.0, perm_scale: bool = False,
            ica_options: dict | None = None) -> Comparison:
  """ε, R² and ICA efficiency for every ordered pair of row-aligned arrays.

  Args:
    arrays: F arrays [n, d_i] of the same n inputs, row for row.
    names: F labels.
    kinds: map classes (`align.KINDS`).
    key: a `jax.random.key` (row split, diameter subsample, ICA start).
    dims: "pad" or "pca" for different widths (see `nearid_jax.align`).
    fit_fraction, diameter, ridge, perm_scale, ica_options: as in
      `align.epsilon`.

  Returns:
    A `Comparison`.

  Raises:
    ValueError: fewer rows than the fit split needs (n · fit_fraction must
      exceed every width), and the input errors of `align`.
  """
  kinds = tuple(kinds)
  f = len(arrays)
  n = len(arrays[0])
  widths = [int(a.shape[1]) for a in arrays]
  n_fit = int(round(fit_fraction * n))
  for name, d in zip(names, widths):
    if n_fit <= d:
      raise ValueError(
          f"{name}: {n} rows for {d} dimensions; ε fits each map on "
          f"fit_fraction · n = {n_fit} rows, which must exceed the "
          "dimension. Use more rows, or reduce the dimension (e.g. PCA) "
          "first.")
  common = dict(key=key, fit_fraction=fit_fraction, diameter=diameter,
                ridge=ridge, perm_scale=perm_scale,
                ica_options=dict(ICA_OPTIONS, **(ica_options or {})))
  eps = {k: {s: np.zeros((f, f)) for s in STATS} for k in kinds}
  r2 = {k: [[None] * f for _ in range(f)] for k in kinds}
  diam = np.full(f, np.nan)
  if len(set(widths)) == 1:
    pw = align.pairwise_epsilon(np.stack(arrays).astype(np.float32), kinds,
                                **common)
    for k in kinds:
      for s in STATS:
        eps[k][s] = np.asarray(pw[k][s], np.float64)
      full = np.asarray(pw[k]["r2"], np.float64)
      r2[k] = [[full[i, j] if i != j else None for j in range(f)]
               for i in range(f)]
    diam = np.asarray(pw.diameter, np.float64)
  else:
    for i in range(f):
      for j in range(f):
        if i == j:
          continue
        res = align.epsilon(arrays[i].astype(np.float32),
                            arrays[j].astype(np.float32), kinds, dims=dims,
                            **common)
        for k in kinds:
          for s in STATS:
            eps[k][s][i, j] = float(res[k][s])
          r2[k][i][j] = np.asarray(res[k]["r2"], np.float64)
        diam[i] = float(res[kinds[0]]["diameter"])
  eff = per_pair = None
  if {"perm", "rigid", "ica"} <= set(kinds):
    off = ~np.eye(f, dtype=bool)
    p, g, c = (eps[k]["mean"][off] for k in ("perm", "rigid", "ica"))
    eff = float(align.ica_efficiency(p.mean(), g.mean(), c.mean()))
    per_pair = np.where(off, align.ica_efficiency(
        eps["perm"]["mean"], eps["rigid"]["mean"], eps["ica"]["mean"]),
                        np.nan)
  settings = {"dims": dims if len(set(widths)) > 1 else "equal",
              "fit_fraction": fit_fraction, "n_fit": n_fit,
              "n_eval": n - n_fit, "diameter": diameter, "ridge": ridge,
              "perm_scale": perm_scale,
              "convention": "epsilon[i][j]: embedding j mapped onto "
                            "embedding i, divided by the diameter of i"}
  return Comparison(list(names), widths, n, kinds, eps, r2, eff, per_pair,
                    diam, settings)


# --- output -----------------------------------------------------------------


def _num(v):
  v = float(v)
  return v if np.isfinite(v) else None


def to_json(c: Comparison) -> dict[str, Any]:
  """compare.json: the settings, the matrices and one record per pair."""
  pairs = []
  for i in range(len(c.names)):
    for j in range(len(c.names)):
      if i == j:
        continue
      pairs.append({
          "target": c.names[i], "source": c.names[j],
          "epsilon": {k: {s: _num(c.epsilon[k][s][i, j]) for s in STATS}
                      for k in c.kinds},
          "r2": {k: [_num(v) for v in c.r2[k][i][j]] for k in c.kinds},
          "ica_efficiency": (None if c.efficiency_per_pair is None
                             else _num(c.efficiency_per_pair[i, j]))})
  return {"names": c.names, "dims": c.dims, "n_rows": c.n_rows,
          "kinds": list(c.kinds), "settings": c.settings, "notes": c.notes,
          "epsilon": {k: {s: [[_num(v) for v in row] for row in m]
                          for s, m in d.items()}
                      for k, d in c.epsilon.items()},
          "diameter": [_num(v) for v in c.diameter],
          "ica_efficiency": None if c.efficiency is None
                            else _num(c.efficiency),
          "pairs": pairs}


def to_markdown(c: Comparison) -> str:
  """compare.md: one row per ordered pair, ε per class (mean / q99 / max)."""
  names = ", ".join(f"`{n}` (d = {d})" for n, d in zip(c.names, c.dims))
  st = c.settings
  lines = ["# Embedding comparison", "",
           f"{len(c.names)} embeddings of n = {c.n_rows} inputs: {names}. "
           f"Each map is fitted on {st['n_fit']} rows and evaluated on the "
           f"other {st['n_eval']}; ε = ℓ2 error / the target's diameter "
           f"({st['diameter']} pairwise distance), given as mean / 99th "
           "percentile / max over the evaluation rows. R² is the mean "
           "per-dimension R² of the target. Widths: " + (
               "equal." if st["dims"] == "equal" else
               f"different, rigid and perm use dims={st['dims']!r}.")]
  lines += [f"Note: {n}" for n in c.notes]
  head = [f"{k} ε (mean / q99 / max)" for k in c.kinds] + [
      f"R² {k}" for k in c.kinds]
  if c.efficiency is not None:
    head.append("ICA eff.")
  lines += ["", "| target ← source | " + " | ".join(head) + " |",
            "|---" * (len(head) + 1) + "|"]
  for i in range(len(c.names)):
    for j in range(len(c.names)):
      if i == j:
        continue
      cells = [" / ".join(f"{c.epsilon[k][s][i, j]:.3f}" for s in STATS)
               for k in c.kinds]
      cells += [f"{np.mean(c.r2[k][i][j]):.3f}" for k in c.kinds]
      if c.efficiency is not None:
        cells.append(f"{100 * c.efficiency_per_pair[i, j]:.0f}%")
      lines.append(f"| {c.names[i]} ← {c.names[j]} | " + " | ".join(cells)
                   + " |")
  if c.efficiency is not None:
    lines += ["", f"ICA efficiency over all pairs (from the mean errors): "
              f"{100 * c.efficiency:.0f}%: the share of the gap between "
              "signed permutations and rigid maps that ICA closes (above "
              "100%: better than the best rigid map)."]
  return "\n".join(lines) + "\n"


def heatmap(c: Comparison) -> Figure:
  """Mean ε per ordered pair, one panel per class."""
  fig = Figure(figsize=(3.2 * len(c.kinds), 3.0), dpi=110)
  axes = np.atleast_1d(fig.subplots(1, len(c.kinds), squeeze=False)[0])
  vmax = max(np.nanmax(c.epsilon[k]["mean"]) for k in c.kinds)
  for ax, k in zip(axes, c.kinds):
    im = ax.imshow(c.epsilon[k]["mean"], vmin=0, vmax=vmax or None,
                   cmap="viridis")
    ticks = np.arange(len(c.names))
    ax.set_xticks(ticks, c.names, rotation=90, fontsize=6)
    ax.set_yticks(ticks, c.names, fontsize=6)
    ax.set_title(k, fontsize=8)
  fig.colorbar(im, ax=list(axes), shrink=0.8, label="mean ε (row target)")
  return fig


def run(specs: Sequence[str], out: str | None = None, *,
        key_name: str = "embeddings", id_column: str = "id",
        how: str = "exact", kinds: Sequence[str] = KINDS, dims: str = "pad",
        seed: int = 0, fit_fraction: float = 0.5,
        diameter: str = "max") -> Comparison:
  """Reads the files, compares them, and writes compare.{json,md} and
  compare_heatmap.png to `out` (when given).

  Args:
    specs: embedding files (see `read_embedding`).
    out: output directory, or None.
    key_name: default .npz array.
    id_column: id column / array name.
    how: "exact" or "inner" join on ids.
    kinds, dims, fit_fraction, diameter: as in `compare`.
    seed: the key's seed.

  Returns:
    The `Comparison`.

  Raises:
    FileNotFoundError, ValueError: naming the file and the problem.
  """
  import json  # pylint: disable=g-import-not-at-top
  embs = [read_embedding(s, key=key_name, id_column=id_column)
          for s in specs]
  arrays, _, notes = join(embs, how=how)
  # In a job of several processes each compares on its own devices and the
  # primary writes (as the report; see `nearid_jax.distributed`).
  with parallel.process_local():
    c = compare(arrays, [e.name for e in embs], kinds=kinds,
                key=jax.random.key(seed), dims=dims,
                fit_fraction=fit_fraction, diameter=diameter)
  c.notes = notes + c.notes
  if out and distributed.is_primary():
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.json"), "w") as f:
      json.dump(to_json(c), f, indent=1, allow_nan=False)
    with open(os.path.join(out, "compare.md"), "w") as f:
      f.write(to_markdown(c))
    heatmap(c).savefig(os.path.join(out, "compare_heatmap.png"))
  distributed.barrier("nearid_jax.compare.run: written")
  return c
