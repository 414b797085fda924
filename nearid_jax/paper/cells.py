"""The paper's cell-microscopy experiment: batch effects, Base / PCA /
PCA+ICA / PCA+Rand (`nearid_jax.batch_effects`).

Two sources of well embeddings:

* **simulator** (default): the 5-channel ViT MAE of
  `experiments/configs/vit_mae.py:cells` is trained on the Cell Painting
  simulator (`nearid_jax.data.cells.CellPainting` with its default world:
  8 knock-outs + control, 4 experiments x 3 plates, effect size 1, batch
  strength 1), several seeds in one program (`nearid_jax.train.run`, in
  workdir/train; rerunning resumes), and its held-out wells
  (`config.train.data.eval_size`, drawn at random from the simulator) are
  embedded at `config.layer`;
* **table**: `config.embeddings` + `config.metadata`, an RxRx3-core-style
  pair read by `nearid_jax.data.embeddings.read_table` (one run, no
  training). Controls are the rows whose `config.control_column` is in
  `config.control_values`; the other rows keep their `config.class_column`
  value (empty values dropped; `config.perturbation_types` filters on
  `perturbation_type` when set).

Batches are `config.batch_columns` joined (default the experiment). The
results: results.json, results.md (transform x metric, mean and 95%
t-interval over (run, held-out batch) cells for the gene AUROC and over
runs for the others), auroc_per_gene.png and wells_2d.png.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
from scipy import stats

from nearid_jax import batch_effects
from nearid_jax import plotting
from nearid_jax import train
from nearid_jax.data import cells as cells_lib
from nearid_jax.data import embeddings as embeddings_lib

CONTROL = "<control>"
# The paper's numbers (OpenPhenom on RxRx3 wells; gene EIF3H; means only).
PAPER = {"eif3h_auroc": {"base": 0.682, "pca": 0.724, "pca_ica": 0.749,
                         "pca_rand": 0.725},
         "concentration_top25": {"base": 0.163, "pca": 0.332,
                                 "pca_ica": 0.386, "pca_rand": 0.287},
         "direction": "PCA+ICA > PCA ≈ PCA+Rand > Base (held-out batches)"}


def _simulator_wells(config, workdir):
  """(x [R, n, d], metadata columns, settings) from a trained MAE."""
  tcfg = config.train
  if tcfg.data.dataset != "cells":
    raise ValueError(f"config.train.data.dataset must be 'cells', got "
                     f"{tcfg.data.dataset!r}.")
  train_dir = os.path.join(workdir, "train")
  summary = train.run(tcfg, train_dir)
  with np.load(os.path.join(train_dir, "representations.npz")) as f:
    key = f"z/{config.layer}"
    if key not in f:  # a workdir trained earlier with other layers
      layers = sorted(k[2:] for k in f if k.startswith("z/"))
      raise ValueError(f"config.layer = {config.layer!r} is not among the "
                       f"layers saved in {train_dir}: {layers}.")
    x, u, valid = f[key], f["u"], f["valid"]
  if not valid.any():
    raise ValueError(f"every run in {train_dir} diverged; nothing to analyse.")
  sim = cells_lib.CellPainting()  # the world the trainer's "cells" draws
  meta = sim.well_metadata(np.rint(u).astype(np.int32))
  settings = {"simulator": {f: getattr(sim, f) for f in (
      "num_genes", "num_experiments", "plates_per_experiment", "effect_size",
      "batch_strength", "control_fraction", "seed")},
      "model": tcfg.model.get("size", tcfg.model.get("name")),
      "num_steps": int(tcfg.num_steps), "num_seeds": int(tcfg.num_seeds),
      "image_size": int(tcfg.data.image_size), "wells": int(x.shape[1]),
      "layer": config.layer, "dropped_diverged_runs": int((~valid).sum()),
      "final_eval_loss": [r["eval_loss"] for r in summary["runs"]]}
  return x[valid], meta, settings


def _table_wells(config):
  """(x [1, n, d], metadata columns, settings) from an embedding table."""
  if not config.metadata:
    raise ValueError("config.embeddings is set but config.metadata is not; "
                     "pass --config.metadata=PATH (the metadata CSV).")
  need = tuple(dict.fromkeys(
      (config.class_column, config.control_column, *config.batch_columns)
      + (("perturbation_type",) if config.perturbation_types else ())))
  table = embeddings_lib.read_table(config.embeddings, config.metadata,
                                    required_columns=need)
  settings = {"embeddings": config.embeddings, "metadata": config.metadata,
              "wells_read": len(table), "dim": table.dim}
  return table.embeddings[None], table.metadata, settings


def _design(meta, config):
  """(keep [n] bool, classes [n] str, batches [n] str)."""
  n = len(meta[config.class_column])
  is_ctrl = np.isin(np.asarray(meta[config.control_column]).astype(str),
                    list(config.control_values))
  cls = np.asarray(meta[config.class_column]).astype(str)
  keep = is_ctrl | ~np.isin(cls, ["", "nan", "None"])
  if config.perturbation_types:
    keep &= is_ctrl | np.isin(np.asarray(meta["perturbation_type"]).astype(
        str), list(config.perturbation_types))
  classes = np.where(is_ctrl, CONTROL, cls)
  batches = np.array(["/".join(str(meta[c][i]) for c in config.batch_columns)
                      for i in range(n)])
  if not is_ctrl.any() and config.fit_on == "control":
    seen = sorted(set(np.asarray(meta[config.control_column]).astype(str)))
    raise ValueError(
        f"no control wells: column {config.control_column!r} never takes a "
        f"value in config.control_values={list(config.control_values)} "
        f"(it has {seen[:8]}); set --config.control_values or "
        "--config.fit_on=all.")
  return keep, classes, batches


def interval(values) -> dict[str, float]:
  """Mean and 95% t-interval of the finite values (NaN bounds for n < 2)."""
  v = np.asarray(values, np.float64).ravel()
  v = v[np.isfinite(v)]
  n = int(v.size)
  if n == 0:
    return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
  mean = float(v.mean())
  if n < 2:
    return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n}
  half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
  return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def summarise(res: batch_effects.Analysis) -> dict[str, Any]:
  """Per transform: intervals of each metric, per-gene AUROC means."""
  genes = [c for i, c in enumerate(res.class_names) if i != res.control]
  cols = [i for i in range(len(res.class_names)) if i != res.control]
  # nanmean of all-NaN slices (a gene absent from a held-out batch) warns;
  # those cells are NaN on purpose and skipped by `interval`.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    cell = {k: np.nanmean(s.gene_auroc[..., cols], -1)  # [R, B]
            for k, s in res.scores.items()}
    out = {}
    for k, s in res.scores.items():
      out[k] = {
          "label": batch_effects.LABELS[k],
          "gene_auroc": interval(cell[k]),
          "batch_auroc": interval(s.batch_auroc),
          "hoyer": interval(s.hoyer),
          "concentration": interval(np.nanmean(s.concentration[:, cols],
                                               -1)),
          "per_gene_auroc": {
              g: interval(s.gene_auroc[..., c]) for g, c in zip(genes, cols)},
      }
      if "pca" in cell and k != "pca":
        out[k]["gene_auroc_minus_pca"] = interval(cell[k] - cell["pca"])
  return out


def ordering(summary: dict[str, Any]) -> dict[str, Any]:
  """Whether the mean held-out AUROCs follow the paper's direction."""
  m = {k: v["gene_auroc"]["mean"] for k, v in summary.items()}
  if not set(batch_effects.KINDS) <= set(m):
    return {"holds": None, "note": "needs all four transforms"}
  holds = (m["pca_ica"] > max(m["pca"], m["pca_rand"])
           and min(m["pca"], m["pca_rand"]) > m["base"])
  order = " > ".join(batch_effects.LABELS[k]
                     for k in sorted(m, key=lambda k: -m[k]))
  return {"holds": bool(holds), "observed": order,
          "paper": PAPER["direction"]}


def _fmt(iv: dict[str, float]) -> str:
  if not np.isfinite(iv["mean"]):
    return "n/a"
  if not np.isfinite(iv["lo"]):
    return f"{iv['mean']:.3f}"
  return f"{iv['mean']:.3f} ± {(iv['hi'] - iv['lo']) / 2:.3f}"


def to_markdown(result: dict[str, Any]) -> str:
  """results.md: settings, the transform x metric table, the ordering."""
  s = result["transforms"]
  lines = [
      "# Batch effects in cell embeddings: Base / PCA / PCA+ICA / PCA+Rand",
      "", f"Source: {result['source']}; {result['num_runs']} run(s), "
      f"{len(result['batches'])} batches ({', '.join(result['batch_columns'])}"
      f"), {len(result['genes'])} genes + controls, fit on "
      f"{result['fit_on']} wells, negatives: {result['negatives']}.",
      f"Settings: `{json.dumps(result['settings'], default=str)}`", "",
      "Mean ± 95% t-interval half-width; held-out gene AUROC over (run, "
      "held-out batch) cells (mean over genes in each), the other metrics "
      "over runs.", "",
      "| transform | held-out gene AUROC ↑ | − PCA (paired) "
      "| batch AUROC ↓ | Hoyer sparsity | signal concentration (top 25%) |",
      "|---|---|---|---|---|---|"]
  for k, v in s.items():
    diff = _fmt(v["gene_auroc_minus_pca"]) if "gene_auroc_minus_pca" in v \
        else "—"
    lines.append(f"| {v['label']} | {_fmt(v['gene_auroc'])} | {diff} | "
                 f"{_fmt(v['batch_auroc'])} | {_fmt(v['hoyer'])} | "
                 f"{_fmt(v['concentration'])} |")
  o = result["ordering"]
  lines += ["", f"Paper: {PAPER['direction']}; EIF3H AUROC "
            + ", ".join(f"{batch_effects.LABELS[k]} {v}"
                        for k, v in PAPER["eif3h_auroc"].items()) + "."]
  if o.get("holds") is not None:
    verdict = "holds" if o["holds"] else "does NOT hold"
    lines.append(f"Observed (mean held-out AUROC): {o['observed']} — the "
                 f"paper's ordering {verdict} here.")
  return "\n".join(lines) + "\n"


def first_run_features(res: batch_effects.Analysis, x) -> dict[str, np.ndarray]:
  """{transform label: run 0's [n, k] features}, for `plotting.plot_wells_2d`."""
  return {batch_effects.LABELS[k]: np.asarray(batch_effects.apply(
      jax.tree.map(lambda a: a[0], t), np.asarray(x)[0]))
          for k, t in res.transforms.items()}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the analysis fields before anything trains or reads.

  Raises:
    ValueError / FileNotFoundError: naming the field.
  """
  def bad(field, msg):
    raise ValueError(f"config.{field}: {msg}")
  if config.fit_on not in batch_effects.FIT_ON:
    bad("fit_on", f"must be one of {batch_effects.FIT_ON}, got "
        f"{config.fit_on!r}.")
  if config.negatives not in ("control", "rest"):
    bad("negatives", f"must be 'control' or 'rest', got {config.negatives!r}.")
  if not config.batch_columns:
    bad("batch_columns", "needs at least one column (e.g. experiment_name).")
  if not 0 < config.top_fraction <= 1:
    bad("top_fraction", f"must be in (0, 1], got {config.top_fraction}.")
  if config.l1 < 0 or config.num_iters < 1 or config.batch_folds < 2:
    bad("l1/num_iters/batch_folds", "need l1 >= 0, num_iters >= 1, "
        "batch_folds >= 2.")
  if not config.embeddings and config.layer not in config.train.eval.layers:
    bad("layer", f"{config.layer!r} is not in config.train.eval.layers = "
        f"{tuple(config.train.eval.layers)}.")
  for field in ("embeddings", "metadata"):
    path = config.get(field)
    if path and not os.path.exists(path):
      raise FileNotFoundError(f"config.{field}: file not found: {path}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the cell experiment (see the module doc) and writes its results.

  Args:
    config: `experiments/configs/paper/cells.py`.
    workdir: output directory.

  Returns:
    The content of results.json.

  Raises:
    ValueError / FileNotFoundError: bad config, missing columns or files,
      no control wells, a gene in one batch only, NaN embeddings (the
      message names the column, gene or well).
  """
  validate_config(config)
  if config.embeddings:
    x, meta, settings = _table_wells(config)
    source = "table"
  else:
    x, meta, settings = _simulator_wells(config, workdir)
    source = "simulator"
  keep, classes, batches = _design(meta, config)
  res = batch_effects.analyse(
      x[:, keep], classes[keep], batches[keep], control=CONTROL,
      key=jax.random.key(config.seed), fit_on=config.fit_on,
      n_components=config.n_components or None, negatives=config.negatives,
      l1=config.l1, num_iters=config.num_iters,
      batch_folds=config.batch_folds, top_fraction=config.top_fraction,
      what=config.class_column, batch_what="/".join(config.batch_columns))
  summary = summarise(res)
  genes = [c for i, c in enumerate(res.class_names) if i != res.control]
  result = {"experiment": "cells", "source": source, "settings": settings,
            "num_runs": int(x.shape[0]), "wells": int(keep.sum()),
            "batch_columns": list(config.batch_columns),
            "batches": res.batch_names, "genes": genes,
            "fit_on": config.fit_on, "negatives": config.negatives,
            "transforms": summary, "ordering": ordering(summary),
            "paper": PAPER}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(result, f, indent=2, default=float)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(to_markdown(result))
  plotting.plot_batch_effect_auroc(
      summary, genes, os.path.join(workdir, "auroc_per_gene.png"))
  plotting.plot_wells_2d(first_run_features(res, x[:, keep]), batches[keep],
                         os.path.join(workdir, "wells_2d.png"))
  return result
