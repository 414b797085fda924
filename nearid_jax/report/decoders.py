"""Decoder bi-Lipschitz estimates of trained runs (docs/paper.md Theorem 1).

`bi_lipschitz(train_dir, z, valid, ...)` restores the runs of a training
workdir and differentiates each decoder at the run's own latent codes with
`align.decoder_bi_lipschitz`. Besides 1 + L (which moves when the latents
are rescaled) it reports the scale-free σ_max/σ_min (the largest
condition number of the Jacobian over the points). Models
trained with a sigmoid cross-entropy output are differentiated on their
mean output (the sigmoid of the logits), the quantity the data are
compared with.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import align
from nearid_jax import train
from nearid_jax.models import conv as conv_lib
from nearid_jax.report import result as R


def _empty(r: int, note: str, data_bound=None) -> R.BiLipschitz:
  nan = np.full(r, np.nan)
  return R.BiLipschitz(one_plus_l=nan, condition=nan.copy(),
                       theorem1_factor=nan.copy(), data_bound=data_bound,
                       points=0, output="", note=note)


def bi_lipschitz(train_dir: str, z: np.ndarray, valid: np.ndarray, *,
                 layer: str, points: int) -> R.BiLipschitz:
  """1 + L, σ_max/σ_min and sqrt(2L + L²) of each valid run's decoder.

  Args:
    train_dir: a training workdir of `nearid_jax.train.run`.
    z: [R, n, d] the runs' latent codes (evaluation points).
    valid: [R] bool; other runs get NaN.
    layer: the analysed layer (only "latent" feeds the decoder).
    points: evaluation points per run (the first ones).

  Returns:
    A `BiLipschitz` (NaN with a note saying why when not computable).
  """
  r = len(valid)
  try:
    trainer, state = train.load_trained(train_dir)
  except FileNotFoundError as e:  # e.g. representations from another tool
    return _empty(r, f"not computed: {e}")
  data_cfg = trainer.config.data
  bound = None
  if data_cfg.name == "synthetic":
    from nearid_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    bound = float(synthetic.bi_lipschitz_bound(data_cfg))
  if layer != "latent":
    return _empty(r, f"not computed: the decoder maps the 'latent' layer, "
                  f"not {layer!r}.", bound)
  probe = trainer.model(trainer.runs.hparams)
  if not hasattr(probe, "decode"):
    return _empty(r, f"not computed: the model ({type(probe).__name__}) has "
                  "no decoder.", bound)
  logits = trainer.config.objective.get("reconstruction", "mse") == (
      "sigmoid_ce")
  m = min(int(points), z.shape[1])
  idx = np.flatnonzero(valid)
  params = jax.tree.map(lambda x: x[idx], state.params)
  model_state = jax.tree.map(lambda x: x[idx], state.model_state)
  hps = {k: jnp.asarray(v[idx]) for k, v in trainer.runs.hparams.items()}
  pts = jnp.asarray(z[idx, :m])

  def one(p, ms, hp, zp):
    model = trainer.model(hp)

    def decode(v):  # one latent [k] -> the flattened (mean) output [D]
      x = model.apply({"params": p, **ms}, v[None], method="decode")
      x = jax.nn.sigmoid(x) if logits else x
      return x.reshape(-1)
    out = align.decoder_bi_lipschitz(decode, zp)
    return out["one_plus_l"], out["condition"]
  # Our conv layers' CPU custom VJP is reverse-mode only; trace them as
  # lax convolutions here so that jacfwd (k columns, not D rows) works.
  with conv_lib.forward_mode():
    opl, cond = jax.jit(jax.vmap(one))(params, model_state, hps, pts)
  full = lambda v: _scatter(np.asarray(v, np.float64), idx, r)  # noqa: E731
  opl = full(opl)
  return R.BiLipschitz(
      one_plus_l=opl, condition=full(cond),
      theorem1_factor=np.asarray(align.theorem1_factor(opl), np.float64),
      data_bound=bound, points=m,
      output=("decoder mean (sigmoid of the logits)" if logits
              else "decoder output"),
      note="1 + L = max(max σ_max, 1/min σ_min) of the decoder Jacobian "
           "over the evaluation points (the run's latent codes), docs/paper.md "
           "Theorem 1; it depends on the latents' scale. σ_max/σ_min (the "
           "largest over the points of the Jacobian's condition number) "
           "does not.")


def _scatter(vals, idx, r):
  out = np.full(r, np.nan)
  out[idx] = np.where(np.isfinite(vals), vals, np.nan)
  return out
