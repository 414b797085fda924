"""Seed aggregates of the paper's experiments: intervals, ranks, result files.

Every experiment of `nearid_jax.paper` reports a number as a *record*: one
row per (table, experiment row, column) with the per-seed values, their
mean and a 95% Student-t interval for the mean over seeds:

    {"table", "row", "column", "mean", "lo", "hi", "half_width", "n",
     "values", ...extra fields (dataset, note)}

`lo`/`hi`/`half_width` are null with fewer than two finite values (a point
estimate such as a Spearman correlation or an ICA efficiency computed from
mean errors carries `n` = the number of points it summarises). Non-finite
seeds (diverged runs, failed ICA) are dropped from the aggregate and
counted in `n_dropped`.

`write_results` writes `results.json` ({"experiment", "records", ...}) and
`results.md`; `markdown_table` lays records out in the paper's form, one
cell "mean ± half-width".
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def interval(values: Iterable[float], level: float = LEVEL) -> dict[str, Any]:
  """Mean and Student-t interval of the finite values.

  Args:
    values: per-seed values (NaN/None are dropped and counted).
    level: coverage of the interval.

  Returns:
    {"mean", "lo", "hi", "half_width", "n", "n_dropped", "values"}; the
    interval fields are None with fewer than 2 finite values.

  Examples:
    >>> r = interval([1.0, 2.0, 3.0])
    >>> r["mean"], round(r["half_width"], 4)
    (2.0, 2.4841)
  """
  raw = [np.nan if v is None else float(v) for v in values]
  v = np.asarray(raw, np.float64)
  ok = np.isfinite(v)
  good = v[ok]
  out = {"mean": None, "lo": None, "hi": None, "half_width": None,
         "n": int(good.size), "n_dropped": int((~ok).sum()),
         "values": [None if not np.isfinite(x) else float(x) for x in v]}
  if good.size == 0:
    return out
  mean = float(good.mean())
  out["mean"] = mean
  if good.size >= 2:
    sem = float(good.std(ddof=1) / math.sqrt(good.size))
    half = float(stats.t.ppf(0.5 + level / 2, good.size - 1) * sem)
    out.update(lo=mean - half, hi=mean + half, half_width=half)
  return out


def record(table: str, row: str, column: str, values: Iterable[float],
           **extra) -> dict[str, Any]:
  """One result row: `interval(values)` labelled by table, row, column."""
  return {"table": table, "row": row, "column": column, **interval(values),
          **extra}


def point(table: str, row: str, column: str, value: float | None, n: int,
          **extra) -> dict[str, Any]:
  """A record of one summary number over `n` points (no interval)."""
  v = None if value is None or not np.isfinite(value) else float(value)
  return {"table": table, "row": row, "column": column, "mean": v,
          "lo": None, "hi": None, "half_width": None, "n": int(n),
          "n_dropped": 0, "values": [v], **extra}


def ranks(x: Sequence[float]) -> np.ndarray:
  """Ranks 1..n with ties given their average rank.

  Examples:
    >>> ranks([3.0, 1.0, 3.0]).tolist()
    [2.5, 1.0, 2.5]
  """
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  r = np.empty(len(x))
  r[order] = np.arange(1, len(x) + 1)
  for val in np.unique(x):
    tie = x == val
    r[tie] = r[tie].mean()
  return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman rank correlation of the pairs where both are finite.

  NaN with fewer than 3 such pairs or a constant side.

  Raises:
    ValueError: when x and y differ in length.

  Examples:
    >>> spearman([1, 2, 3, 4], [10, 20, 25, 100])
    1.0
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman needs two 1-D arrays of one length, got "
                     f"shapes {x.shape} and {y.shape}.")
  ok = np.isfinite(x) & np.isfinite(y)
  if ok.sum() < 3:
    return float("nan")
  rx, ry = ranks(x[ok]), ranks(y[ok])
  rx, ry = rx - rx.mean(), ry - ry.mean()
  den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
  return float((rx * ry).sum() / den) if den > 0 else float("nan")


def fmt(rec: dict[str, Any] | None, digits: int = 3) -> str:
  """"mean ± half-width" (or the mean alone; "–" when missing)."""
  if rec is None or rec.get("mean") is None:
    return "–"
  s = f"{rec['mean']:.{digits}f}"
  if rec.get("half_width") is not None:
    s += f" ± {rec['half_width']:.{digits}f}"
  return s


def find(records: Sequence[dict], **where) -> dict | None:
  """The first record whose fields equal `where`, or None."""
  for r in records:
    if all(r.get(k) == v for k, v in where.items()):
      return r
  return None


def markdown_table(records: Sequence[dict], table: str,
                   rows: Sequence[str], columns: Sequence[str],
                   headers: Sequence[str] | None = None,
                   row_header: str = "row", digits: int = 3) -> str:
  """Records of `table` as a markdown table, rows × columns."""
  headers = list(headers or columns)
  lines = [f"| {row_header} | " + " | ".join(headers) + " |",
           "|---" * (len(headers) + 1) + "|"]
  for row in rows:
    cells = [fmt(find(records, table=table, row=row, column=c), digits)
             for c in columns]
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _clean(v):
  if isinstance(v, dict):
    return {str(k): _clean(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_clean(x) for x in v]
  if isinstance(v, np.ndarray):
    return _clean(v.tolist())
  if isinstance(v, (np.floating, float)):
    return None if not np.isfinite(v) else float(v)
  if isinstance(v, np.integer):
    return int(v)
  if isinstance(v, np.bool_):
    return bool(v)
  return v


def write_results(workdir: str, experiment: str, records: Sequence[dict],
                  markdown: str, **extra) -> dict[str, Any]:
  """Writes results.json and results.md to `workdir`; returns the JSON.

  NaN/Inf become null (JSON has no NaN).
  """
  os.makedirs(workdir, exist_ok=True)
  out = _clean({"experiment": experiment, "level": LEVEL,
                "records": list(records), **extra})
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown.rstrip() + "\n")
  return out
