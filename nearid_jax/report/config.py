"""The report's settings: `default_config` and the one check of them."""
from __future__ import annotations

import ml_collections

from nearid_jax import align
from nearid_jax import metrics as metrics_lib
from nearid_jax import train

ICA_COMPONENTS = ("factors", "latent")  # or a positive integer, as a string
METRICS_ROWS = ("all", "half")


def default_config() -> ml_collections.ConfigDict:
  """The report's settings; `train` is a full trainer config (8 AE runs).

  Returns:
    A ConfigDict; every field is documented in place.

  Examples:
    >>> c = default_config()
    >>> c.threshold, c.ica.components
    (0.05, 'factors')
  """
  c = ml_collections.ConfigDict()
  c.train = train.default_config()
  c.train_workdir = ""       # analyse this training workdir instead
  c.layer = "latent"         # representation analysed
  c.kinds = ("perm", "rigid", "linear", "ica")       # between runs
  # To the factors; "similarity" (rotation + one global scale) is there by
  # default because the factors are standardised while latents have an
  # arbitrary scale, which "rigid" then mostly measures.
  c.structural_kinds = ("perm", "rigid", "similarity", "linear", "ica")
  c.seed = 0                 # key of the row split, subsample, ICA, bootstrap
  c.fit_fraction = 0.5
  c.diameter = "max"         # or "q99"; both are reported, this one divides
  c.dims = "pad"             # factor/representation dimension mismatch
  c.perm_scale = False       # "perm": translation only (Table 1 reading)
  c.ridge = 0.0
  c.threshold = 0.05         # ε (mean ℓ2 / diameter) counted as "near"
  c.bootstrap = 1000         # resamples of pairs for the 95% intervals
  # A latent whose standard deviation (float64, over all rows) is below this
  # share of its run's largest is "near-dead": dropped for the ε maps, with
  # a note. At 1e-2 its variance is 1e-4 of the largest, well above where a
  # float32 covariance stops resolving rank (~d · 1.2e-7).
  c.dead_latent_spread = 1e-2
  c.ica = ml_collections.ConfigDict(dict(
      max_iter=400, tol=1e-4, n_restarts=1,
      # ICA components of the "after ICA" metrics: "factors" (their number
      # K, the default), "latent" (the latent dimension) or an integer.
      components="factors"))
  c.bi_lipschitz_points = 256  # evaluation points per decoder
  # Disentanglement metrics (nearid_jax.metrics) to the factors, raw and
  # after ICA; () to skip. MCC and R² are always in the structural table.
  c.metrics = ("infomec", "dci", "mig", "sap", "modularity_explicitness",
               "udr")
  # Rows the metrics use: "all" evaluation rows of representations.npz (the
  # default), or "half", a random half of them (the report's old convention).
  c.metrics_rows = "all"
  # InfoE is reported at Hsu et al.'s protocol (100 L-BFGS iterations) and,
  # as "infoe_converged", at this many (0 skips it): the 100-iteration fit is
  # not invariant to linear maps of the latents, the converged one is.
  c.infoe_converged_iter = 1000
  c.dci_estimator = "logistic"   # or "gbt" (disentanglement_lib's)
  return c


def ica_components(spec: str, num_factors: int, dim: int) -> int:
  """The number of ICA components that `config.ica.components` names.

  Args:
    spec: "factors", "latent" or a positive integer (as a string or int).
    num_factors: K, the number of factors.
    dim: d, the latent dimension.

  Returns:
    An int in [1, d].

  Raises:
    ValueError: naming config.ica.components.

  Examples:
    >>> ica_components("factors", 5, 10), ica_components("7", 5, 10)
    (5, 7)
  """
  spec = str(spec)
  if spec == "factors":
    k = num_factors
  elif spec == "latent":
    k = dim
  elif spec.isdigit() and int(spec) > 0:
    k = int(spec)
  else:
    raise ValueError(f"config.ica.components: must be one of "
                     f"{ICA_COMPONENTS} or a positive integer, got {spec!r}.")
  if k > dim:
    raise ValueError(f"config.ica.components: {spec!r} means {k} components "
                     f"but the layer has d = {dim} dimensions.")
  return k


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the analysis settings before anything trains or compiles.

  Args:
    config: see `default_config`.

  Raises:
    ValueError: naming the field and the fix.
  """
  def bad(field, msg):
    raise ValueError(f"config.{field}: {msg}")
  for field in ("kinds", "structural_kinds"):
    kinds = tuple(config[field])
    unknown = [k for k in kinds if k not in align.KINDS]
    if unknown or not kinds:
      bad(field, f"unknown kind(s) {unknown or '(none)'}; choose from "
          f"{align.KINDS}.")
  if not 0 < config.fit_fraction < 1:
    bad("fit_fraction", f"must be in (0, 1), got {config.fit_fraction}.")
  if config.diameter not in align.DIAMETERS:
    bad("diameter", f"must be one of {align.DIAMETERS}, got "
        f"{config.diameter!r}.")
  if config.dims not in align.DIMS:
    bad("dims", f"must be one of {align.DIMS}, got {config.dims!r}.")
  if config.ridge < 0:
    bad("ridge", f"must be >= 0, got {config.ridge}.")
  if not config.threshold > 0:
    bad("threshold", f"must be > 0, got {config.threshold}.")
  if config.bootstrap < 100:
    bad("bootstrap", f"must be >= 100 resamples, got {config.bootstrap}.")
  if not 0 <= config.dead_latent_spread < 1:
    bad("dead_latent_spread", f"must be in [0, 1), got "
        f"{config.dead_latent_spread}.")
  spec = str(config.ica.components)
  if spec not in ICA_COMPONENTS and not (spec.isdigit() and int(spec) > 0):
    bad("ica.components", f"must be one of {ICA_COMPONENTS} or a positive "
        f"integer, got {spec!r}.")
  unknown = sorted(set(config.metrics) - set(metrics_lib.ALL_METRICS))
  if unknown:
    bad("metrics", f"unknown metric(s) {unknown}; choose from "
        f"{metrics_lib.ALL_METRICS}, or () for none.")
  if config.metrics_rows not in METRICS_ROWS:
    bad("metrics_rows", f"must be one of {METRICS_ROWS}, got "
        f"{config.metrics_rows!r}.")
  if config.infoe_converged_iter < 0:
    bad("infoe_converged_iter", f"must be >= 0, got "
        f"{config.infoe_converged_iter}.")
  if config.dci_estimator not in ("logistic", "gbt"):
    bad("dci_estimator", f"must be 'logistic' or 'gbt', got "
        f"{config.dci_estimator!r}.")
  if config.bi_lipschitz_points < 1:
    bad("bi_lipschitz_points", f"must be >= 1, got "
        f"{config.bi_lipschitz_points}.")
  # The train section is checked once, by train.run, before it compiles.
  if not config.train_workdir:
    if config.layer not in config.train.eval.layers:
      bad("layer", f"{config.layer!r} is not among the trained layers "
          f"config.train.eval.layers = {tuple(config.train.eval.layers)}; "
          f"add it, e.g. --config.train.eval.layers=\"('{config.layer}',)\".")
