r"""β-TCVAE baselines on the conv autoencoder of the InfoMEC suite.

Same encoder/decoder and optimizer as conv_ae.py with a Gaussian posterior;
loss = mean per-pixel cross-entropy + (MI + β · TC + dimension-wise KL) /
#pixels, with the minibatch-weighted-sampling estimator (Chen et al. 2018)
and N = the number of distinct images (the factor grid for procedural data,
e.g. 480,000 for Shapes3D). Published β per dataset (Hsu et al. 2023, the
paper's Table 2 β-TCVAE row): Shapes3D 3, MPI3D 0.3, Falcor3D 3, Isaac3D 1;
other datasets use β = 1.

Command:
  python -m experiments.train --config=experiments/configs/beta_tcvae.py:shapes3d \
      --workdir=results/beta_tcvae_shapes3d
Hardware and runtime: as conv_ae.py (one H100, an estimated 3.5 h for 8
seeds x 200k steps; not yet measured; the B x B estimator is negligible at
batch 128); `:smoke` under a minute on a 2-core CPU.
Expected result: no seed diverges; the total-correlation estimate falls
during training; the paper quotes (InfoM, InfoE, InfoC) = (.61, .82, .62) on
Shapes3D from Hsu et al.
"""
from experiments.configs import image_base

BETA = {"shapes3d": 3.0, "mpi3d": 0.3, "falcor3d": 3.0, "isaac3d": 1.0}


def get_config(arg: str | None = None):
  config, dataset = image_base.conv_ae_config(arg, "beta_tcvae",
                                              variational=True)
  config.objective.beta = BETA.get(dataset, 1.0)
  return config
