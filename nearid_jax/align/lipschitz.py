"""Theorem 1 tools: a decoder's bi-Lipschitz constant from its Jacobians.

docs/paper.md Theorem 1 bounds ε by sqrt(2L + L²) times the diameter when the
decoders are (1 + L)-bi-Lipschitz. `decoder_bi_lipschitz` estimates 1 + L
from the Jacobian's extreme singular values at evaluation points, and
beside it the scale-free condition number σ_max/σ_min, which does not
change when the latent or the output is rescaled (1 + L does: a decoder
that doubles every latent is not 1-bi-Lipschitz, though it is as well
conditioned as the identity).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def decoder_bi_lipschitz(decode: Callable, z) -> dict:
  """Bi-Lipschitz estimate of a decoder (or head) from its Jacobians.

  With σ_max(x), σ_min(x) the extreme singular values of the [D, k]
  Jacobian of `decode` at each evaluation point, 1 + L = max(max_x σ_max,
  1 / min_x σ_min) (docs/paper.md Theorem 1). Its scale-free companion is the
  condition number κ = max_x σ_max(x) / σ_min(x): unchanged when z or the
  output is multiplied by a constant, so it compares decoders whose latents
  have different scales (1 + L mostly measures that scale). Pure: vmap it
  over runs. The Jacobian is taken with `jax.jacfwd` (k columns, not D
  rows): a decoder whose layers support only reverse mode (e.g. a custom
  VJP) must be traced in its forward-mode form by the caller.

  Args:
    decode: function [k] -> [D] (one point), D >= k for an injective
      decoder (else σ_min = 0, 1 + L = inf and κ = inf).
    z: [m, k] evaluation points (e.g. the run's latent codes).

  Returns:
    {"one_plus_l": [], "condition": [] (max over points of σ_max/σ_min),
    "sigma_max": [m], "sigma_min": [m]}.

  Examples:
    >>> import jax.numpy as jnp
    >>> w = jnp.array([[2., 0.], [0., 0.5], [0., 0.]])
    >>> out = decoder_bi_lipschitz(lambda v: w @ v, jnp.ones((4, 2)))
    >>> float(out["one_plus_l"]), float(out["condition"])
    (2.0, 4.0)
  """
  z = jnp.asarray(z)
  jac = jax.vmap(jax.jacfwd(decode))(z)  # [m, D, k]
  sv = jnp.linalg.svd(jac, compute_uv=False)  # [m, min(D, k)]
  smax = sv[:, 0]
  smin = sv[:, -1] if jac.shape[1] >= jac.shape[2] else jnp.zeros_like(smax)
  one_plus_l = jnp.maximum(jnp.max(smax), 1 / jnp.min(smin))
  ratio = smax / jnp.where(smin > 0, smin, 1)
  condition = jnp.max(jnp.where(smin > 0, ratio, jnp.inf))
  return {"one_plus_l": one_plus_l, "condition": condition,
          "sigma_max": smax, "sigma_min": smin}


def theorem1_factor(one_plus_l):
  """sqrt(2L + L²) for 1 + L (Theorem 1's ε ∝ this · diameter).

  Examples:
    >>> round(float(theorem1_factor(2.0)), 6)
    1.732051
  """
  l = np.asarray(one_plus_l, np.float64) - 1
  return np.sqrt(np.maximum(2 * l + l * l, 0))
