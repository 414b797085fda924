r"""BioAE baselines (Whittington et al. 2023) on the InfoMEC conv autoencoder.

Same encoder/decoder and optimizer as conv_ae.py; loss = mean per-pixel
cross-entropy + 1 · mean(max(-z, 0)) (non-negativity) + 0.01 · mean(z^2)
(activity), and the published l2 weight 1e-4 as AdamW weight decay on
weights only (Hsu et al. 2023's settings, the same for every dataset).

Command:
  python -m experiments.train --config=experiments/configs/bioae.py:shapes3d \
      --workdir=results/bioae_shapes3d
Hardware and runtime: as conv_ae.py (one H100, an estimated 3.5 h for 8
seeds x 200k steps; not yet measured); `:smoke` under a minute on a 2-core
CPU.
Expected result: no seed diverges; latents become non-negative and sparse;
the paper quotes (InfoM, InfoE, InfoC) = (.56, .98, .44) on Shapes3D from
Hsu et al.
"""
from experiments.configs import image_base


def get_config(arg: str | None = None):
  config, _ = image_base.conv_ae_config(arg, "bioae")
  config.objective.nonnegative_weight = 1.0
  config.objective.activity_weight = 0.01
  config.optimizer.weight_decay = 1e-4
  return config
