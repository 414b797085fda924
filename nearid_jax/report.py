"""The near-identifiability report: train R runs, measure ε, write it up.

`run(config, workdir)` is the main job (experiments/identifiability.py):

  1. trains the runs of `config.train` with `nearid_jax.train.run` into
     `workdir/train` (rerunning resumes), or reads an existing training
     workdir (`config.train_workdir`);
  2. loads the held-out representations of `config.layer`
     (representations.npz), dropping diverged runs;
  3. measures statistical ε between every ordered pair of runs
     (`align.pairwise_epsilon`), the ICA efficiency, structural ε to the
     true factors with MCC and R² (`align.structural`), and the decoders'
     bi-Lipschitz estimates (`align.decoder_bi_lipschitz`);
  4. writes report.json, report.md (the paper's Table 1 form, the
     structural table and a verdict) and PNG plots.

report.json (lists indexed by run; null where a run diverged):
  "runs": [{"run", "name", "seed", "valid"}],
  "layer", "kinds", "threshold",
  "epsilon": {kind: {"mean": [[R×R]], "max": [[R×R]], "q99": [[R×R]]}}
      (row i = target run i, column j = source run j),
  "pairs": {kind: {stat: {"mean", "std", "min", "max", "count"}}} over
      ordered pairs of distinct valid runs,
  "ica_efficiency": {"mean": float, "std": float, "matrix": [[R×R]]},
  "structural": {"mcc_raw", "mcc_raw_spearman", "mcc_ica",
      "mcc_ica_spearman", "r2": [R], "epsilon": {kind: {"mean", "max",
      "q99": [R]}}},
  "disentanglement": {"raw": {column: [R]}, "ica": {column: [R]},
      "metrics": [names], "notes": [str]} (`nearid_jax.metrics.evaluate_all`
      on the evaluation rows against the factors, before and after ICA;
      absent when config.metrics is empty),
  "bi_lipschitz": {"one_plus_l": [R], "theorem1_factor": [R],
      "data_bound": float | null, "points": int, "note": str},
  "verdict": {"statistical": kind | null, "after_ica": bool,
      "structural": kind | null, "structural_after_ica": bool, "text": str}
      (the strictest class whose mean ε is within `threshold`),
  "diameter": [R], "settings": {...}, "timing_s": {...}, "config": {...}.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nearid_jax import align
from nearid_jax import metrics as metrics_lib
from nearid_jax import plotting
from nearid_jax import train
from nearid_jax import workdir as workdir_lib
from nearid_jax.models import conv as conv_lib

# Strictest first: each class contains the ones before it.
_ORDER = ("identity", "perm", "rigid", "similarity", "linear")
_REQUIRED = ("u", "seed", "valid")
_OPTIONAL = ("x", "label", "grid_index")
_NAMES = {"identity": "the identity", "perm": "signed permutations",
          "rigid": "rigid maps", "similarity": "similarities",
          "linear": "linear (affine) maps",
          "ica": "signed permutations after ICA"}


def default_config() -> ml_collections.ConfigDict:
  """The report's settings; `train` is a full trainer config (8 AE runs)."""
  c = ml_collections.ConfigDict()
  c.train = train.default_config()
  c.train_workdir = ""       # analyse this training workdir instead
  c.layer = "latent"         # representation analysed
  c.kinds = ("perm", "rigid", "linear", "ica")
  c.seed = 0                 # key of the row split, subsample and ICA start
  c.fit_fraction = 0.5
  c.diameter = "max"         # or "q99"
  c.dims = "pad"             # factor/representation dimension mismatch
  c.perm_scale = False       # "perm": translation only (Table 1 reading)
  c.ridge = 0.0
  c.threshold = 0.05         # ε (mean ℓ2 / diameter) counted as "near"
  c.ica = ml_collections.ConfigDict(dict(max_iter=400, tol=1e-4,
                                         n_restarts=1))
  c.bi_lipschitz_points = 256  # evaluation points per decoder
  # Disentanglement metrics (nearid_jax.metrics) to the factors, raw and
  # after ICA; () to skip. MCC and R² are always in the structural table.
  c.metrics = ("infomec", "dci", "mig", "sap", "modularity_explicitness",
               "udr")
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the analysis settings before anything trains or compiles.

  Raises:
    ValueError: naming the field and the fix.
  """
  def bad(field, msg):
    raise ValueError(f"config.{field}: {msg}")
  kinds = tuple(config.kinds)
  unknown = [k for k in kinds if k not in align.KINDS]
  if unknown or not kinds:
    bad("kinds", f"unknown kind(s) {unknown or '(none)'}; choose from "
        f"{align.KINDS}.")
  if not 0 < config.fit_fraction < 1:
    bad("fit_fraction", f"must be in (0, 1), got {config.fit_fraction}.")
  if config.diameter not in align.DIAMETERS:
    bad("diameter", f"must be one of {align.DIAMETERS}, got "
        f"{config.diameter!r}.")
  if config.dims not in align.DIMS:
    bad("dims", f"must be one of {align.DIMS}, got {config.dims!r}.")
  if config.ridge < 0:
    bad("ridge", f"must be >= 0, got {config.ridge}.")
  if not config.threshold > 0:
    bad("threshold", f"must be > 0, got {config.threshold}.")
  unknown = sorted(set(config.metrics) - set(metrics_lib.ALL_METRICS))
  if unknown:
    bad("metrics", f"unknown metric(s) {unknown}; choose from "
        f"{metrics_lib.ALL_METRICS}, or () for none.")
  if config.bi_lipschitz_points < 1:
    bad("bi_lipschitz_points", f"must be >= 1, got "
        f"{config.bi_lipschitz_points}.")
  # The train section is checked once, by train.run, before it compiles.
  if not config.train_workdir:
    if config.layer not in config.train.eval.layers:
      bad("layer", f"{config.layer!r} is not among the trained layers "
          f"config.train.eval.layers = {tuple(config.train.eval.layers)}; "
          f"add it, e.g. --config.train.eval.layers=\"('{config.layer}',)\".")


def load_representations(path: str, layer: str) -> dict[str, np.ndarray]:
  """Reads representations.npz written by `train.run`, checking its keys.

  Args:
    path: the .npz file.
    layer: the layer to read ("z/<layer>").

  Returns:
    {"z": [R, n, d], "u": [n, k], "seed": [R], "valid": [R] bool, ...}.

  Raises:
    FileNotFoundError: no such file.
    ValueError: unexpected or missing keys (listing found and expected),
      or inconsistent shapes.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: train first, or point "
                            "config.train_workdir at a training workdir.")
  data = workdir_lib.load_npz(path)  # names the path if it is truncated
  found = sorted(data)
  layers = sorted(k[2:] for k in found if k.startswith("z/"))
  expected = [f"z/{layer}", *_REQUIRED]
  allowed = set(expected) | set(_OPTIONAL)
  unexpected = [k for k in found if k not in allowed
                and not k.startswith("z/")]
  missing = [k for k in expected if k not in data]
  if unexpected or missing:
    raise ValueError(
        f"{path} is not a representations file of nearid_jax.train: "
        + (f"unexpected key(s) {unexpected}; " if unexpected else "")
        + (f"missing key(s) {missing}; " if missing else "")
        + f"found {found}, expected {expected} (plus optional "
        f"{list(_OPTIONAL)} and z/<layer> for other layers). Layers in the "
        f"file: {layers}.")
  z, u = data[f"z/{layer}"], data["u"]
  if z.ndim != 3 or u.ndim != 2 or z.shape[1] != u.shape[0]:
    raise ValueError(f"{path}: z/{layer} has shape {z.shape} and u {u.shape}"
                     "; expected [R, n, d] and [n, k] with the same n.")
  r = z.shape[0]
  for k in ("seed", "valid"):
    if data[k].shape != (r,):
      raise ValueError(f"{path}: {k} has shape {data[k].shape}, expected "
                       f"({r},) for {r} runs.")
  out = dict(data)
  out.update(z=z.astype(np.float32), u=u.astype(np.float32),
             valid=data["valid"].astype(bool))
  return out


def run(config: ml_collections.ConfigDict, workdir: str, *,
        overwrite: bool = False) -> dict[str, Any]:
  """Trains (or reads) the runs, measures ε and writes the report.

  Args:
    config: see `default_config`.
    workdir: output directory; training goes to workdir/train unless
      `config.train_workdir` names an existing one.
    overwrite: allow a report of different settings to replace an existing
      one; training starts over only if its own config changed (otherwise
      it resumes).

  Returns:
    The content of report.json.

  Raises:
    ValueError: invalid config or workdir (before anything compiles), or a
      representations file with unexpected keys.
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  _check_previous(config, workdir, overwrite)
  timing = {}
  t0 = time.time()
  if config.train_workdir:
    train_dir = config.train_workdir
  else:
    train_dir = os.path.join(workdir, "train")
    train.run(config.train, train_dir,
              overwrite=overwrite and _train_config_changed(config.train,
                                                            train_dir))
  timing["train"] = time.time() - t0
  reps = load_representations(os.path.join(train_dir, "representations.npz"),
                              config.layer)
  names = _run_names(train_dir, reps)
  valid = reps["valid"]
  if valid.sum() < 2:
    raise ValueError(f"only {int(valid.sum())} run(s) in {train_dir} "
                     "finished without diverging; ε needs at least 2.")
  z = reps["z"][valid]
  key = jax.random.key(config.seed)
  kinds = tuple(config.kinds)
  common = dict(key=key, fit_fraction=config.fit_fraction,
                diameter=config.diameter, ridge=config.ridge,
                perm_scale=config.perm_scale,
                ica_options=config.ica.to_dict())

  t = time.time()
  pw = align.pairwise_epsilon(z, kinds, **common)
  timing["pairwise"] = time.time() - t
  t = time.time()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", UserWarning)
    st = align.structural(z, reps["u"], kinds, dims=config.dims, **common)
    st = _structural_metrics(st, key, tuple(config.metrics))
  notes = _merge_column_notes(str(w.message) for w in caught)
  for note in notes:
    logging.warning("%s", note)
  timing["structural"] = time.time() - t
  t = time.time()
  bl = _bi_lipschitz(config, train_dir, reps, valid)
  timing["bi_lipschitz"] = time.time() - t

  report = _assemble(config, names, reps, valid, pw, st, bl, notes)
  report["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
  t = time.time()
  _plots(workdir, report, names)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(_markdown(report, train_dir))
  report["timing_s"]["write"] = round(time.time() - t, 2)
  report["timing_s"]["total"] = round(time.time() - t0, 2)
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1, allow_nan=False)
  return report


# --- pieces ---------------------------------------------------------------


def _check_previous(config, workdir, overwrite):
  """Refuses to replace a report of other settings without `overwrite`."""
  path = os.path.join(workdir, "report.json")
  if overwrite or not os.path.exists(path):
    return
  with open(path) as f:
    try:
      old = json.load(f).get("config", {})
    except json.JSONDecodeError:
      return
  diffs = train.config_diff(old, config, section="train.")
  if diffs:
    raise ValueError(
        f"--workdir {workdir!r} holds a report of different settings "
        f"({'; '.join(diffs)}). Use a new --workdir, or pass --overwrite.")


def _merge_column_notes(messages) -> list[str]:
  """One note per message kind: "factors[:, 0] looks ..." for columns 0..3
  becomes "factors[:, 0, 1, 2, 3] looks ..."."""
  merged: dict[str, list[str]] = {}
  for m in messages:
    match = re.match(r"factors\[:, (\d+)\](.*)", m, re.S)
    key, col = (match.group(2), match.group(1)) if match else (m, None)
    cols = merged.setdefault(key, [])
    if col is not None and col not in cols:
      cols.append(col)
  return [f"factors[:, {', '.join(c)}]{k}" if c else k
          for k, c in merged.items()]


def _train_config_changed(train_config, train_dir) -> bool:
  """True when train_dir holds a training run of another config."""
  return bool(train.workdir_config_diff(train_dir, train_config))


def _run_names(train_dir, reps) -> list[str]:
  path = os.path.join(train_dir, "final.json")
  if os.path.exists(path):
    with open(path) as f:
      runs = json.load(f).get("runs", [])
    if len(runs) == len(reps["seed"]):
      return [r["name"] for r in runs]
  return [f"seed{int(s)}" for s in reps["seed"]]


def _bi_lipschitz(config, train_dir, reps, valid) -> dict[str, Any]:
  """1 + L of each run's decoder at its own latent codes."""
  note = ("1 + L = max(σ_max, 1/σ_min) of the decoder Jacobian over "
          "evaluation points (the run's latent codes), docs/paper.md "
          "Theorem 1.")
  r = len(valid)
  out = {"one_plus_l": [None] * r, "theorem1_factor": [None] * r,
         "data_bound": None, "points": 0, "note": note}
  try:
    trainer, state = train.load_trained(train_dir)
  except FileNotFoundError as e:  # e.g. representations from another tool
    out["note"] = f"not computed: {e}"
    return out
  data_cfg = trainer.config.data
  if data_cfg.name == "synthetic":
    from nearid_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    out["data_bound"] = float(synthetic.bi_lipschitz_bound(data_cfg))
  if config.layer != "latent":
    out["note"] = (f"not computed: the decoder maps the 'latent' layer, not "
                   f"{config.layer!r}.")
    return out
  m = min(int(config.bi_lipschitz_points), reps["z"].shape[1])
  idx = np.flatnonzero(valid)
  params = jax.tree.map(lambda x: x[idx], state.params)
  model_state = jax.tree.map(lambda x: x[idx], state.model_state)
  hps = {k: jnp.asarray(v[idx]) for k, v in trainer.runs.hparams.items()}
  points = jnp.asarray(reps["z"][idx, :m])

  probe = trainer.model(trainer.runs.hparams)
  if not hasattr(probe, "decode"):
    out["note"] = (f"not computed: the model ({type(probe).__name__}) has "
                   "no decoder.")
    return out

  def one(p, ms, hp, zp):
    model = trainer.model(hp)

    def decode(v):  # one latent [k] -> the flattened output [D]
      x = model.apply({"params": p, **ms}, v[None], method="decode")
      return x.reshape(-1)
    return align.decoder_bi_lipschitz(decode, zp)["one_plus_l"]
  # Our conv layers' CPU custom VJP is reverse-mode only; trace them as
  # lax convolutions here so that jacfwd (k columns, not D rows) works.
  with conv_lib.forward_mode():
    vals = np.asarray(jax.jit(jax.vmap(one))(params, model_state, hps,
                                             points))
  for i, v in zip(idx, vals):
    out["one_plus_l"][i] = _num(v)
    out["theorem1_factor"][i] = _num(align.theorem1_factor(v))
  out["points"] = m
  return out


def _structural_metrics(st: align.Structural, key, suite) -> dict:
  """ε of `align.structural` with MCC (raw / after ICA; Pearson /
  Spearman), affine R² and the optional metric suite per run."""
  u_eval = st.factors_eval
  out = {"epsilon": st.epsilon, "diameter": st.diameter, "valid": st.valid}
  for name, z in (("raw", st.codes_eval), ("ica", st.sources_eval)):
    out[f"mcc_{name}"] = np.asarray(
        metrics_lib.mcc(z, u_eval, method="pearson")["mcc"])
    out[f"mcc_{name}_spearman"] = np.asarray(
        metrics_lib.mcc(z, u_eval, method="spearman")["mcc"])
  # R² on all rows (metrics.r2 makes its own fit/score split).
  all_rows = jnp.concatenate([st.codes_fit, st.codes_eval], axis=1)
  u_all = jnp.concatenate([st.factors_fit, st.factors_eval], axis=0)
  out["r2"] = np.asarray(metrics_lib.r2(all_rows, u_all,
                                        key=jax.random.fold_in(key, 7))["r2"])
  if suite:
    k_suite = jax.random.fold_in(key, 8)
    try:
      out["suite"] = {
          name: metrics_lib.evaluate_all(z, u_eval, key=k_suite,
                                         metrics=suite)
          for name, z in (("raw", st.codes_eval), ("ica", st.sources_eval))}
    except ValueError as e:  # e.g. fewer evaluation rows than classes
      out["suite_error"] = str(e)
  return out


def _num(v):
  v = float(v)
  return v if np.isfinite(v) else None


def _full(mat_valid, valid) -> list:
  """[Rv, Rv] over valid runs -> [R, R] nested lists with nulls."""
  r = len(valid)
  idx = np.flatnonzero(valid)
  full = np.full((r, r), np.nan)
  full[np.ix_(idx, idx)] = mat_valid
  return [[_num(x) for x in row] for row in full]


def _per_run(vec_valid, valid) -> list:
  out = [None] * len(valid)
  for i, v in zip(np.flatnonzero(valid), np.asarray(vec_valid)):
    out[i] = _num(v)
  return out


def _pair_summary(mat) -> dict[str, Any]:
  mat = np.asarray(mat, np.float64)
  vals = mat[~np.eye(len(mat), dtype=bool)]
  vals = vals[np.isfinite(vals)]
  if not vals.size:
    return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
  return {"mean": float(vals.mean()), "std": float(vals.std()),
          "min": float(vals.min()), "max": float(vals.max()),
          "count": int(vals.size)}


def _verdict(config, pairs, structural) -> dict[str, Any]:
  tau = config.threshold
  kinds = [k for k in _ORDER if k in pairs]
  stat = next((k for k in kinds
               if pairs[k]["mean"]["mean"] is not None
               and pairs[k]["mean"]["mean"] <= tau), None)
  after_ica = ("ica" in pairs and pairs["ica"]["mean"]["mean"] is not None
               and pairs["ica"]["mean"]["mean"] <= tau)
  s_eps = structural["epsilon"]

  def worst(k):
    v = [x for x in s_eps[k]["mean"] if x is not None]
    return max(v) if v else None
  struct = next((k for k in kinds if k in s_eps and worst(k) is not None
                 and worst(k) <= tau), None)
  struct_ica = ("ica" in s_eps and worst("ica") is not None
                and worst("ica") <= tau)

  def fmt(k):
    return f"{pairs[k]['mean']['mean']:.3f} ± {pairs[k]['mean']['std']:.3f}"
  parts = []
  if stat is None:
    loosest = kinds[-1] if kinds else None
    parts.append(
        f"At the threshold ε ≤ {tau:g} (mean ℓ2 error / diameter), the runs "
        f"are **not** statistically near-identifiable up to any measured "
        f"class" + (f" (even {_NAMES[loosest]} leave ε = {fmt(loosest)})"
                    if loosest else "") + ".")
  else:
    linf = pairs[stat]["max"]["max"]
    parts.append(
        f"The runs are **statistically near-identifiable up to "
        f"{_NAMES[stat]}**: mean ε = {fmt(stat)} over all ordered pairs "
        f"(threshold {tau:g}); the worst pair's worst point gives the L∞ "
        f"ε = {linf:.3f} of Definition 1.")
    stricter = [k for k in kinds[:kinds.index(stat)]]
    if stricter:
      parts.append("They are not near-identifiable up to the stricter "
                   + ", ".join(f"{_NAMES[k]} (ε = {fmt(k)})"
                               for k in stricter) + ".")
  if "ica" in pairs and pairs["ica"]["mean"]["mean"] is not None:
    eff = pairs.get("_efficiency")
    eff_txt = f" (ICA efficiency {100 * eff:.0f}%)" if eff is not None else ""
    parts.append(
        f"After ICA the signed-permutation error drops to {fmt('ica')}"
        f"{eff_txt}, so the runs are "
        + ("" if after_ica else "not ")
        + f"near-identifiable up to {_NAMES['ica']} at this threshold.")
  if struct is not None:
    parts.append(f"Structurally (each run against the standardised true "
                 f"factors), every run is within ε ≤ {tau:g} of the factors "
                 f"up to {_NAMES[struct]} (worst run: {worst(struct):.3f})")
  else:
    parts.append(f"Structurally, no measured class without ICA brings every "
                 f"run within ε ≤ {tau:g} of the true factors")
  if "ica" in s_eps and worst("ica") is not None:
    parts[-1] += (f"; after ICA, every run is {'' if struct_ica else 'not '}"
                  f"within it up to signed permutations (worst run: "
                  f"{worst('ica'):.3f})"
                  + (", i.e. disentangled" if struct_ica else "") + ".")
  else:
    parts[-1] += "."
  mr, mi = structural.get("mcc_raw"), structural.get("mcc_ica")
  if mr and mi:
    mr = np.nanmean([np.nan if v is None else v for v in mr])
    mi = np.nanmean([np.nan if v is None else v for v in mi])
    parts.append(f"MCC to the factors rises from {mr:.3f} (raw) to {mi:.3f} "
                 "after ICA.")
  return {"statistical": stat, "after_ica": bool(after_ica),
          "structural": struct, "structural_after_ica": bool(struct_ica),
          "text": " ".join(parts)}


def _assemble(config, names, reps, valid, pw, st, bl,
              notes) -> dict[str, Any]:
  kinds = tuple(config.kinds)
  eps = {k: {s: _full(np.asarray(pw[k][s]), valid)
             for s in ("mean", "max", "q99")} for k in kinds}
  pairs = {k: {s: _pair_summary(np.asarray(pw[k][s]))
               for s in ("mean", "max", "q99")} for k in kinds}
  report: dict[str, Any] = {
      "runs": [{"run": i, "name": names[i], "seed": int(reps["seed"][i]),
                "valid": bool(valid[i])} for i in range(len(valid))],
      "layer": config.layer, "kinds": list(kinds),
      "threshold": config.threshold,
      "epsilon": eps, "pairs": pairs,
  }
  if {"perm", "rigid", "ica"} <= set(kinds):
    eff = align.ica_efficiency(pw["perm"]["mean"], pw["rigid"]["mean"],
                               pw["ica"]["mean"])
    summ = _pair_summary(eff)
    report["ica_efficiency"] = {"mean": summ["mean"], "std": summ["std"],
                                "matrix": _full(eff, valid)}
    pairs["_efficiency"] = summ["mean"]
  structural = {k: _per_run(st[k], valid)
                for k in ("mcc_raw", "mcc_raw_spearman", "mcc_ica",
                          "mcc_ica_spearman", "r2")}
  structural["epsilon"] = {
      k: {s: _per_run(st["epsilon"][k][s], valid)
          for s in ("mean", "max", "q99")} for k in kinds}
  structural["diameter"] = _num(st["diameter"])
  report["structural"] = structural
  if "suite" in st:
    report["disentanglement"] = {
        name: {col: _per_run(v, valid) for col, v in st["suite"][name].items()}
        for name in ("raw", "ica")}
    report["disentanglement"].update(metrics=list(config.metrics),
                                     notes=notes)
  elif "suite_error" in st:
    logging.warning("disentanglement metrics not computed: %s",
                    st["suite_error"])
    report["disentanglement"] = {"raw": {}, "ica": {},
                                 "metrics": list(config.metrics),
                                 "notes": [f"not computed: "
                                           f"{st['suite_error']}"]}
  report["bi_lipschitz"] = bl
  report["verdict"] = _verdict(config, pairs, structural)
  pairs.pop("_efficiency", None)
  report["diameter"] = _per_run(pw.diameter, valid)
  report["settings"] = {**pw.info, "kinds": list(kinds), "dims": config.dims,
                        "n_rows": int(reps["z"].shape[1]),
                        "dim": int(reps["z"].shape[2]),
                        "num_factors": int(reps["u"].shape[1])}
  report["config"] = json.loads(json.dumps(config.to_dict(), default=str))
  return report


# --- output -----------------------------------------------------------------


def _plots(workdir, report, names):
  valid = np.array([r["valid"] for r in report["runs"]])
  arr = lambda x: np.array([[np.nan if v is None else v for v in row]  # noqa: E731
                            for row in x], np.float64)
  vec = lambda x: np.array([np.nan if v is None else v for v in x],  # noqa: E731
                           np.float64)
  plotting.plot_epsilon_heatmaps(
      {k: arr(v["mean"]) for k, v in report["epsilon"].items()}, names,
      os.path.join(workdir, "epsilon_heatmaps.png"))
  groups = {"between runs (statistical)": {
      k: (v["mean"]["mean"] or np.nan, v["mean"]["std"] or 0.0)
      for k, v in report["pairs"].items()}}
  s_eps = report["structural"]["epsilon"]
  groups["to the true factors (structural)"] = {
      k: (float(np.nanmean(vec(v["mean"]))), float(np.nanstd(vec(v["mean"]))))
      for k, v in s_eps.items()}
  plotting.plot_epsilon_by_class(groups, os.path.join(workdir,
                                                      "epsilon_by_class.png"))
  s = report["structural"]
  plotting.plot_mcc(vec(s["mcc_raw"])[valid], vec(s["mcc_ica"])[valid],
                    [n for n, v in zip(names, valid) if v],
                    os.path.join(workdir, "mcc.png"))
  dis = report.get("disentanglement")
  if dis and dis["raw"]:
    plotting.plot_metric_suite(
        {col: vec(v)[valid] for col, v in dis["raw"].items()},
        {col: vec(v)[valid] for col, v in dis["ica"].items()},
        os.path.join(workdir, "disentanglement.png"))
  bl = report["bi_lipschitz"]
  kind = "rigid" if "rigid" in report["epsilon"] else report["kinds"][0]
  fac = vec(bl["theorem1_factor"])
  eps = arr(report["epsilon"][kind]["mean"])
  ii, jj = np.nonzero(~np.eye(len(valid), dtype=bool))
  x = np.maximum(fac[ii], fac[jj])
  y = eps[ii, jj]
  ok = np.isfinite(x) & np.isfinite(y)
  data = bl["data_bound"]
  plotting.plot_epsilon_vs_bilipschitz(
      x[ok], y[ok], os.path.join(workdir, "epsilon_vs_bilipschitz.png"),
      kind=kind,
      data_factor=(float(align.theorem1_factor(data)) if data else None))


def _fmt(m):
  if m is None or m.get("mean") is None:
    return "—"
  return f"{m['mean']:.3f} ± {m['std']:.3f}"


def _markdown(report, train_dir) -> str:
  kinds = report["kinds"]
  settings = report["settings"]
  runs = report["runs"]
  n_valid = sum(r["valid"] for r in runs)
  cfg = report["config"]
  lines = ["# Near-identifiability report", ""]
  lines.append(
      f"Layer `{report['layer']}` (d = {settings['dim']}) of {n_valid} runs "
      f"(training workdir `{train_dir}`), on n = {settings['n_rows']} "
      f"held-out inputs. Each map is fitted on {settings['n_fit']} rows and "
      f"evaluated on the other {settings['n_eval']}; ε is the ℓ2 error "
      f"divided by the target run's diameter ({settings['diameter']} "
      f"pairwise distance). Signed permutations fit a per-dimension "
      f"translation{' and scale' if settings['perm_scale'] else ' only'}.")
  dropped = [r["name"] for r in runs if not r["valid"]]
  if dropped:
    lines.append(f"Diverged runs, left out: {', '.join(dropped)}.")
  lines += ["", "## Statistical ε between runs (the paper's Table 1 form)", ""]
  lines.append(f"Mean over the {n_valid * (n_valid - 1)} ordered pairs ± "
               "standard deviation over pairs; lower is better.")
  lines.append("")
  order = [k for k in ("perm", "rigid", "similarity", "linear", "identity")
           if k in kinds]
  head = [{"perm": "perm", "rigid": "rigid", "similarity": "similarity",
           "linear": "linear", "identity": "identity"}[k] for k in order]
  if "ica" in kinds:
    head.append("ICA (eff.)")
  lines.append("| ε | " + " | ".join(head) + " |")
  lines.append("|---" * (len(head) + 1) + "|")
  for stat, label in (("mean", "mean ℓ2"), ("q99", "99th pct ℓ2"),
                      ("max", "max ℓ2 (L∞)")):
    cells = [_fmt(report["pairs"][k][stat]) for k in order]
    if "ica" in kinds:
      cell = _fmt(report["pairs"]["ica"][stat])
      eff = report.get("ica_efficiency", {}).get("mean")
      if stat == "mean" and eff is not None:
        cell += f" ({100 * eff:.0f}%)"
      cells.append(cell)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += ["", "## Structural ε to the true factors", ""]
  lines.append("Each run mapped onto the standardised ground-truth factors "
               "(mean ℓ2 / diameter of the factors); MCC is Pearson, "
               "Hungarian-matched, on the evaluation rows; R² is affine, "
               "fitted and scored on separate splits.")
  lines.append("")
  s = report["structural"]
  cols = [f"ε {k}" for k in kinds] + ["MCC raw", "MCC ICA", "R²"]
  lines.append("| run | " + " | ".join(cols) + " |")
  lines.append("|---" * (len(cols) + 1) + "|")
  for i, r in enumerate(runs):
    if not r["valid"]:
      continue
    cells = [s["epsilon"][k]["mean"][i] for k in kinds] + [
        s["mcc_raw"][i], s["mcc_ica"][i], s["r2"][i]]
    lines.append(f"| {r['name']} | " + " | ".join(
        "—" if c is None else f"{c:.3f}" for c in cells) + " |")

  def ms(vals):
    v = np.array([x for x in vals if x is not None], np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "—"
  lines.append("| **mean ± sd** | " + " | ".join(
      [ms(s["epsilon"][k]["mean"]) for k in kinds]
      + [ms(s["mcc_raw"]), ms(s["mcc_ica"]), ms(s["r2"])]) + " |")
  dis = report.get("disentanglement")
  if dis:
    lines += ["", "## Disentanglement metrics to the factors", ""]
    lines.append("`nearid_jax.metrics` on the evaluation rows (mean ± sd over "
                 "runs; higher is better; `udr` compares the runs with each "
                 "other, no factors), before and after ICA "
                 "(the paper's recipe).")
    lines += [f"Note: {n}" for n in dis["notes"]]
    if dis["raw"]:
      lines += ["", "| metric | raw | after ICA |", "|---|---|---|"]
    for col in dis["raw"]:
      lines.append(f"| {col} | {ms(dis['raw'][col])} | "
                   f"{ms(dis['ica'].get(col, []))} |")
  lines += ["", "## Verdict", "", report["verdict"]["text"], ""]
  bl = report["bi_lipschitz"]
  lines += ["## Decoder bi-Lipschitz estimate (Theorem 1)", ""]
  if any(v is not None for v in bl["one_plus_l"]):
    lines.append(bl["note"] + (
        f" The true mixing's bound is 1 + L ≤ {bl['data_bound']:.3g}."
        if bl["data_bound"] else ""))
    lines.append("")
    lines.append("| run | 1 + L | sqrt(2L + L²) |")
    lines.append("|---|---|---|")
    for i, r in enumerate(runs):
      if r["valid"] and bl["one_plus_l"][i] is not None:
        lines.append(f"| {r['name']} | {bl['one_plus_l'][i]:.3f} | "
                     f"{bl['theorem1_factor'][i]:.3f} |")
  else:
    lines.append(bl["note"])
  lines += ["", "## Plots", "",
            "- `epsilon_heatmaps.png`: ε per pair (row target, column "
            "source) for each class",
            "- `epsilon_by_class.png`: mean ε by class, between runs and to "
            "the factors, before and after ICA",
            "- `mcc.png`: MCC per run, raw and after ICA",
            "- `disentanglement.png`: the metric suite, raw and after ICA "
            "(when computed)",
            "- `epsilon_vs_bilipschitz.png`: rigid ε per pair against "
            "sqrt(2L + L²) of the decoders", ""]
  t = report.get("timing_s", {})
  if t:
    lines.append("Timing (s): " + ", ".join(f"{k} {v}" for k, v in t.items())
                 + ".")
  lines.append(f"Config: see report.json (`config`); analysis seed "
               f"{cfg.get('seed')}.")
  return "\n".join(lines) + "\n"
