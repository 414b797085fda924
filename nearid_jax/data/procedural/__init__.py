"""Procedural ground-truth image benchmarks rendered by pure JAX functions.

Every class follows `nearid_jax.data.ground_truth.GroundTruthDataset`:
`sample(key, n)` is jittable and cheap enough to call inside a jitted train
step, `render` maps factor indices to images, `all_factor_indices` /
`enumerate_grid` walk the exact factor grid.
"""
from nearid_jax.data.procedural.correlated import CorrelatedFactors
from nearid_jax.data.procedural.dsprites import ColorDSprites
from nearid_jax.data.procedural.dsprites import DSprites
from nearid_jax.data.procedural.dsprites import NoisyDSprites
from nearid_jax.data.procedural.shapes3d import Shapes3D

__all__ = ["CorrelatedFactors", "ColorDSprites", "DSprites", "NoisyDSprites",
           "Shapes3D"]
