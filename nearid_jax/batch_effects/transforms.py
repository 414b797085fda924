"""The four embedding transforms of the paper's cell experiment.

Each is an affine map of embeddings x [.., n, d] to features [.., n, k]:

    features = (x - mean) @ matrix.T - shift

* **Base**: the raw embedding (mean 0, matrix I, shift 0; k = d).
* **PCA**: whitening. With the fit rows' mean m and covariance
  C = U diag(λ) Uᵀ (λ descending, eigenvectors signed so that their
  largest-magnitude entry is positive), matrix = diag(λ_1..k)^(-1/2) U_kᵀ:
  the fit rows' features have identity covariance.
* **PCA+ICA**: FastICA (`nearid_jax.ica.fastica`, logcosh, parallel) of
  the PCA features of the fit rows; matrix = unmixing @ PCA matrix. A
  rotation (and unit rescaling) of the PCA features chosen to make them
  as independent / non-Gaussian as possible.
* **PCA+Rand**: the PCA features rotated by a Haar-random orthogonal
  matrix (one per run): the control for "any rotation of PCA".

The fit rows are the control wells ("typical variation normalisation",
the usual choice for Cell Painting embeddings) or all wells; the map is
then applied to every well. Everything is batched over runs (a leading
[R] axis, one run per trained model) and jittable; `fit` under `jax.jit`
skips FastICA's host checks (see `nearid_jax.ica`).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from nearid_jax import ica

KINDS = ("base", "pca", "pca_ica", "pca_rand")
LABELS = {"base": "Base", "pca": "PCA", "pca_ica": "PCA+ICA",
          "pca_rand": "PCA+Rand"}
_HI = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Transform:
  """An affine map features = (x - mean) @ matrix.T - shift.

  Attributes:
    mean: [.., d] centring.
    matrix: [.., k, d].
    shift: [.., k].
  """
  mean: jax.Array
  matrix: jax.Array
  shift: jax.Array


def apply(t: Transform, x) -> jax.Array:
  """Features [.., n, k] of embeddings x [.., n, d] (same leading axes)."""
  x = jnp.asarray(x)
  return (jnp.einsum("...nd,...kd->...nk", x - t.mean[..., None, :],
                     t.matrix, precision=_HI) - t.shift[..., None, :])


def identity(x_fit) -> Transform:
  """Base: the embedding itself."""
  x_fit = jnp.asarray(x_fit)
  lead, d = x_fit.shape[:-2], x_fit.shape[-1]
  return Transform(jnp.zeros(lead + (d,), x_fit.dtype),
                   jnp.broadcast_to(jnp.eye(d, dtype=x_fit.dtype),
                                    lead + (d, d)),
                   jnp.zeros(lead + (d,), x_fit.dtype))


def pca_whitening(x_fit, n_components: int | None = None) -> Transform:
  """PCA whitening fitted on the rows of x_fit [.., m, d].

  Eigenvalues below 1e-6 of the largest are floored there (a rank-deficient
  fit set gives large, finite weights instead of Inf; the host entry point
  `fit_all` refuses such sets first).

  Args:
    x_fit: [m, d] or [R, m, d] float rows to fit on.
    n_components: k <= d leading components (None: d).

  Returns:
    A `Transform` with matrix [.., k, d].

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (500, 3)) * jnp.array(
    ...     [1., 5., .2])
    >>> t = pca_whitening(x)
    >>> f = apply(t, x)
    >>> bool(jnp.allclose(jnp.cov(f.T), jnp.eye(3), atol=1e-3))
    True
  """
  x_fit = jnp.asarray(x_fit)
  m, d = x_fit.shape[-2:]
  k = d if n_components is None else int(n_components)
  mean = x_fit.mean(-2)
  xc = x_fit - mean[..., None, :]
  cov = jnp.einsum("...ni,...nj->...ij", xc, xc, precision=_HI) / (m - 1)
  lam, u = jnp.linalg.eigh(cov)
  lam, u = lam[..., ::-1][..., :k], u[..., :, ::-1][..., :, :k]
  # A deterministic sign per component (eigh's is arbitrary).
  big = jnp.take_along_axis(u, jnp.argmax(jnp.abs(u), -2)[..., None, :], -2)
  u = u * jnp.where(big < 0, -1.0, 1.0)
  lam = jnp.maximum(lam, 1e-6 * lam[..., :1])
  matrix = jnp.swapaxes(u, -1, -2) / jnp.sqrt(lam)[..., :, None]
  return Transform(mean, matrix, jnp.zeros(mean.shape[:-1] + (k,),
                                           x_fit.dtype))


def random_rotation(key: jax.Array, k: int, dtype=jnp.float32) -> jax.Array:
  """A Haar-distributed [k, k] orthogonal matrix (QR with sign fix).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> q = random_rotation(jax.random.key(0), 4)
    >>> bool(jnp.allclose(q @ q.T, jnp.eye(4), atol=1e-5))
    True
  """
  q, r = jnp.linalg.qr(jax.random.normal(key, (k, k), dtype))
  return q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)[None, :]


def fit(x_fit, kind: str, key: jax.Array, *,
        n_components: int | None = None, ica_max_iter: int = 400,
        ica_tol: float = 1e-4) -> Transform:
  """Fits one transform on the rows x_fit [m, d] or [R, m, d] (R runs).

  Args:
    x_fit: rows to fit on (e.g. the control wells).
    kind: one of KINDS.
    key: draws FastICA's start (pca_ica) or the rotation (pca_rand); one
      key for all runs (split per run).
    n_components: PCA components k (None: d); ignored by "base".
    ica_max_iter, ica_tol: FastICA's stopping rule.

  Returns:
    A `Transform` (leading [R] axis for a stack).

  Raises:
    ValueError: an unknown kind.

  Examples:
    >>> import jax
    >>> x = jax.random.laplace(jax.random.key(0), (2, 400, 3))
    >>> t = fit(x, "pca_ica", jax.random.key(1))
    >>> t.matrix.shape
    (2, 3, 3)
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
  if kind == "base":
    return identity(x_fit)
  pca = pca_whitening(x_fit, n_components)
  if kind == "pca":
    return pca
  x_fit = jnp.asarray(x_fit)
  batched = x_fit.ndim == 3
  k = pca.matrix.shape[-2]
  if kind == "pca_rand":
    keys = jax.random.split(key, x_fit.shape[0]) if batched else key
    rot = (jax.vmap(lambda kk: random_rotation(kk, k, x_fit.dtype))(keys)
           if batched else random_rotation(keys, k, x_fit.dtype))
    return pca.replace(matrix=jnp.matmul(rot, pca.matrix, precision=_HI))
  res = ica.fastica(apply(pca, x_fit), key, max_iter=ica_max_iter,
                    tol=ica_tol)
  matrix = jnp.matmul(res.unmixing, pca.matrix, precision=_HI)
  shift = jnp.einsum("...k,...jk->...j", res.mean, res.unmixing,
                     precision=_HI)
  return Transform(pca.mean, matrix, shift)
