"""The report's typed result: what `compute` returns and `render` writes.

Matrices and per-run arrays are numpy float64 with NaN where a value is
missing (e.g. a run whose ICA failed); they are indexed by the group's
*valid* runs (`Group.runs`, positions into `Report.runs`). `ε[i, j]` is
run j (source) mapped onto run i (target), divided by run i's diameter.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

STATS = ("mean", "q99", "max")   # of the per-point ℓ2 error, over eval rows


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """One run of the report: its position, name, seed and grid point."""
  index: int
  name: str
  seed: int
  valid: bool
  grid: dict


@dataclasses.dataclass(frozen=True)
class Interval:
  """A value with its 95% bootstrap interval (over ordered pairs)."""
  value: float
  low: float
  high: float


@dataclasses.dataclass(frozen=True)
class PairSummary:
  """One ε statistic of one map class over a group's ordered pairs.

  Attributes:
    mean: mean over pairs, with a 95% bootstrap interval over pairs.
    std: standard deviation over pairs.
    worst: the largest pair value (Definition 1 quantifies over every pair).
    worst_pair: (target, source) positions in the group's runs.
    exceed: number of pairs above the report's threshold.
    count: number of pairs with a finite value.
  """
  mean: Interval
  std: float
  worst: float
  worst_pair: tuple[int, int]
  exceed: int
  count: int


@dataclasses.dataclass
class Statistical:
  """ε between every ordered pair of a group's runs.

  Attributes:
    kinds: the map classes.
    epsilon: {kind: {stat: [Rg, Rg]}}.
    r2: {kind: [Rg, Rg]} per-dimension R² averaged over the target's
      dimensions.
    pairs: {kind: {stat: PairSummary}}.
    diameter: [Rg] diameter of each run (the one ε divides by).
    diameter_q99: [Rg] the 99th percentile of pairwise distances.
    ica_components: components of the "ica" class (the latent dimension).
    dims: [Rg] dimensions used (fewer than d after near-dead latents).
  """
  kinds: tuple[str, ...]
  epsilon: dict[str, dict[str, np.ndarray]]
  r2: dict[str, np.ndarray]
  pairs: dict[str, dict[str, PairSummary]]
  diameter: np.ndarray
  diameter_q99: np.ndarray
  ica_components: int
  dims: np.ndarray


@dataclasses.dataclass(frozen=True)
class Efficiency:
  """ICA efficiency (mean perm − mean ICA) / (mean perm − mean rigid).

  Attributes:
    value: the ratio of the mean errors over pairs, with a 95% bootstrap
      interval (pairs resampled together for all three classes).
    per_pair: [Rg, Rg] the same ratio per pair (NaN on the diagonal).
  """
  value: Interval
  per_pair: np.ndarray


@dataclasses.dataclass
class Structural:
  """Each run mapped onto the standardised ground-truth factors.

  Attributes:
    kinds: map classes measured.
    epsilon: {kind: {stat: [Rg]}}.
    diameter: diameter of the standardised factors.
    ica_components: components of the "ica" class (the number of factors).
  """
  kinds: tuple[str, ...]
  epsilon: dict[str, dict[str, np.ndarray]]
  diameter: float
  ica_components: int


@dataclasses.dataclass
class Metrics:
  """MCC, R² and the disentanglement suite on the group's runs.

  Attributes:
    tables: {variant: {column: [Rg]}}; variants "raw", "ica" and, with fewer
      ICA components than latents, the controls "pca" (PCA to k whitened
      components) and "pca_rotated" (the same, randomly rotated).
    rows: evaluation rows used.
    ica_components: k.
    dci_estimator: the DCI estimator ("logistic" or "gbt").
    infoe_converged_iter: L-BFGS iterations of "infoe_converged" (0: absent).
    notes: notes of the metrics (e.g. continuous factors binned).
  """
  tables: dict[str, dict[str, np.ndarray]]
  rows: int
  ica_components: int
  dci_estimator: str
  infoe_converged_iter: int
  notes: list[str]


@dataclasses.dataclass
class BiLipschitz:
  """Decoder bi-Lipschitz estimates per run (docs/paper.md Theorem 1).

  Attributes:
    one_plus_l: [R] 1 + L = max(max σ_max, 1 / min σ_min) of the decoder
      Jacobian over the evaluation points (NaN where not computed).
    condition: [R] the largest σ_max/σ_min over the points (the Jacobian's
      condition number): scale-free (unchanged when the latents are
      rescaled, which moves 1 + L).
    theorem1_factor: [R] sqrt(2L + L²).
    data_bound: 1 + L of the true mixing (synthetic data), else None.
    points: evaluation points per run.
    output: what was differentiated ("decoder output" or "decoder mean
      (sigmoid of the logits)").
    note: how it was computed, or why not.
  """
  one_plus_l: np.ndarray
  condition: np.ndarray
  theorem1_factor: np.ndarray
  data_bound: float | None
  points: int
  output: str
  note: str


@dataclasses.dataclass(frozen=True)
class Verdict:
  """What the tables say at the threshold τ (see `verdict.decide`).

  Attributes:
    statistical: strictest class whose worst ordered pair has mean-ℓ2 ε ≤ τ
      (the paper's Table 1 measure under Definition 1's "for all pairs").
    statistical_linf: the same with the L∞ (max ℓ2) ε, Definition 1 proper.
    after_ica: every pair's mean-ℓ2 ε after ICA ≤ τ.
    structural: strictest class whose worst run's ε to the factors ≤ τ.
    structural_after_ica: every run's ICA ε to the factors ≤ τ.
    text: the verdict in words.
  """
  statistical: str | None
  statistical_linf: str | None
  after_ica: bool | None
  structural: str | None
  structural_after_ica: bool | None
  text: str


@dataclasses.dataclass
class Group:
  """Everything measured at one grid point.

  Attributes:
    grid: {varied field: value}; {} without a grid.
    runs: positions (into `Report.runs`) of the group's valid runs.
    left_out: positions of its runs left out (diverged or non-finite).
    statistical, efficiency, structural, metrics: the sections (None when
      not computed; `notes` says why).
    verdict: the verdict.
    notes: notes in words (dropped latents, sections not computed).
  """
  grid: dict
  runs: list[int]
  left_out: list[int]
  statistical: Statistical | None
  efficiency: Efficiency | None
  structural: Structural | None
  metrics: Metrics | None
  verdict: Verdict
  notes: list[str]


@dataclasses.dataclass
class Report:
  """The near-identifiability report of R runs.

  Attributes:
    runs: every run, valid or not.
    layer: the representation analysed.
    threshold: τ.
    groups: one `Group` per grid point.
    bi_lipschitz: per run (None when not computed at all).
    settings: split sizes, dimensions and conventions used.
    notes: report-wide notes (e.g. rows dropped for NaN).
    config: the config, as JSON.
    timing_s: seconds per stage.
  """
  runs: list[RunInfo]
  layer: str
  threshold: float
  groups: list[Group]
  bi_lipschitz: BiLipschitz | None
  settings: dict[str, Any]
  notes: list[str]
  config: dict[str, Any]
  timing_s: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def text(self) -> str:
    """Every group's verdict, one paragraph each."""
    if len(self.groups) == 1:
      return self.groups[0].verdict.text
    return "\n\n".join(f"[{grid_label(g.grid)}] {g.verdict.text}"
                       for g in self.groups)

  def group_names(self, group: Group) -> list[str]:
    return [self.runs[i].name for i in group.runs]


def grid_label(grid: dict) -> str:
  """"negative_slope=0.3, weight_decay=0.001", or "all runs" without a grid.

  Examples:
    >>> grid_label({"negative_slope": 0.3}), grid_label({})
    ('negative_slope=0.3', 'all runs')
  """
  return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else
                   f"{k}={v}" for k, v in grid.items()) or "all runs"
