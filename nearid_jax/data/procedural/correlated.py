"""Correlated factors: the same images, a non-product factor distribution.

Traeuble et al. (2021), "On disentangled representations learned from
correlated data": a pair of factors (a, b), normalised to [0, 1], is drawn
from p(a, b) proportional to exp(-(a - b)^2 / (2 sigma^2)) (or with 1 - b
for an anti-correlated pair); the other factors stay independent and
uniform. Rendering is unchanged, so the grid, `render` and
`enumerate_grid` are those of the base dataset; only `sample` and
`sample_fixed` (which draws the partner of a fixed factor from its
conditional) change. Small sigma is where the AE + ICA recipe, which assumes
independent factors, is expected to break.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax.data import ground_truth


@dataclasses.dataclass(frozen=True)
class CorrelatedFactors(ground_truth.GroundTruthDataset):
  """A ground-truth dataset whose factor pairs are sampled correlated.

  Attributes:
    base: the dataset that renders the images.
    pairs: disjoint factor-name pairs to correlate.
    sigma: width of the correlation kernel on normalised factors; smaller
      is stronger (0.1 is strong, 1 nearly independent).
    anti: pair a with 1 - b instead of b.

  Examples:
    >>> import jax
    >>> from nearid_jax.data.procedural import Shapes3D
    >>> ds = CorrelatedFactors(Shapes3D(), (("object_hue", "scale"),), 0.2)
    >>> ds.sample(jax.random.key(0), 2)[0].shape
    (2, 64, 64, 3)
  """

  base: ground_truth.GroundTruthDataset
  pairs: tuple[tuple[str, str], ...]
  sigma: float = 0.2
  anti: bool = False

  def __post_init__(self):
    if not self.pairs:
      raise ValueError("pairs must name at least one factor pair.")
    seen = set()
    for pair in self.pairs:
      if len(pair) != 2:
        raise ValueError(f"each pair must hold two factor names, got {pair}.")
      for f in pair:
        self.base.factor_index(f)
        if f in seen:
          raise ValueError(
              f"factor {f!r} appears in two pairs; pairs must be disjoint.")
        seen.add(f)
    if not self.sigma > 0:
      raise ValueError(f"sigma must be > 0, got {self.sigma}.")

  @property
  def name(self) -> str:
    return f"{self.base.name}_correlated"

  @property
  def factor_names(self):
    return self.base.factor_names

  @property
  def factor_sizes(self):
    return self.base.factor_sizes

  @property
  def observation_shape(self):
    return self.base.observation_shape

  @property
  def has_nuisance(self):
    return self.base.has_nuisance

  @property
  def categorical(self):
    return self.base.categorical

  @property
  def symmetries(self):
    return self.base.symmetries

  @property
  def metadata(self) -> dict[str, Any]:
    meta = super().metadata
    meta.update(base=self.base.name, correlated_pairs=[list(p) for p in
                                                       self.pairs],
                sigma=self.sigma, anti=self.anti)
    return meta

  def _factor_value_grid(self):
    return self.base.factor_values

  def _render(self, values, key):
    return self.base._render(values, key)  # pylint: disable=protected-access

  def _images_for(self, indices, key):
    return self.base._images_for(indices, key)  # pylint: disable=protected-access

  @functools.cached_property
  def _pair_cols(self) -> tuple[tuple[int, int], ...]:
    return tuple((self.base.factor_index(a), self.base.factor_index(b))
                 for a, b in self.pairs)

  def joint_log_probs(self, pair: int = 0) -> np.ndarray:
    """[size_a, size_b] log p(a, b) of the `pair`-th pair (normalised)."""
    ka, kb = self._pair_cols[pair]
    sa, sb = self.factor_sizes[ka], self.factor_sizes[kb]
    ua = np.arange(sa) / max(sa - 1, 1)
    ub = np.arange(sb) / max(sb - 1, 1)
    if self.anti:
      ub = 1.0 - ub
    logits = -(ua[:, None] - ub[None, :]) ** 2 / (2.0 * self.sigma ** 2)
    return logits - np.log(np.exp(logits).sum())

  def _sample_pair(self, key, n, p, factor=None, value=None):
    ka, kb = self._pair_cols[p]
    logp = jnp.asarray(self.joint_log_probs(p), jnp.float32)
    k_joint, k_a, k_b = jax.random.split(key, 3)
    flat = jax.random.categorical(k_joint, logp.reshape(-1), shape=(n,))
    ia, ib = flat // logp.shape[1], flat % logp.shape[1]
    if factor is None:
      return ia, ib
    # Conditionals for a fixed partner: b | a = value and a | b = value.
    va = jnp.clip(value, 0, logp.shape[0] - 1)
    vb = jnp.clip(value, 0, logp.shape[1] - 1)
    b_given_a = jax.random.categorical(k_b, logp[va], shape=(n,))
    a_given_b = jax.random.categorical(k_a, logp[:, vb], shape=(n,))
    ia = jnp.where(factor == ka, value, jnp.where(factor == kb, a_given_b, ia))
    ib = jnp.where(factor == kb, value, jnp.where(factor == ka, b_given_a, ib))
    return ia, ib

  def _sample_indices(self, key, n):
    k_rest, *k_pairs = jax.random.split(key, len(self.pairs) + 1)
    idx = self.base._sample_indices(k_rest, n)  # pylint: disable=protected-access
    for p, kp in enumerate(k_pairs):
      ka, kb = self._pair_cols[p]
      ia, ib = self._sample_pair(kp, n, p)
      idx = idx.at[:, ka].set(ia).at[:, kb].set(ib)
    return idx.astype(jnp.int32)

  def _sample_indices_fixed(self, key, n, factor, value):
    k_rest, *k_pairs = jax.random.split(key, len(self.pairs) + 1)
    idx = self.base._sample_indices_fixed(k_rest, n, factor, value)  # pylint: disable=protected-access
    for p, kp in enumerate(k_pairs):
      ka, kb = self._pair_cols[p]
      ia, ib = self._sample_pair(kp, n, p, factor, value)
      idx = idx.at[:, ka].set(ia).at[:, kb].set(ib)
    return idx.astype(jnp.int32)
