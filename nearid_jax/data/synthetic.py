"""A synthetic data-generating process x = g(u) with known ground truth.

Latent factors u in R^k have independent (or deliberately dependent)
non-Gaussian components; a random injective map g lifts them to x in R^D;
labels for supervised learners are argmax over C random linear scores of u
(Reizinger et al.). Everything is sampled on device from an explicit key, so
the trainer draws fresh batches inside its jitted step (infinite data) while
held-out evaluation sets come from a fixed key.

Mixings (`mixing=`):
  * "mlp": x = W_L σ(... σ(W_1 P u)) with P a random D×k matrix with
    orthonormal columns (the injective lift), W_l random orthogonal D×D and
    σ = LeakyReLU with slope α between layers (L - 1 of them). Each σ is
    bi-Lipschitz with constants [α, 1], so g is (1/α^(L-1))-bi-Lipschitz: α = 1 is linear, α → 0 strongly
    nonlinear (Theorem 3 of the paper needs it close to 1).
  * "near_isometric": x = h_L ∘ ... ∘ h_1(P u) with residual layers
    h(v) = v + (δ/L) tanh(W v), W orthogonal. Each layer's Jacobian is within
    δ/L of an isometry, so g is (1+δ)-bi-Lipschitz up to O(δ²).

Dependence (`dependence=`, strength ρ = `correlation`):
  * "none": independent components (the ICA assumption holds);
  * "copula": a Gaussian copula with equicorrelation ρ, marginals unchanged;
  * "mix": u = M s with M the Cholesky factor of the equicorrelation matrix,
    i.e. a linear mixing of independent sources (marginals change).
"""
from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

SOURCES = ("laplace", "uniform", "gennorm", "gaussian")
MIXINGS = ("mlp", "near_isometric")
DEPENDENCES = ("none", "copula", "mix")


def default_config() -> ml_collections.ConfigDict:
  """The default synthetic process: 4 Laplace factors, mildly nonlinear g."""
  return ml_collections.ConfigDict(dict(
      name="synthetic",
      seed=0,                # key of g, the label map and the eval set
      latent_dim=4,          # k
      obs_dim=16,            # D >= k
      source="laplace",      # one of SOURCES
      gennorm_beta=1.0,      # shape of "gennorm": <2 super-, >2 sub-Gaussian
      dependence="none",     # one of DEPENDENCES
      correlation=0.0,       # ρ for "copula"/"mix", in (-1/(k-1), 1)
      mixing="mlp",          # one of MIXINGS
      mixing_layers=2,       # L
      negative_slope=0.5,    # α of the mixing's LeakyReLU, in (0, 1]
      isometry_delta=0.1,    # δ of "near_isometric", in [0, 1)
      num_classes=8,         # C labels for classifiers
      label_noise=0.0,       # probability of a uniformly random label
      eval_size=2048,        # rows of the fixed held-out evaluation set
  ))


@flax.struct.dataclass
class SyntheticProcess:
  """A sampled data-generating process; a pytree, so it can enter `jax.jit`.

  Attributes:
    lift: [D, k] matrix with orthonormal columns.
    weights: [L, D, D] orthogonal matrices of the mixing layers.
    biases: [L, D] biases of the mixing layers ("mlp" only; zeros otherwise).
    label_weights: [C, k] and `label_bias` [C]: the label scores.
    chol: [k, k] Cholesky factor of the equicorrelation matrix.
  """
  lift: jax.Array
  weights: jax.Array
  biases: jax.Array
  label_weights: jax.Array
  label_bias: jax.Array
  chol: jax.Array
  config: Any = flax.struct.field(pytree_node=False)

  @property
  def latent_dim(self) -> int:
    return self.lift.shape[1]

  @property
  def obs_dim(self) -> int:
    return self.lift.shape[0]

  @property
  def num_classes(self) -> int:
    return self.label_weights.shape[0]

  def sample_latents(self, key: jax.Array, n: int) -> jax.Array:
    """Draws u: [n, k] with unit-variance components."""
    c = self.config
    if c.dependence == "copula":
      g = jax.random.normal(key, (n, self.latent_dim)) @ self.chol.T
      return _marginal_icdf(c, jax.scipy.stats.norm.cdf(g))
    s = _sample_sources(c, key, (n, self.latent_dim))
    if c.dependence == "mix":
      s = s @ self.chol.T
    return s

  def mix(self, u: jax.Array) -> jax.Array:
    """x = g(u): [..., k] -> [..., D]."""
    h = u @ self.lift.T
    c = self.config
    n_layers = self.weights.shape[0]
    for l in range(n_layers):
      if c.mixing == "mlp":
        h = h @ self.weights[l].T + self.biases[l]
        if l < n_layers - 1:  # the last layer stays linear
          h = jax.nn.leaky_relu(h, c.negative_slope)
      else:
        h = h + (c.isometry_delta / n_layers) * jnp.tanh(h @ self.weights[l].T)
    return h

  def labels(self, key: jax.Array, u: jax.Array) -> jax.Array:
    """Class labels [n] = argmax of C linear scores of u, with label noise."""
    y = jnp.argmax(u @ self.label_weights.T + self.label_bias, axis=-1)
    k_flip, k_new = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, self.config.label_noise, y.shape)
    y_rand = jax.random.randint(k_new, y.shape, 0, self.num_classes)
    return jnp.where(flip, y_rand, y).astype(jnp.int32)

  def sample(self, key: jax.Array, n: int) -> dict[str, jax.Array]:
    """Draws a batch: {"x": [n, D], "u": [n, k], "label": [n] int32}.

    Examples:
      >>> proc = make_process(default_config())
      >>> batch = proc.sample(jax.random.key(0), 3)
      >>> batch["x"].shape, batch["u"].shape, batch["label"].shape
      ((3, 16), (3, 4), (3,))
    """
    k_u, k_y = jax.random.split(key)
    u = self.sample_latents(k_u, n)
    return {"x": self.mix(u), "u": u, "label": self.labels(k_y, u)}

  def eval_set(self) -> dict[str, jax.Array]:
    """The fixed held-out evaluation set (same for every run and call)."""
    key = jax.random.fold_in(jax.random.key(self.config.seed), 1)
    return self.sample(key, self.config.eval_size)

  @property
  def spec(self) -> dict[str, Any]:
    return {"obs_shape": (self.obs_dim,), "num_classes": self.num_classes,
            "latent_dim": self.latent_dim}


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field and the fix for an invalid process."""
  def bad(field, msg):
    raise ValueError(f"config.data.{field}: {msg}")
  if c.latent_dim < 1:
    bad("latent_dim", f"must be >= 1, got {c.latent_dim}.")
  if c.obs_dim < c.latent_dim:
    bad("obs_dim", f"= {c.obs_dim} is smaller than latent_dim = "
        f"{c.latent_dim}; the lift of u into R^D must be injective, so set "
        f"--config.data.obs_dim >= {c.latent_dim}.")
  if c.source not in SOURCES:
    bad("source", f"unknown source {c.source!r}; choose one of {SOURCES}.")
  if c.mixing not in MIXINGS:
    bad("mixing", f"unknown mixing {c.mixing!r}; choose one of {MIXINGS}.")
  if c.dependence not in DEPENDENCES:
    bad("dependence",
        f"unknown dependence {c.dependence!r}; choose one of {DEPENDENCES}.")
  if c.mixing_layers < 1:
    bad("mixing_layers", f"must be >= 1, got {c.mixing_layers}.")
  if not 0.0 < c.negative_slope <= 1.0:
    bad("negative_slope", f"must be in (0, 1] so g is invertible, got "
        f"{c.negative_slope}.")
  if not 0.0 <= c.isometry_delta < 1.0:
    bad("isometry_delta", f"must be in [0, 1), got {c.isometry_delta}.")
  if c.source == "gennorm" and c.gennorm_beta <= 0:
    bad("gennorm_beta", f"must be > 0, got {c.gennorm_beta}.")
  lo = -1.0 / (c.latent_dim - 1) if c.latent_dim > 1 else -1.0
  if c.dependence != "none" and not lo < c.correlation < 1.0:
    bad("correlation", f"must be in ({lo:.3g}, 1) for a valid equicorrelation "
        f"matrix, got {c.correlation}.")
  if c.num_classes < 2:
    bad("num_classes", f"must be >= 2, got {c.num_classes}.")
  if not 0.0 <= c.label_noise <= 1.0:
    bad("label_noise", f"must be in [0, 1], got {c.label_noise}.")
  if c.eval_size < 2:
    bad("eval_size", f"must be >= 2, got {c.eval_size}.")


def make_process(config: ml_collections.ConfigDict) -> SyntheticProcess:
  """Builds the process from `config` (see `default_config`) and its seed."""
  validate_config(config)
  c = ml_collections.FrozenConfigDict(config)
  k, d, n_layers = c.latent_dim, c.obs_dim, c.mixing_layers
  keys = jax.random.split(jax.random.key(c.seed), 5)
  orth = jax.nn.initializers.orthogonal()
  lift = orth(keys[0], (d, k))
  weights = jax.vmap(lambda kk: orth(kk, (d, d)))(
      jax.random.split(keys[1], n_layers))
  biases = (0.1 * jax.random.normal(keys[2], (n_layers, d))
            if c.mixing == "mlp" else jnp.zeros((n_layers, d)))
  label_weights = jax.random.normal(keys[3], (c.num_classes, k))
  label_bias = 0.1 * jax.random.normal(keys[4], (c.num_classes,))
  rho = c.correlation if c.dependence != "none" else 0.0
  corr = (1.0 - rho) * jnp.eye(k) + rho * jnp.ones((k, k))
  return SyntheticProcess(lift, weights, biases, label_weights, label_bias,
                          jnp.linalg.cholesky(corr), c)


def bi_lipschitz_bound(config: ml_collections.ConfigDict) -> float:
  """Upper bound on 1 + L for the mixing g (1 + L = max Lip(g), Lip(g⁻¹))."""
  if config.mixing == "mlp":
    return float(config.negative_slope) ** -(config.mixing_layers - 1)
  return (1.0 + config.isometry_delta) / max(1e-12, 1 - config.isometry_delta)


def _gennorm_scale(beta: float) -> float:
  """Scale that gives the generalized normal with shape β unit variance."""
  return math.sqrt(math.gamma(1.0 / beta) / math.gamma(3.0 / beta))


def _sample_sources(c, key, shape) -> jax.Array:
  """Independent unit-variance sources of the configured family."""
  if c.source == "laplace":
    return jax.random.laplace(key, shape) / math.sqrt(2.0)
  if c.source == "uniform":
    return jax.random.uniform(key, shape, minval=-math.sqrt(3.0),
                              maxval=math.sqrt(3.0))
  if c.source == "gennorm":
    return (jax.random.generalized_normal(key, c.gennorm_beta, shape)
            * _gennorm_scale(c.gennorm_beta))
  return jax.random.normal(key, shape)


def _marginal_icdf(c, p: jax.Array) -> jax.Array:
  """Inverse CDF of the unit-variance marginal, for the Gaussian copula."""
  p = jnp.clip(p, 1e-7, 1 - 1e-7)
  if c.source == "laplace":
    b = 1.0 / math.sqrt(2.0)
    return -b * jnp.sign(p - 0.5) * jnp.log1p(-2.0 * jnp.abs(p - 0.5))
  if c.source == "uniform":
    return math.sqrt(3.0) * (2.0 * p - 1.0)
  if c.source == "gaussian":
    return jax.scipy.stats.norm.ppf(p)
  # Generalized normal: |x|^β / 1 ~ Gamma(1/β), so invert the regularised
  # lower incomplete gamma by bisection (monotone, 40 halvings suffice).
  beta = c.gennorm_beta
  q = jnp.abs(2.0 * p - 1.0)
  hi = jnp.full_like(q, 50.0 + 10.0 / beta)
  lo = jnp.zeros_like(q)

  def body(_, lohi):
    lo, hi = lohi
    mid = 0.5 * (lo + hi)
    below = jax.scipy.special.gammainc(1.0 / beta, mid) < q
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, 40, body, (lo, hi))
  g = 0.5 * (lo + hi)
  return jnp.sign(p - 0.5) * g ** (1.0 / beta) * _gennorm_scale(beta)


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A JSON-able record of every parameter of the process."""
  out = dict(config.to_dict())
  out["bi_lipschitz_bound"] = bi_lipschitz_bound(config)
  return out

