"""The report's result as JSON (report.json) and Markdown (report.md).

report.json:
  "runs": [{"run", "name", "seed", "valid", "grid"}], "layer", "threshold",
  "settings", "notes", "summary": one row per grid point (below),
  "groups": [{
      "grid": {field: value} ({} without a grid), "runs": [run], "left_out",
      "notes",
      "epsilon": {kind: {"mean"/"q99"/"max": [[Rg × Rg]]}} over the group's
          runs (row target, column source), "r2": {kind: [[Rg × Rg]]},
      "pairs": {kind: {stat: {"mean", "ci": [lo, hi], "std", "worst",
          "worst_pair": [target run, source run], "exceed", "count"}}},
      "diameter": {"used": "max" | "q99", "value": [Rg], "q99": [Rg],
          "n_rows": n}, "ica_components": d,
      "ica_efficiency": {"value", "ci", "per_pair": [[Rg × Rg]]},
      "structural": {"kinds", "ica_components", "diameter",
          "epsilon": {kind: {stat: [Rg]}}},
      "metrics": {"rows", "ica_components", "dci_estimator",
          "infoe_converged_iter", "notes", "tables": {variant: {col: [Rg]}}},
      "verdict": {"statistical", "statistical_linf", "after_ica",
          "structural", "structural_after_ica", "text"}}],
  "bi_lipschitz": {"one_plus_l", "condition", "theorem1_factor": [R],
      "data_bound", "points", "output", "note"},
  "config", "timing_s".
Sections not computed are null (the group's notes say why); NaN is null.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nearid_jax.report import result as R
from nearid_jax.report import verdict as verdict_lib

_COLUMN_ORDER = ("perm", "rigid", "similarity", "linear", "identity")
_VARIANTS = {"raw": "raw", "ica": "ICA", "pca": "PCA (whitened)",
             "pca_rotated": "PCA + random rotation"}


def _num(v):
  if v is None:
    return None
  v = float(v)
  return v if np.isfinite(v) else None


def _list(a) -> list:
  a = np.asarray(a, np.float64)
  if a.ndim == 0:
    return _num(a)
  return [_list(x) for x in a]


def _interval(i: R.Interval) -> dict:
  return {"value": _num(i.value), "ci": [_num(i.low), _num(i.high)]}


def summary_rows(report: R.Report) -> list[dict[str, Any]]:
  """One row per grid point: mean ε per class with its interval, MCC, InfoM.

  Examples:
    >>> summary_rows(R.Report([], "latent", 0.05, [], None, {}, [], {}))
    []
  """
  rows = []
  for g in report.groups:
    row: dict[str, Any] = {"grid": g.grid, "runs": len(g.runs),
                           "epsilon": {}}
    if g.statistical is not None:
      for k, p in g.statistical.pairs.items():
        row["epsilon"][k] = _interval(p["mean"].mean)
    tables = g.metrics.tables if g.metrics is not None else {}
    for col, name in (("mcc_pearson", "mcc"), ("infom", "infom")):
      for side in ("raw", "ica"):
        v = tables.get(side, {}).get(col)
        row[f"{name}_{side}"] = (_num(np.nanmean(v)) if v is not None
                                 else None)
    rows.append(row)
  return rows


def _group_json(report: R.Report, g: R.Group) -> dict[str, Any]:
  out: dict[str, Any] = {"grid": g.grid, "runs": g.runs,
                         "left_out": g.left_out, "notes": g.notes}
  s = g.statistical
  if s is None:
    out.update(epsilon=None, r2=None, pairs=None, diameter=None,
               ica_components=None)
  else:
    out["epsilon"] = {k: {st: _list(m) for st, m in v.items()}
                      for k, v in s.epsilon.items()}
    out["r2"] = {k: _list(m) for k, m in s.r2.items()}
    out["pairs"] = {
        k: {st: {"mean": _num(p.mean.value),
                 "ci": [_num(p.mean.low), _num(p.mean.high)],
                 "std": _num(p.std), "worst": _num(p.worst),
                 "worst_pair": ([g.runs[p.worst_pair[0]],
                                 g.runs[p.worst_pair[1]]]
                                if p.count else None),
                 "exceed": p.exceed, "count": p.count}
            for st, p in v.items()} for k, v in s.pairs.items()}
    out["diameter"] = {"used": report.settings.get("diameter"),
                       "value": _list(s.diameter), "q99": _list(s.diameter_q99),
                       "n_rows": report.settings.get("n_rows")}
    out["ica_components"] = s.ica_components
    out["dims"] = [int(x) for x in s.dims]
  e = g.efficiency
  out["ica_efficiency"] = None if e is None else {
      **_interval(e.value), "per_pair": _list(e.per_pair)}
  st = g.structural
  out["structural"] = None if st is None else {
      "kinds": list(st.kinds), "ica_components": st.ica_components,
      "diameter": _num(st.diameter),
      "epsilon": {k: {x: _list(v) for x, v in d.items()}
                  for k, d in st.epsilon.items()}}
  m = g.metrics
  out["metrics"] = None if m is None else {
      "rows": m.rows, "ica_components": m.ica_components,
      "dci_estimator": m.dci_estimator,
      "infoe_converged_iter": m.infoe_converged_iter, "notes": m.notes,
      "tables": {v: {c: _list(x) for c, x in t.items()}
                 for v, t in m.tables.items()}}
  v = g.verdict
  out["verdict"] = {"statistical": v.statistical,
                    "statistical_linf": v.statistical_linf,
                    "after_ica": v.after_ica, "structural": v.structural,
                    "structural_after_ica": v.structural_after_ica,
                    "text": v.text}
  return out


def to_json(report: R.Report) -> dict[str, Any]:
  """report.json's content (JSON-safe: NaN becomes null)."""
  bl = report.bi_lipschitz
  return {
      "runs": [{"run": r.index, "name": r.name, "seed": r.seed,
                "valid": r.valid, "grid": r.grid} for r in report.runs],
      "layer": report.layer, "threshold": report.threshold,
      "settings": report.settings, "notes": report.notes,
      "summary": summary_rows(report),
      "groups": [_group_json(report, g) for g in report.groups],
      "bi_lipschitz": None if bl is None else {
          "one_plus_l": _list(bl.one_plus_l),
          "condition": _list(bl.condition),
          "theorem1_factor": _list(bl.theorem1_factor),
          "data_bound": bl.data_bound, "points": bl.points,
          "output": bl.output, "note": bl.note},
      "config": report.config, "timing_s": report.timing_s,
  }


# --- Markdown ---------------------------------------------------------------


def _f(v, digits=3) -> str:
  return "—" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _value(v) -> str:
  return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _ms(vals) -> str:
  v = np.asarray(vals, np.float64)
  v = v[np.isfinite(v)]
  return f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "—"


def _ci(i: R.Interval, percent: bool = False) -> str:
  """"0.030 [0.016, 0.046]", or "100% [99%, 100%]" with percent=True."""
  if not np.isfinite(i.value):
    return "—"
  f = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:.3f}")
  return f"{f(i.value)} [{f(i.low)}, {f(i.high)}]"


def _statistical_md(report, g: R.Group) -> list[str]:
  s = g.statistical
  names = report.group_names(g)
  n = len(names)
  kinds = [k for k in _COLUMN_ORDER if k in s.kinds]
  head = list(kinds)
  if "ica" in s.kinds:
    head.append(f"ICA ({s.ica_components} comp.)")
  lines = [f"### Statistical ε between runs (the paper's Table 1 form)", "",
           f"{n} runs, {n * (n - 1)} ordered pairs. Each cell: mean over "
           "pairs [95% bootstrap interval over pairs]; the worst pair and "
           f"the number of pairs above τ = {report.threshold:g} follow. "
           "Lower is better.", "",
           "| ε | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
  order = kinds + (["ica"] if "ica" in s.kinds else [])
  for stat, label in (("mean", "mean ℓ2"), ("q99", "99th pct ℓ2"),
                      ("max", "max ℓ2 (L∞)")):
    lines.append(f"| {label} | " + " | ".join(
        _ci(s.pairs[k][stat].mean) for k in order) + " |")
    lines.append(f"| {label}: worst pair (> τ) | " + " | ".join(
        f"{_f(s.pairs[k][stat].worst)} ({s.pairs[k][stat].exceed}/"
        f"{s.pairs[k][stat].count})" for k in order) + " |")
  lines.append("| R² (mean over dims) | " + " | ".join(
      _f(np.nanmean(s.r2[k][~np.eye(n, dtype=bool)])) for k in order) + " |")
  if g.efficiency is not None:
    lines += ["", f"**ICA efficiency: {_ci(g.efficiency.value, percent=True)}** "
              f"(from the mean errors, 95% bootstrap interval over pairs). "
              + verdict_lib.EFFICIENCY_MEANING]
  diam = report.settings.get("diameter")
  n_rows = report.settings.get("n_rows")
  if diam == "max":
    text = (f"Diameter (ε divides by it): max pairwise distance "
            f"{_ms(s.diameter)}; 99th percentile {_ms(s.diameter_q99)} "
            f"(mean ± sd over runs, n = {n_rows} rows; the max grows with n "
            "for heavy-tailed data, the 99th percentile much less).")
  else:
    text = (f"Diameter (ε divides by it): 99th percentile of pairwise "
            f"distances {_ms(s.diameter)} (mean ± sd over runs, n = {n_rows} "
            "rows).")
  lines += ["", text]
  return lines


def _structural_md(report, g: R.Group) -> list[str]:
  st = g.structural
  names = report.group_names(g)
  lines = ["### Structural ε to the true factors", "",
           "Each run mapped onto the standardised ground-truth factors "
           "(mean ℓ2 / diameter of the factors, on the evaluation split); "
           f"'ica' uses {st.ica_components} components (the number of "
           "factors); 'similarity' is rotation + one global scale, so the "
           "latents' arbitrary scale does not count as error (it does for "
           "'rigid').", ""]
  cols = [f"ε {k}" for k in st.kinds]
  tables = g.metrics.tables if g.metrics is not None else {}
  extra = [("MCC raw", "raw", "mcc_pearson"),
           (f"MCC ICA ({g.metrics.ica_components} comp.)"
            if g.metrics else "MCC ICA", "ica", "mcc_pearson"),
           ("R²", "raw", "r2")]
  extra = [e for e in extra if e[2] in tables.get(e[1], {})]
  head = cols + [e[0] for e in extra]
  lines += ["| run | " + " | ".join(head) + " |",
            "|---" * (len(head) + 1) + "|"]
  for i, name in enumerate(names):
    cells = [st.epsilon[k]["mean"][i] for k in st.kinds] + [
        tables[side][col][i] for _, side, col in extra]
    lines.append(f"| {name} | " + " | ".join(_f(c) for c in cells) + " |")
  lines.append("| **mean ± sd** | " + " | ".join(
      [_ms(st.epsilon[k]["mean"]) for k in st.kinds]
      + [_ms(tables[side][col]) for _, side, col in extra]) + " |")
  return lines


def _metrics_md(g: R.Group) -> list[str]:
  m = g.metrics
  variants = [v for v in _VARIANTS if v in m.tables]
  heads = [(_VARIANTS[v] + (f" ({m.ica_components} comp.)" if v != "raw"
                            else "")) for v in variants]
  lines = ["### Disentanglement metrics to the factors", "",
           f"`nearid_jax.metrics` on {m.rows} evaluation rows (mean ± sd over "
           "runs; higher is better), raw and after ICA with "
           f"{m.ica_components} components"
           + (" beside the controls PCA→k (whitening only) and PCA→k + a "
              "random rotation, so the gain of ICA itself shows"
              if "pca" in m.tables else "")
           + f". DCI uses the {m.dci_estimator} estimator"
           + (" (disentanglement_lib's gradient-boosted trees)"
              if m.dci_estimator == "gbt" else
              " (an L1 logistic regression per factor on device; "
              "`dci_estimator=\"gbt\"` gives disentanglement_lib's)")
           + ". InfoE is at Hsu et al.'s protocol (100 L-BFGS iterations, "
           "not invariant to linear maps of the latents)"
           + (f"; infoe_converged at {m.infoe_converged_iter} iterations "
              "(invariant)" if m.infoe_converged_iter else "")
           + ". `udr` compares the runs with each other (no factors)."]
  lines += [f"Note: {n}" for n in m.notes]
  lines += ["", "| metric | " + " | ".join(heads) + " |",
            "|---" * (len(heads) + 1) + "|"]
  cols = list(dict.fromkeys(c for v in variants for c in m.tables[v]))
  for col in cols:
    lines.append(f"| {col} | " + " | ".join(
        _ms(m.tables[v][col]) if col in m.tables[v] else "—"
        for v in variants) + " |")
  return lines


def _summary_md(report: R.Report) -> list[str]:
  rows = summary_rows(report)
  kinds = [k for k in (*_COLUMN_ORDER, "ica")
           if k in report.settings.get("kinds", [])]
  fields = list(dict.fromkeys(f for g in report.groups for f in g.grid))
  head = fields + ["runs"] + [f"ε {k}" for k in kinds] + [
      "MCC raw", "MCC ICA", "InfoM raw", "InfoM ICA"]
  lines = ["## Summary across grid points", "",
           "Mean ε over ordered pairs [95% bootstrap interval]; MCC and InfoM "
           "averaged over runs.", "",
           "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for g, row in zip(report.groups, rows):
    cells = [_value(g.grid.get(f, "")) for f in fields] + [str(row["runs"])]
    for k in kinds:
      e = row["epsilon"].get(k)
      cells.append("—" if e is None or e["value"] is None else
                   f"{e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]")
    cells += [_f(row[c]) for c in ("mcc_raw", "mcc_ica", "infom_raw",
                                   "infom_ica")]
    lines.append("| " + " | ".join(cells) + " |")
  return lines + [""]


def _bi_lipschitz_md(report: R.Report) -> list[str]:
  bl = report.bi_lipschitz
  lines = ["## Decoder bi-Lipschitz estimate (Theorem 1)", ""]
  if bl is None:
    return lines + ["Not computed."]
  if not np.isfinite(bl.one_plus_l).any():
    return lines + [bl.note]
  lines.append(f"{bl.note} Differentiated: the {bl.output}, at {bl.points} "
               "points per run."
               + (f" The true mixing's bound is 1 + L ≤ {bl.data_bound:.3g}."
                  if bl.data_bound else ""))
  lines += ["", "| run | 1 + L | σ_max/σ_min | sqrt(2L + L²) |",
            "|---|---|---|---|"]
  for r in report.runs:
    if r.valid and np.isfinite(bl.one_plus_l[r.index]):
      i = r.index
      lines.append(f"| {r.name} | {bl.one_plus_l[i]:.3f} | "
                   f"{bl.condition[i]:.3f} | {bl.theorem1_factor[i]:.3f} |")
  return lines


def to_markdown(report: R.Report, source: str = "") -> str:
  """report.md: per grid point the ε tables, structural and metric tables
  and the verdict; a summary across grid points first when there are several.

  Args:
    report: the result.
    source: where the runs came from (the training workdir), for the text.

  Returns:
    The Markdown text.
  """
  st = report.settings
  n_valid = sum(r.valid for r in report.runs)
  lines = ["# Near-identifiability report", ""]
  lines.append(
      f"Layer `{report.layer}` (d = {st['dim']}) of {n_valid} valid runs"
      + (f" (training workdir `{source}`)" if source else "")
      + f", on n = {st['n_rows']} held-out inputs, in {len(report.groups)} "
      f"group(s) (one per grid point; pairs never cross grid points). Each "
      f"map is fitted on {st['n_fit']} rows and evaluated on the other "
      f"{st['n_eval']}; ε is the ℓ2 error divided by the target run's "
      f"diameter ({st['diameter']} pairwise distance). Signed permutations "
      f"fit a per-dimension translation"
      f"{' and scale' if st['perm_scale'] else ' only'}. The verdict asks "
      f"every ordered pair to be within τ = {report.threshold:g} "
      "(Definition 1), not their mean.")
  dropped = [r.name for r in report.runs if not r.valid]
  if dropped:
    lines.append(f"Diverged runs, left out: {', '.join(dropped)}.")
  lines += [f"Note: {n}" for n in report.notes]
  lines.append("")
  if len(report.groups) > 1:
    lines += _summary_md(report)
  for g in report.groups:
    title = ("All runs" if not g.grid
             else "Grid point " + R.grid_label(g.grid))
    lines += [f"## {title} ({len(g.runs)} runs)", ""]
    lines += [f"Note: {n}" for n in g.notes]
    if g.notes:
      lines.append("")
    if g.statistical is not None:
      lines += _statistical_md(report, g) + [""]
    if g.structural is not None:
      lines += _structural_md(report, g) + [""]
    if g.metrics is not None:
      lines += _metrics_md(g) + [""]
    lines += ["### Verdict", "", g.verdict.text, ""]
  lines += _bi_lipschitz_md(report)
  lines += ["", "## Plots", "",
            "- `epsilon_heatmaps.png`: ε per pair (row target, column "
            "source) for each class, one row of panels per grid point",
            "- `epsilon_by_class.png`: mean ε by class, between runs and to "
            "the factors",
            "- `mcc.png`: MCC per run, raw and after ICA",
            "- `disentanglement.png`: the metric suite, raw and after ICA "
            "(when computed)",
            "- `epsilon_vs_bilipschitz.png`: rigid ε per pair against "
            "sqrt(2L + L²) of the decoders (when computed)",
            "- `epsilon_vs_grid.png`: mean ε against the swept value (with "
            "a grid)", ""]
  t = report.timing_s
  if t:
    lines.append("Timing (s): " + ", ".join(f"{k} {v}" for k, v in t.items())
                 + ".")
  lines.append(f"Config: see report.json (`config`); analysis seed "
               f"{report.config.get('seed')}.")
  return "\n".join(lines) + "\n"
