r"""Conv autoencoders (InfoMEC family) on image benchmarks: 8 seeds at once.

The "AE" row of the paper's Table 2, whose latents give "AE + ICA" after
linear ICA: the Hsu et al. (2023) encoder/decoder ("full" size), per-pixel
sigmoid cross-entropy, AdamW with weight decay on weights only, global-norm
clipping 1.0, 2 x #factors latents, batch 128, 200k steps.

Command:
  python -m experiments.train --config=experiments/configs/conv_ae.py:shapes3d \
      --workdir=results/conv_ae_shapes3d
Datasets (the argument): shapes3d (default), dsprites, color_dsprites,
noisy_dsprites, cells (rendered on device), mpi3d, falcor3d, isaac3d (TFDS,
prepared with `python -m nearid_jax.data.builders`); append ",smoke" for CI
sizes. Only weight decay was tuned for AE + ICA in the paper; sweep it in one
program with --config.grid.weight_decay="(0, 1e-4, 1e-3, 1e-2)".
Hardware and runtime: one H100, an estimate of about 3.5 h for 8 seeds x 200k
steps (the full model costs ~2.0 GFLOP per training image, so ~4.1e17 FLOP
in all, at ~35 TFLOP/s achieved in float32/TF32); not yet measured on a GPU.
`:smoke` (small model, 32x32, 2 seeds, 20 steps): under a minute on a
2-core CPU, mostly compilation.
Expected result: reconstruction cross-entropy close to the images' entropy
floor for every seed, none diverged; the paper reports (InfoM, InfoE, InfoC)
= (.34, .99, .16) for the AE on Shapes3D and (.79, .99, .52) after ICA.
"""
from experiments.configs import image_base


def get_config(arg: str | None = None):
  return image_base.conv_ae_config(arg, "autoencoder")[0]
