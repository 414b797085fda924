"""Table 1: statistical ε between runs, by model family, and across layers.

PAPER.md §4 Table 1 measures pairs of pretrained models; we train the
families ourselves (several seeds each, one program per model) and
measure every ordered pair of runs:

  * rows (`config.rows`): model families (autoencoder, masked
    autoencoder, classifier) on the synthetic process and on procedural
    Shapes3D, and a pair of model sizes of one family (row `source` set:
    runs of the source model mapped onto runs of the target model,
    "small → large");
  * columns: mean ε (mean ℓ2 / diameter of the target, evaluation half)
    after the best signed permutation, rigid map, linear map, and signed
    permutation after ICA (`align.pairwise_epsilon`), and the ICA
    efficiency as a ratio of mean errors, (mean perm − mean ICA) /
    (mean perm − mean rigid).

Each cell's seed aggregate is over target runs: run i's value is its mean
ε over its sources (the other runs, or the source model's runs); the
interval treats those per-run means as independent, which the shared
pairs make optimistic. A second table (`config.layers`) repeats the
columns for every named layer of one model (`config.layers_model`).

External models (pretrained embeddings) enter through the report's
compare command, not here (README "Reproducing the paper").
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from nearid_jax import align
from nearid_jax.paper import aggregate
from nearid_jax.paper import runs as runs_lib

NAME = "table1"
KINDS = ("perm", "rigid", "linear", "ica")
HEADERS = ("perm", "rigid", "linear", "ICA", "ICA eff.")


def _per_target(z_t: np.ndarray, z_s: np.ndarray | None, key
                ) -> tuple[dict[str, np.ndarray], str | None]:
  """Per target run, its mean ε over its sources, for every kind.

  z_s None: the runs of z_t among themselves (off-diagonal pairs).
  Returns ({kind: [R_t]}, note); a kind the data refuse (e.g. ICA on a
  rank-deficient layer) is NaN and the note says why.
  """
  if z_s is None:
    stack, rows, cols = z_t, np.arange(len(z_t)), np.arange(len(z_t))
  else:
    if z_t.shape[2] != z_s.shape[2]:
      return ({k: np.full(len(z_t), np.nan) for k in KINDS},
              f"dimensions differ ({z_t.shape[2]} vs {z_s.shape[2]})")
    stack = np.concatenate([z_t, z_s], axis=0)
    rows, cols = np.arange(len(z_t)), len(z_t) + np.arange(len(z_s))
  note = None
  res = {k: v for k, v in align.pairwise_epsilon(
      stack, ("perm", "rigid"), key=key).epsilon.items()}
  reduced, rank = runs_lib.reduce_to_rank(stack)
  if rank < stack.shape[2]:
    # Collinear columns: linear and ICA fits are not unique in the raw
    # coordinates; on the principal subspace they are (same errors).
    note = (f"linear/ICA on each run's top {rank} of {stack.shape[2]} "
            "principal coordinates (rank-deficient covariance)")
  try:
    res.update(align.pairwise_epsilon(reduced, ("linear", "ica"),
                                      key=key).epsilon)
  except ValueError as e:  # e.g. ICA refused: report perm / rigid only
    note = f"linear/ICA not computed: {e}"
  out = {}
  for k in KINDS:
    if k not in res:
      out[k] = np.full(len(rows), np.nan)
      continue
    mat = np.asarray(res[k]["mean"], np.float64)[np.ix_(rows, cols)]
    if z_s is None:
      mat = np.where(np.eye(len(rows), dtype=bool), np.nan, mat)
    out[k] = np.nanmean(mat, axis=1)
  return out, note


def _row_records(table: str, row: str, eps: dict[str, np.ndarray],
                 **extra) -> list[dict[str, Any]]:
  recs = [aggregate.record(table, row, k, eps[k], **extra) for k in KINDS]
  means = {r["column"]: r["mean"] for r in recs}
  eff = np.nan
  if None not in (means["perm"], means["rigid"], means["ica"]):
    eff = float(align.ica_efficiency(means["perm"], means["rigid"],
                                     means["ica"]))
  recs.append(aggregate.point(table, row, "ica_efficiency", eff,
                              len(eps["perm"]), **extra))
  return recs


def _valid_z(trained: runs_lib.Trained, layer: str) -> np.ndarray:
  if layer not in trained.z:
    raise ValueError(f"layer {layer!r} was not recorded for "
                     f"{trained.name!r} (has {sorted(trained.z)}); add it to "
                     "that model's eval.layers.")
  return trained.z[layer][trained.valid]


def _drop(z, what, notes):
  z, dropped = runs_lib.drop_constant_columns(z)
  if dropped:
    notes[what] = (f"dropped {len(dropped)} column(s) constant in some run "
                   f"(dead units): {dropped[:10]}")
  return z


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the models of `config.models`, measures both tables, writes.

  Raises:
    ValueError: a row naming an unknown model or unrecorded layer.
  """
  for row, spec in config.rows.items():
    for m in (spec.model, spec.source):
      if m and m not in config.models:
        raise ValueError(f"config.rows.{row}: unknown model {m!r}; known: "
                         f"{sorted(config.models)}.")
  configs = {n: c for n, c in config.models.items()}
  trained = runs_lib.train_models(configs, workdir)
  key = jax.random.key(config.seed)
  records, notes = [], {}
  for i, (row, spec) in enumerate(config.rows.items()):
    z_t = _valid_z(trained[spec.model], spec.layer)
    z_s = _valid_z(trained[spec.source], spec.layer) if spec.source else None
    if z_s is None:
      z_t = _drop(z_t, f"{row} columns", notes)
    else:  # one set of columns for the stacked pair of models
      both, dropped = runs_lib.drop_constant_columns(
          np.concatenate([z_t, z_s]))
      z_t, z_s = both[:len(z_t)], both[len(z_t):]
      if dropped:
        notes[f"{row} columns"] = f"dropped constant columns {dropped[:10]}"
    eps, note = _per_target(z_t, z_s, jax.random.fold_in(key, i))
    if note:
      notes[row] = note
    records += _row_records("table1", row, eps, dataset=spec.dataset,
                            label=spec.label)
  layer_rows = []
  if config.layers_model:
    t = trained[config.layers_model]
    for j, layer in enumerate(config.layers):
      z_l = _drop(_valid_z(t, layer), f"layer {layer} columns", notes)
      eps, note = _per_target(z_l, None,
                              jax.random.fold_in(key, 1000 + j))
      if note:
        notes[f"layer {layer}"] = note
      records += _row_records("table1_layers", layer, eps,
                              model=config.layers_model)
      layer_rows.append(layer)
  speed = runs_lib.speed_rows(trained, configs, None)
  md = _markdown(config, records, layer_rows, notes)
  md += "\n\n## Speed\n\n" + runs_lib.speed_markdown(speed) + "\n"
  return aggregate.write_results(workdir, NAME, records, md, notes=notes,
                                 speed=speed)


def _markdown(config, records, layer_rows, notes) -> str:
  cols = (*KINDS, "ica_efficiency")
  parts = ["# Table 1: statistical ε between runs", "",
           "Mean ℓ2 / diameter of the target on held-out rows (lower is "
           "better), mean ± 95% t-interval over target runs; ICA eff. = "
           "(mean perm − mean ICA) / (mean perm − mean rigid) of the row's "
           "means.", ""]
  rows = list(config.rows)
  labels = {r: f"{config.rows[r].label} ({config.rows[r].dataset})"
            for r in rows}
  table = aggregate.markdown_table(records, "table1", rows, cols, HEADERS,
                                   row_header="model")
  for r in rows:
    table = table.replace(f"| {r} |", f"| {labels[r]} |", 1)
  parts += [table, ""]
  if layer_rows:
    parts += [f"## Across layers of `{config.layers_model}`", "",
              aggregate.markdown_table(records, "table1_layers", layer_rows,
                                       cols, HEADERS, row_header="layer"),
              ""]
  parts += ["Paper (pretrained pairs, PAPER.md §4): perm > ICA > rigid > "
            "linear in every row, ICA efficiency 25–59%.", ""]
  for k, v in notes.items():
    parts.append(f"* note, {k}: {v}")
  return "\n".join(parts)
