"""Disentanglement metrics on device, batched over runs.

Every metric takes codes z [n, d] (or [R, n, d] for R runs of the same
inputs) and ground-truth factors [n, K] and returns a dict of floats (or of
[R] arrays). Input conventions (factor encoding, continuous factors,
constant factors, fit/score splits) are documented in
`nearid_jax.metrics.inputs`; each metric's exact definition, and the
reference implementation it reproduces, in its module:

  infomec                  infomec_score      (Hsu et al. 2023)
  dci                      dci_score          (disentanglement_lib; GBT or
                                               on-device L1 logistic)
  mig                      mig_score          (disentanglement_lib)
  sap                      sap_score          (disentanglement_lib)
  modularity_explicitness  modularity_score   (disentanglement_lib)
  mcc                      mcc_score          (Hungarian-matched)
  r2                       r2_score           (affine, fit/score split)
  beta_vae_score,
  factor_vae_score         intervention_scores (disentanglement_lib)
  udr                      udr_score          (disentanglement_lib)
  evaluate_all, to_markdown suite

Example:
  >>> from nearid_jax import metrics
  >>> scores = metrics.infomec(z, factors)   # doctest: +SKIP
"""
from nearid_jax.metrics.dci_score import dci
from nearid_jax.metrics.infomec_score import infomec
from nearid_jax.metrics.intervention_scores import beta_vae_score
from nearid_jax.metrics.intervention_scores import factor_vae_score
from nearid_jax.metrics.mcc_score import mcc
from nearid_jax.metrics.mig_score import mig
from nearid_jax.metrics.modularity_score import modularity_explicitness
from nearid_jax.metrics.r2_score import r2
from nearid_jax.metrics.sap_score import sap
from nearid_jax.metrics.suite import ALL_METRICS
from nearid_jax.metrics.suite import evaluate_all
from nearid_jax.metrics.suite import to_markdown
from nearid_jax.metrics.udr_score import udr

__all__ = [
    "ALL_METRICS", "beta_vae_score", "dci", "evaluate_all",
    "factor_vae_score", "infomec", "mcc", "mig", "modularity_explicitness",
    "r2", "sap", "to_markdown", "udr",
]
