"""Procedural ground-truth image benchmarks rendered by pure JAX functions."""
from nearid_jax.data.procedural.dsprites import ColorDSprites
from nearid_jax.data.procedural.dsprites import DSprites
from nearid_jax.data.procedural.dsprites import NoisyDSprites
from nearid_jax.data.procedural.shapes3d import Shapes3D
