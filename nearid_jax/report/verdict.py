"""The verdict: what a group's tables say at the threshold τ, in words.

Definition 1 (docs/paper.md) quantifies over every pair of runs: the runs are
statistically near-identifiable up to H at τ when *every* ordered pair has
ε ≤ τ. The paper's tables give the mean ℓ2 error / diameter, so the main
verdict takes the worst ordered pair of that measure; Definition 1 proper
uses the L∞ (max ℓ2) error and is given separately. A mean over pairs that
passes while some pair fails is stated as such, never as a pass.
Structurally, every run must be within τ of the factors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nearid_jax.report import result as R

# Strictest first: each class contains the ones before it.
ORDER = ("identity", "perm", "rigid", "similarity", "linear")
NAMES = {"identity": "the identity", "perm": "signed permutations",
         "rigid": "rigid maps", "similarity": "similarities",
         "linear": "linear (affine) maps",
         "ica": "signed permutations after ICA"}
EFFICIENCY_MEANING = (
    "ICA efficiency = (mean ε perm − mean ε ICA) / (mean ε perm − mean ε "
    "rigid): the share of the gap between signed permutations and rigid "
    "maps that ICA closes (0% no help, 100% as good as the best rigid map); "
    "it exceeds 100% when ICA aligns the runs better than any rigid map "
    "can, which happens because the ICA map (un-mix, match, re-mix) is not "
    "rigid and also absorbs differences of scale between directions.")


def _ok(x) -> bool:
  return x is not None and np.isfinite(x)


def decide(statistical: R.Statistical | None,
           efficiency: R.Efficiency | None,
           structural: R.Structural | None, metrics: R.Metrics | None,
           tau: float, names: Sequence[str] = ()) -> R.Verdict:
  """The verdict of one group.

  Args:
    statistical, efficiency, structural, metrics: the group's sections
      (None when not computed).
    tau: the threshold.
    names: the group's run names (to name the worst pair).

  Returns:
    A `Verdict`.

  Examples:
    >>> import jax, numpy as np
    >>> from nearid_jax.report import compute
    >>> m = np.array([[0, .01, .01], [.01, 0, .09], [.01, .01, 0]])
    >>> s = compute.pair_summary(m, 0.05, jax.random.key(0))
    >>> st = R.Statistical(("rigid",), {"rigid": {"mean": m, "max": m}}, {},
    ...     {"rigid": {"mean": s, "max": s}}, np.ones(3), np.ones(3), 3,
    ...     np.full(3, 3))
    >>> v = decide(st, None, None, None, 0.05)
    >>> v.statistical, round(s.mean.value, 3) <= 0.05
    (None, True)
  """
  parts: list[str] = []
  stat = stat_linf = None
  after_ica = None
  label = lambda i: names[i] if i < len(names) else f"run {i}"  # noqa: E731
  if statistical is not None:
    pairs = statistical.pairs
    kinds = [k for k in ORDER if k in pairs]
    worst = {k: pairs[k]["mean"].worst for k in pairs}
    stat = next((k for k in kinds if _ok(worst[k]) and worst[k] <= tau),
                None)
    stat_linf = next((k for k in kinds if _ok(pairs[k]["max"].worst)
                      and pairs[k]["max"].worst <= tau), None)

    def fmt(k, s="mean"):
      p = pairs[k][s]
      t, src = p.worst_pair
      return (f"worst pair {p.worst:.3f} ({label(src)} → {label(t)}), "
              f"{p.exceed} of {p.count} pairs above τ, mean "
              f"{p.mean.value:.3f} [{p.mean.low:.3f}, {p.mean.high:.3f}]")
    if stat is None:
      loosest = kinds[-1] if kinds else None
      parts.append(
          f"At τ = {tau:g} (mean ℓ2 error / diameter, required of every "
          f"ordered pair) the runs are **not** statistically "
          f"near-identifiable up to any measured class"
          + (f": even {NAMES[loosest]} leave {fmt(loosest)}" if loosest
             else "") + ".")
    else:
      parts.append(
          f"At τ = {tau:g} (mean ℓ2 error / diameter, required of every "
          f"ordered pair) the runs are **statistically near-identifiable up "
          f"to {NAMES[stat]}**: {fmt(stat)}.")
    stricter = kinds[:kinds.index(stat)] if stat else kinds
    mean_only = [k for k in stricter if _ok(pairs[k]["mean"].mean.value)
                 and pairs[k]["mean"].mean.value <= tau]
    for k in mean_only:
      parts.append(
          f"Up to {NAMES[k]} the mean over pairs passes "
          f"({pairs[k]['mean'].mean.value:.3f} ≤ {tau:g}) but "
          f"{pairs[k]['mean'].exceed} of {pairs[k]['mean'].count} pairs "
          f"exceed τ (worst {pairs[k]['mean'].worst:.3f}), so Definition 1 "
          "does not hold for that class.")
    if kinds:
      parts.append(
          "Under Definition 1 proper (L∞: the worst point of the worst "
          "pair) they are " + (
              f"near-identifiable up to {NAMES[stat_linf]} (max ℓ2 ε "
              f"{pairs[stat_linf]['max'].worst:.3f})" if stat_linf else
              f"not near-identifiable up to any measured class (smallest: "
              f"{NAMES[kinds[-1]]}, max ℓ2 ε {pairs[kinds[-1]]['max'].worst:.3f})"
          ) + ".")
    if "ica" in pairs and _ok(worst["ica"]):
      after_ica = bool(worst["ica"] <= tau)
      eff = ""
      if efficiency is not None and _ok(efficiency.value.value):
        e = efficiency.value
        eff = (f"; ICA efficiency {100 * e.value:.0f}% "
               f"[{100 * e.low:.0f}%, {100 * e.high:.0f}%]")
      parts.append(
          f"After ICA ({statistical.ica_components} components) the "
          f"signed-permutation ε has {fmt('ica')}{eff}: the runs are "
          + ("" if after_ica else "not ")
          + f"near-identifiable up to {NAMES['ica']} at τ.")
  struct = None
  struct_ica = None
  if structural is not None:
    s_eps = structural.epsilon

    def worst_run(k):
      v = s_eps[k]["mean"]
      v = v[np.isfinite(v)]
      return float(v.max()) if v.size else None
    kinds = [k for k in ORDER if k in s_eps]
    struct = next((k for k in kinds if _ok(worst_run(k))
                   and worst_run(k) <= tau), None)
    if struct is not None:
      text = (f"Structurally (each run against the standardised true "
              f"factors) every run is within τ of the factors up to "
              f"{NAMES[struct]} (worst run {worst_run(struct):.3f})")
    else:
      text = ("Structurally, no measured class without ICA brings every run "
              "within τ of the true factors" + (
                  f" (loosest, {NAMES[kinds[-1]]}: worst run "
                  f"{worst_run(kinds[-1]):.3f})"
                  if kinds and _ok(worst_run(kinds[-1])) else ""))
    if "ica" in s_eps and _ok(worst_run("ica")):
      struct_ica = bool(worst_run("ica") <= tau)
      text += (f"; after ICA ({structural.ica_components} components) "
               + ("every run is" if struct_ica else "not every run is")
               + f" within τ up to signed permutations (worst run "
               f"{worst_run('ica'):.3f})"
               + (", i.e. disentangled" if struct_ica else ""))
    parts.append(text + ".")
  if metrics is not None and "ica" in metrics.tables:
    raw = np.nanmean(metrics.tables["raw"]["mcc_pearson"])
    ica = np.nanmean(metrics.tables["ica"]["mcc_pearson"])
    parts.append(f"MCC to the factors is {raw:.3f} raw and {ica:.3f} after "
                 f"ICA ({metrics.ica_components} components).")
  if not parts:
    parts.append("Nothing could be measured for this group (see the notes).")
  return R.Verdict(statistical=stat, statistical_linf=stat_linf,
                   after_ica=after_ica, structural=struct,
                   structural_after_ica=struct_ica, text=" ".join(parts))
