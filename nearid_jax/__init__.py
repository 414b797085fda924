"""nearid_jax: statistical and structural near-identifiability, in JAX.

Train many runs of a model in one compiled program (`train`), measure how
far apart their representations are, and how far from the true factors
(`align`, `metrics`), and disentangle them with ICA (`ica`); `report` does
all of it in one call. The science: docs/paper.md in the repository.
Submodules are imported on use (`from nearid_jax import align`), so
`import nearid_jax` stays light.
"""

__version__ = "0.1.0"
