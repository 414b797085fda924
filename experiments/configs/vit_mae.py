r"""ViT masked autoencoders on rendered images, e.g. 5-channel cell crops.

MAE (He et al. 2022): the encoder sees the 25% visible patches only (mask
ratio 0.75), a light decoder predicts the normalised pixels of the hidden
patches; AdamW (β2 = 0.95, weight decay 0.05 on weights only), cosine
schedule with 5k warm-up steps, batch 256, 100k steps. Representations: the
class token ("latent") and the mean patch token ("patch_mean").

Command:
  python -m experiments.train --config=experiments/configs/vit_mae.py:cells \
      --workdir=results/vit_mae_cells
The argument is "<dataset>[,<size>][,smoke]": datasets cells (default, the
5-channel Cell Painting-like simulator), shapes3d, dsprites, ...; sizes
vit_s16 (default; ViT-S widths with 8-px patches so a 64-px image has 64
tokens; --config.model.patch_size=16 gives the standard patching),
vit_b16, small_cpu, tiny.
Hardware and runtime: one H100, an estimate of about 2 h for 4 seeds of
ViT-S x 100k steps at 64x64 (~1.5 GFLOP per image with 75% masking; not yet
measured); `:smoke` (small_cpu, 32x32, 2 seeds, 20 steps) under a minute on
a 2-core CPU.
Expected result: the masked-patch MSE (normalised pixels) falls well below
1 (predicting the patch mean) for every seed; none diverges.
"""
from experiments.configs import image_base
from nearid_jax.models import vit

SIZES = tuple(vit.SIZES)


def get_config(arg: str | None = None):
  parts = [p for p in (arg or "").split(",") if p]
  size = next((p for p in parts if p in SIZES), None)
  dataset, smoke = image_base.parse_arg(
      ",".join(p for p in parts if p not in SIZES), "cells")
  config = image_base.base_config(dataset, smoke)
  size = size or ("small_cpu" if smoke else "vit_s16")
  config.model = vit.default_config(size)
  if size in ("vit_s16", "vit_b16"):
    config.model.patch_size = 8
  config.objective.name = "masked_autoencoder"
  config.objective.mask_ratio = 0.75
  config.objective.norm_pix_loss = True
  config.optimizer.update(dict(learning_rate=1.5e-4, b2=0.95,
                               weight_decay=0.05, schedule="cosine",
                               warmup_steps=5000, clip_norm=0.0))
  config.num_steps = 100_000
  config.batch_size = 256
  config.num_seeds = 4
  config.eval.layers = ("latent", "patch_mean")
  if smoke:
    config.num_steps, config.batch_size, config.num_seeds = 20, 32, 2
    config.optimizer.warmup_steps = 5
    config.optimizer.learning_rate = 1e-3
  return config
