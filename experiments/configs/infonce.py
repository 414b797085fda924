r"""Contrastive (InfoNCE) encoders with positives from small factor changes.

Beyond the paper: each positive partner is the same scene with ONE random
factor moved by one grid step, rendered on device; the other rows of the
batch are negatives; temperature 0.1, L2-normalised embeddings of width
#factors. Contrastive learning with such positives identifies the factors
up to simple maps (Zimmermann et al. 2021), a point of comparison for the
autoencoders. Encoder: the conv autoencoder's encoder; optimizer as
conv_ae.py.

Command:
  python -m experiments.train --config=experiments/configs/infonce.py:shapes3d \
      --workdir=results/infonce_shapes3d
Datasets: the procedural ones (shapes3d default, dsprites, cells, ...);
append ",smoke" for CI sizes.
Hardware and runtime: one H100, an estimate of about 2 h for 8 seeds x 200k
steps (the encoder alone, on twice the images; not yet measured); `:smoke`
under a minute on a 2-core CPU.
Expected result: positive-pair retrieval accuracy in the batch well above
chance (1/128) for every seed; none diverges.
"""
from experiments.configs import image_base
from nearid_jax.models import conv_ae

PROCEDURAL = ("dsprites", "color_dsprites", "noisy_dsprites", "shapes3d",
              "cells", "dsprites_correlated", "shapes3d_correlated")


def get_config(arg: str | None = None):
  dataset, smoke = image_base.parse_arg(arg, "shapes3d", PROCEDURAL)
  config = image_base.base_config(dataset, smoke)
  model = conv_ae.default_config("small" if smoke else "full",
                                 image_base.NUM_FACTORS[dataset])
  for field in ("decoder_widths", "decoder_kernels", "decoder_strides",
                "decoder_dense"):
    del model[field]
  model.name = "conv_encoder"
  config.model = model
  config.data.positive_pairs = True
  config.objective.name = "infonce"
  config.objective.temperature = 0.1
  config.eval.layers = ("latent", "features")
  return config
