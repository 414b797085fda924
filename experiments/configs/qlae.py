r"""QLAE (Hsu et al. 2023, latent quantization) on the InfoMEC conv autoencoder.

Same encoder/decoder, optimizer, data and sizes as conv_ae.py, with a
learned scalar codebook of 10 values per latent (initialised on
[-0.5, 0.5]) between encoder and decoder, straight-through quantization,
loss = mean per-pixel cross-entropy + 0.01 · quantization + 0.01 ·
commitment, and the published high weight decay 0.1 (AdamW, weights only)
(latent_quantization configs/model_partial/quantized_ae.yaml; the same for
every dataset). `nearid_jax.models.quantize` documents the quantizer.

Command:
  python -m experiments.train --config=experiments/configs/qlae.py:shapes3d \
      --workdir=results/qlae_shapes3d
Datasets (the argument): as conv_ae.py; append ",smoke" for CI sizes.
Hardware and runtime: as conv_ae.py (one H100, an estimated 3.5 h for 8
seeds x 200k steps; estimate, unmeasured); `:smoke` under a minute on a
2-core CPU.
Expected result: no seed diverges; the continuous codes settle within a
commitment distance of the codebook values. The paper's Table 2 omits
QLAE (PAPER.md §4); Hsu et al. report it as their best model on InfoM and
InfoC, which table2 (experiments/configs/paper/table2.py) checks against
the other rows under one protocol.
"""
from experiments.configs import image_base


def get_config(arg: str | None = None):
  config, _ = image_base.conv_ae_config(arg, "qlae")
  config.model.name = "conv_qlae"
  config.model.num_values = 10
  config.objective.quantization_weight = 0.01
  config.objective.commitment_weight = 0.01
  config.optimizer.weight_decay = 0.1
  config.eval.layers = ("latent", "latent_quantized")
  return config
