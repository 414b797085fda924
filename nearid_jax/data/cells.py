"""A Cell Painting-like well simulator with genes and strong batch effects.

Each image is a crop of one well: a few cells in five channels (nucleus,
ER, actin, mitochondria, RNA). Biology: a gene knock-out shifts 2-3 of ten
morphology features (nucleus size, cell size, elongation, the five channel
intensities, texture, granularity) by a fixed amount; controls (gene 0)
shift nothing; every cell also varies on its own. Technique, structured as
in real screens: per experiment a channel gain, offset, background,
channel cross-talk matrix, blur width and illumination (vignetting) field;
per plate a further gain and offset; per well position an edge effect
(outer wells dimmer). Batch effects are as large as the biological
effects by default, which is what makes cross-experiment generalisation
hard (the paper's EIF3H experiment).

The factors of an image are (gene, experiment, plate, row, col); the cell
placement and per-cell variation are nuisance, so `render` and `sample`
take a key. `gene_effects`, `technical_factors` and `well_metadata` expose
the truth; `design` lays out a screen like RxRx3's plates. Everything is
jittable and runs on device.
"""
from __future__ import annotations

import dataclasses
import functools
import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax.data import ground_truth

CHANNELS = ("nucleus", "er", "actin", "mitochondria", "rna")
FEATURES = ("nucleus_size", "cell_size", "elongation", "intensity_nucleus",
            "intensity_er", "intensity_actin", "intensity_mitochondria",
            "intensity_rna", "texture", "granularity")
_K = 3  # blur kernel radius in pixels


@dataclasses.dataclass(frozen=True)
class CellPainting(ground_truth.GroundTruthDataset):
  """Simulated Cell Painting wells with known genes and batch effects.

  Attributes:
    num_genes: knock-outs; gene index 0 is the control, 1..num_genes KOs.
    num_experiments: experiments (batches).
    plates_per_experiment: plates per experiment.
    plate_rows: rows of a plate (16 for 384 wells).
    plate_cols: columns of a plate (24 for 384 wells).
    image_size: crop side in pixels.
    cells_per_image: cells in a crop.
    effect_size: knock-out shift, in units of the per-cell spread.
    batch_strength: scale of every technical effect (0 removes them).
    control_fraction: share of control wells when sampling.
    seed: fixes the world (gene effects and batch parameters); the key of
      `sample` only draws wells and cells.

  Examples:
    >>> import jax
    >>> sim = CellPainting(num_genes=4, num_experiments=2)
    >>> images, idx, values = sim.sample(jax.random.key(0), 3)
    >>> images.shape, idx.shape
    ((3, 64, 64, 5), (3, 5))
  """

  num_genes: int = 8
  num_experiments: int = 4
  plates_per_experiment: int = 3
  plate_rows: int = 16
  plate_cols: int = 24
  image_size: int = 64
  cells_per_image: int = 6
  effect_size: float = 1.0
  batch_strength: float = 1.0
  control_fraction: float = 0.25
  seed: int = 0

  name = "cells"
  factor_names = ("gene", "experiment", "plate", "row", "col")
  categorical = ("gene", "experiment", "plate", "row", "col")
  has_nuisance = True

  def __post_init__(self):
    for f in ("num_genes", "num_experiments", "plates_per_experiment",
              "plate_rows", "plate_cols", "image_size", "cells_per_image"):
      if int(getattr(self, f)) < 1:
        raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}.")
    if self.plate_rows > 26:
      raise ValueError("plate_rows must be <= 26 (rows are lettered A-Z).")
    if not 0.0 <= self.control_fraction <= 1.0:
      raise ValueError(
          f"control_fraction must be in [0, 1], got {self.control_fraction}.")
    if self.effect_size < 0 or self.batch_strength < 0:
      raise ValueError("effect_size and batch_strength must be >= 0.")

  @property
  def factor_sizes(self):
    return (self.num_genes + 1, self.num_experiments,
            self.plates_per_experiment, self.plate_rows, self.plate_cols)

  @property
  def observation_shape(self):
    return (self.image_size, self.image_size, len(CHANNELS))

  def _factor_value_grid(self):
    return tuple(np.arange(s, dtype=np.float64) for s in self.factor_sizes)

  # ---- the world: fixed by `seed` ------------------------------------------

  @functools.cached_property
  def gene_effects(self) -> np.ndarray:
    """[num_genes + 1, F] true mean shift of each morphology feature.

    Row 0 (control) is zero; each knock-out moves 2 or 3 features by
    +-(0.6 .. 1.2) x effect_size per-cell standard deviations.
    """
    rng = np.random.default_rng([self.seed, 1])
    eff = np.zeros((self.num_genes + 1, len(FEATURES)), np.float32)
    for g in range(1, self.num_genes + 1):
      hit = rng.choice(len(FEATURES), size=rng.integers(2, 4), replace=False)
      eff[g, hit] = (rng.choice([-1.0, 1.0], size=len(hit))
                     * rng.uniform(0.6, 1.2, size=len(hit)))
    return eff * self.effect_size

  @functools.cached_property
  def _batch(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 2])
    e, p, c, s = (self.num_experiments, self.plates_per_experiment,
                  len(CHANNELS), self.batch_strength)
    crosstalk = np.tile(np.eye(c, dtype=np.float32), (e, 1, 1))
    # Spectral bleed-through: mostly into the neighbouring channel.
    for i in range(c - 1):
      crosstalk[:, i + 1, i] = rng.uniform(0.0, 0.3, e) * s
      crosstalk[:, i, i + 1] = rng.uniform(0.0, 0.12, e) * s
    return {
        "exp_gain": np.exp(rng.normal(0.0, 0.35, (e, c)) * s),
        "exp_offset": rng.uniform(0.0, 0.08, (e, c)) * s,
        "background": rng.uniform(0.0, 0.06, (e, c)) * s,
        "crosstalk": crosstalk,
        "blur_sigma": 0.3 + rng.uniform(0.0, 1.3, e) * min(s, 1.0),
        "vignetting": rng.uniform(0.1, 0.45, e) * s,
        "vignette_center": rng.uniform(0.3, 0.7, (e, 2)),
        "plate_gain": np.exp(rng.normal(0.0, 0.15, (e, p, c)) * s),
        "plate_offset": rng.normal(0.0, 0.02, (e, p, c)) * s,
        "edge_loss": np.full((), 0.2 * s),
    }

  def technical_factors(self, factor_indices) -> dict[str, np.ndarray]:
    """The true technical parameters of wells [n, 5] (host, numpy).

    Returns:
      gain [n, C] (experiment x plate x edge), offset [n, C], background
      [n, C], crosstalk [n, C, C], blur_sigma [n], vignetting [n].
    """
    self.check_indices(np.asarray(factor_indices))
    t = {k: np.asarray(v) for k, v in self._tech(
        jnp.asarray(factor_indices, jnp.int32)).items()}
    return t

  def _tech(self, idx: jax.Array) -> dict[str, jax.Array]:
    b = {k: jnp.asarray(v, jnp.float32) for k, v in self._batch.items()}
    e, p, r, c = idx[..., 1], idx[..., 2], idx[..., 3], idx[..., 4]
    edge = ((r == 0) | (c == 0) | (r == self.plate_rows - 1)
            | (c == self.plate_cols - 1)).astype(jnp.float32)
    gain = (b["exp_gain"][e] * b["plate_gain"][e, p]
            * (1.0 - b["edge_loss"] * edge)[..., None])
    return {
        "gain": gain,
        "offset": b["exp_offset"][e] + b["plate_offset"][e, p],
        "background": b["background"][e],
        "crosstalk": b["crosstalk"][e],
        "blur_sigma": b["blur_sigma"][e],
        "vignetting": b["vignetting"][e],
        "vignette_center": b["vignette_center"][e],
    }

  # ---- sampling and rendering ------------------------------------------------

  def _sample_indices(self, key, n):
    k_gene, k_ko, k_rest = jax.random.split(key, 3)
    idx = super()._sample_indices(k_rest, n)
    ko = jax.random.randint(k_ko, (n,), 1, self.num_genes + 1)
    ctrl = jax.random.uniform(k_gene, (n,)) < self.control_fraction
    return idx.at[:, 0].set(jnp.where(ctrl, 0, ko)).astype(jnp.int32)

  def _render(self, values, key):
    idx = jnp.round(values).astype(jnp.int32)
    return self._render_well(idx, key)

  def _render_well(self, idx: jax.Array, key: jax.Array,
                   with_features: bool = False):
    n, size = self.cells_per_image, self.image_size
    k_pos, k_var, k_ang, k_tex, k_noise = jax.random.split(key, 5)
    z = (jnp.asarray(self.gene_effects)[idx[0]]
         + jax.random.normal(k_var, (n, len(FEATURES))))
    centres = jax.random.uniform(k_pos, (n, 2), minval=0.12, maxval=0.88)
    angles = jax.random.uniform(k_ang, (n,), maxval=jnp.pi)
    phases = jax.random.uniform(k_tex, (n, 6), maxval=2.0 * jnp.pi)
    cells = jax.vmap(functools.partial(_cell, size=size))(
        z, centres, angles, phases)
    img = jnp.clip(cells.sum(0), 0.0, None) * 0.45
    t = self._tech(idx)
    img = img @ t["crosstalk"].T
    img = _blur(img, t["blur_sigma"])
    u = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    yy, xx = jnp.meshgrid(u, u, indexing="ij")
    cy, cx = t["vignette_center"][0], t["vignette_center"][1]
    vignette = 1.0 - t["vignetting"] * ((xx - cx) ** 2 + (yy - cy) ** 2) / 0.5
    img = img * vignette[..., None] * t["gain"] + t["offset"] + t[
        "background"]
    img = img + 0.01 * jax.random.normal(k_noise, img.shape)
    img = jnp.clip(img, 0.0, 1.0)
    return (img, z) if with_features else img

  def simulate(self, key: jax.Array, factor_indices) -> dict[str, jax.Array]:
    """Wells with every true factor: images, cell features, technique.

    Jittable for traced indices of a static shape.

    Args:
      key: PRNG key for the cells (as `render`'s).
      factor_indices: [n, 5] int wells (e.g. from `design` or `sample`).

    Returns:
      dict with images [n, H, W, 5]; cell_features [n, cells, F] (the
      z-scores each cell was drawn with: gene effect + cell variation);
      well_features [n, F] (their mean); gene_effect [n, F]; and the
      technical factors of `technical_factors` as [n, ...] arrays.
    """
    self.check_indices(factor_indices)
    idx = jnp.asarray(factor_indices, jnp.int32)
    keys = jax.random.split(key, idx.shape[0])
    images, z = jax.vmap(lambda i, k: self._render_well(i, k, True))(idx,
                                                                     keys)
    out = {"images": images, "cell_features": z,
           "well_features": z.mean(1),
           "gene_effect": jnp.asarray(self.gene_effects)[idx[:, 0]]}
    out.update(self._tech(idx))
    return out

  # ---- host-side helpers -------------------------------------------------------

  def gene_names(self) -> list[str]:
    return ["EMPTY_control"] + [f"GENE{g:03d}" for g in
                                range(1, self.num_genes + 1)]

  def well_metadata(self, factor_indices) -> dict[str, np.ndarray]:
    """RxRx3-core-style metadata columns of wells [n, 5] (host).

    Returns:
      dict of [n] arrays: well_id, experiment_name, plate, address, gene,
      treatment, SMILES, concentration, perturbation_type, cell_type,
      well_type_label (the columns `embeddings.read_table` joins on).
    """
    idx = np.asarray(factor_indices)
    self.check_indices(idx)
    genes = np.array(self.gene_names())
    exp = np.array([f"sim-exp{e:02d}" for e in idx[:, 1]])
    plate = idx[:, 2] + 1
    address = np.array([f"{string.ascii_uppercase[r]}{c + 1:02d}"
                        for r, c in idx[:, 3:5]])
    well_id = np.array([f"{e}_{p}_{a}" for e, p, a in
                        zip(exp, plate, address)])
    ctrl = idx[:, 0] == 0
    n = len(idx)
    return {
        "well_id": well_id,
        "experiment_name": exp,
        "plate": plate,
        "address": address,
        "gene": genes[idx[:, 0]],
        "treatment": np.full(n, ""),
        "SMILES": np.full(n, ""),
        "concentration": np.full(n, np.nan),
        "perturbation_type": np.where(ctrl, "control", "CRISPR"),
        "cell_type": np.full(n, "HUVEC"),
        "well_type_label": np.where(ctrl, "control", "knockout"),
    }

  def design(self, key: jax.Array, controls_per_plate: int | None = None
             ) -> np.ndarray:
    """A screen layout: every well of every plate of every experiment.

    Each plate holds `controls_per_plate` control wells (default: the
    control fraction of the plate) and the knock-outs spread evenly over
    the rest, at random positions per plate.

    Args:
      key: PRNG key for the layout.
      controls_per_plate: control wells per plate.

    Returns:
      [E * P * rows * cols, 5] int32 factor indices, grouped by plate.
    """
    wells = self.plate_rows * self.plate_cols
    n_ctrl = (int(round(self.control_fraction * wells))
              if controls_per_plate is None else int(controls_per_plate))
    if not 0 <= n_ctrl <= wells:
      raise ValueError(f"controls_per_plate must be in [0, {wells}].")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()
                                .astype(np.uint32))
    rows, cols = np.divmod(np.arange(wells), self.plate_cols)
    out = []
    for e in range(self.num_experiments):
      for p in range(self.plates_per_experiment):
        genes = np.concatenate([
            np.zeros(n_ctrl, np.int32),
            1 + np.arange(wells - n_ctrl) % self.num_genes])
        genes = rng.permutation(genes)
        out.append(np.stack([genes, np.full(wells, e), np.full(wells, p),
                             rows, cols], 1))
    return np.concatenate(out).astype(np.int32)

  @property
  def metadata(self) -> dict[str, Any]:
    meta = super().metadata
    meta.update(channels=list(CHANNELS), features=list(FEATURES),
                gene_names=self.gene_names(),
                gene_effects=self.gene_effects.tolist())
    return meta


def _ellipse_sdf(yy, xx, centre, a, b, angle):
  dy, dx = yy - centre[0], xx - centre[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  u, v = cos * dx + sin * dy, -sin * dx + cos * dy
  # First-order distance (in pixels) to the ellipse boundary.
  k = jnp.sqrt((u / a) ** 2 + (v / b) ** 2)
  return (k - 1.0) * jnp.minimum(a, b), u, v


def _cell(z, centre, angle, phase, size):
  """One cell's five channels [size, size, 5] from its feature z-scores."""
  u = jnp.arange(size, dtype=jnp.float32) + 0.5
  yy, xx = jnp.meshgrid(u, u, indexing="ij")
  c = centre * size
  elong = 1.0 + 0.35 * jax.nn.softplus(z[2])
  r_nuc = 0.075 * size * jnp.exp(0.15 * z[0])
  r_cell = 0.17 * size * jnp.exp(0.12 * z[1])
  d_nuc, nu, nv = _ellipse_sdf(yy, xx, c, r_nuc * jnp.sqrt(elong) * 0.8,
                               r_nuc / jnp.sqrt(elong) * 0.8 + 0.2 * r_nuc,
                               angle)
  d_cell, cu, cv = _ellipse_sdf(yy, xx, c, r_cell * jnp.sqrt(elong),
                                r_cell / jnp.sqrt(elong), angle)
  nucleus = jax.nn.sigmoid(-d_nuc / 0.7)
  body = jax.nn.sigmoid(-d_cell / 1.0)
  cyto = body * (1.0 - nucleus)
  intensity = jnp.exp(0.25 * z[3:8])
  texture = 0.25 * jax.nn.softplus(1.0 + z[8])
  pattern = (jnp.sin(0.9 * nu + phase[0]) * jnp.sin(0.8 * nv + phase[1])
             + jnp.sin(0.5 * (nu + nv) + phase[2]))
  freq = 0.9 * jnp.exp(0.3 * z[9])
  puncta = (0.5 + 0.5 * jnp.sin(freq * cu + phase[3])
            * jnp.sin(freq * cv + phase[4])) ** 4
  fibres = 0.5 + 0.5 * jnp.sin(0.7 * cu + phase[5])
  ring = jnp.exp(-0.5 * (d_cell / 1.2) ** 2)
  perinuclear = jnp.exp(-jnp.maximum(d_nuc, 0.0) / (0.6 * r_cell))
  nucleoli = jnp.exp(-0.5 * (((nu - 0.35 * r_nuc) ** 2 + nv ** 2)
                             / (0.18 * r_nuc) ** 2))
  channels = jnp.stack([
      nucleus * (1.0 + texture * pattern),
      cyto * perinuclear,
      0.6 * ring + 0.4 * body * fibres,
      cyto * (0.25 + puncta),
      0.3 * cyto + nucleus * (0.3 + 1.5 * nucleoli),
  ], -1)
  return channels * intensity


def _blur(img: jax.Array, sigma: jax.Array) -> jax.Array:
  """Separable Gaussian blur of [H, W, C] with a traced width."""
  k = jnp.arange(-_K, _K + 1, dtype=jnp.float32)
  w = jnp.exp(-0.5 * (k / jnp.maximum(sigma, 1e-3)) ** 2)
  w = w / w.sum()
  for axis in (0, 1):
    pad = [(0, 0)] * img.ndim
    pad[axis] = (_K, _K)
    p = jnp.pad(img, pad, mode="edge")
    n = img.shape[axis]
    img = sum(w[i] * jax.lax.slice_in_dim(p, i, i + n, axis=axis)
              for i in range(2 * _K + 1))
  return img
