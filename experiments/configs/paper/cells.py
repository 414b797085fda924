r"""The paper's cell experiment: Base / PCA / PCA+ICA / PCA+Rand batch effects.

Command (simulator: trains the 5-channel ViT MAE, then analyses its wells):
  python -m experiments.reproduce --config=experiments/configs/paper/cells.py \
      --workdir=results/paper_cells
On a real embedding table (RxRx3-core layout, no training):
  python -m experiments.reproduce --config=experiments/configs/paper/cells.py \
      --workdir=results/paper_cells_rxrx3 \
      --config.embeddings=OpenPhenom_rxrx3_core_embeddings.parquet \
      --config.metadata=metadata_rxrx3_core.csv
`:smoke` gives CI sizes (ViT "tiny" on 16x16 crops, 2 seeds, 20 steps, 384
wells).

Hardware and runtime: the full simulator run trains ViT-S MAEs (4 seeds x
100k steps; about 2 h on one H100, an estimate, see vit_mae.py) and analyses
10,000 wells in minutes; `:smoke` takes about 1.5 CPU-minutes, mostly
compiling the MAE step (4-7 min wall on a shared, contended 2-core CPU). The
RxRx3-core table (222,601 wells x 384, ~736 genes) is a GPU job: one L1
logistic fit per gene and held-out experiment.
Expected result: the paper's direction is PCA+ICA > PCA ≈ PCA+Rand > Base
in held-out-batch gene AUROC (EIF3H: 0.749 / 0.724 / 0.725 / 0.682), with
the highest Hoyer sparsity and signal concentration for PCA+ICA.
results.md says whether a run shows it; the smoke run is far too short to
(README, "Reproducing the paper").
"""
import ml_collections

from experiments.configs import vit_mae


def get_config(arg: str | None = None):
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or none.")
  c = ml_collections.ConfigDict()
  c.experiment = "cells"
  c.seed = 0                      # ICA starts, random rotations, CV folds
  # A real table instead of the simulator (both paths set: the table).
  c.embeddings = ""
  c.metadata = ""
  # Simulator: the MAE trained on the Cell Painting simulator.
  c.train = vit_mae.get_config("cells,tiny,smoke" if smoke else "cells")
  c.train.eval.layers = ("latent", "patch_mean")
  c.layer = "patch_mean"          # mean patch token: the well embedding
  if smoke:
    c.train.num_steps = 20
    c.train.log_every = 20        # one chunk: one compile
    c.train.checkpoint_every = 20
    c.train.data.image_size = 16  # 64-px crops pooled 4x: 16 tokens
    c.train.data.eval_size = 384  # wells analysed
  # Which wells are what (RxRx3-core columns; the simulator writes the same).
  c.class_column = "gene"
  c.control_column = "well_type_label"
  c.control_values = ("control", "EMPTY_control", "negative_control")
  c.perturbation_types = ()       # e.g. ("CRISPR",); () keeps every type
  c.batch_columns = ("experiment_name",)  # ("experiment_name", "plate"): plates
  # The analysis (nearid_jax.batch_effects.analyse).
  c.fit_on = "control"            # or "all"
  c.n_components = 0              # PCA components; 0: all
  c.negatives = "control"         # knock-out vs controls; or "rest"
  c.l1 = 0.01
  c.num_iters = 300
  c.batch_folds = 5
  c.top_fraction = 0.25
  return c
