r"""Table 1 (PAPER.md §4): statistical ε between runs, by model family.

Rows: autoencoder, masked autoencoder and classifier on the synthetic
process (8 seeds each) and on procedural Shapes3D (conv AE of the InfoMEC
suite, ViT MAE, small CNN classifier; 4 seeds each), and a pair of model
sizes of one family (synthetic AE, widths 64 -> 256: runs of the small
model mapped onto runs of the large one). Columns: mean ε after the best
signed permutation / rigid / linear map / signed permutation after ICA,
and the ICA efficiency. A second table: the same columns at every layer
of the synthetic autoencoder. `nearid_jax.paper.table1` documents every
number.

Command:
  python -m experiments.reproduce \
      --config=experiments/configs/paper/table1.py --workdir=results/table1
  (`:smoke` for the CI size: 3 synthetic / 2 image seeds, tens of steps,
  16x16 images, tiny models.)
Hardware and runtime: full: the synthetic rows take minutes on a CPU; the
Shapes3D rows are GPU jobs, about 1.5 h on one H100 for the conv AE, ViT
MAE and CNN at 4 seeds (estimate, unmeasured; dominated by the AE's
~2 GFLOP per image x 128 x 200k steps x 4 seeds); `:smoke` about 2 min on
a 2-core CPU, mostly compilation.
The paper's numbers (pretrained pairs, mean ℓ2 / diameter; perm, rigid,
linear, ICA (efficiency)): Pythia-160M seeds 0.219 0.150 0.131 0.202
(25%); MAE timm -> original 0.197 0.109 0.036 0.145 (59%); CheXpert MAE
small -> base 0.218 0.104 0.048 0.175 (38%); ResNet-18 seeds (fc) 0.382
0.206 0.175 0.312 (40%). Expected direction here: perm >= ICA >= rigid >=
linear, efficiency between 0 and 1.
"""
import ml_collections

from experiments.configs import classifier
from experiments.configs import conv_ae
from experiments.configs import synthetic_ae
from experiments.configs import synthetic_classifier
from experiments.configs import synthetic_mae
from experiments.configs import vit_mae
from nearid_jax.models import conv_ae as conv_ae_model
from nearid_jax.models import vit

LAYERS = ("enc_0", "enc_1", "latent", "dec_0", "dec_1")


def _synthetic(module, smoke, widths=None):
  c = module.get_config("smoke" if smoke else None)
  if widths:
    c.model.encoder_widths = widths
    if "decoder_widths" in c.model:
      c.model.decoder_widths = widths
  if smoke:
    c.num_seeds, c.num_steps, c.log_every, c.checkpoint_every = 3, 100, 50, 100
  return c


def _images(c, smoke, seeds=4):
  c.num_seeds = seeds
  if smoke:
    c.num_seeds = 2
    c.data.image_size = 16
    c.data.eval_size = 256
  return c


def get_config(arg: str | None = None):
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.experiment = "table1"
  c.seed = 0
  models = {
      "synthetic_ae": _synthetic(synthetic_ae, smoke),
      "synthetic_ae_large": _synthetic(synthetic_ae, smoke, (256, 256)),
      "synthetic_mae": _synthetic(synthetic_mae, smoke),
      "synthetic_classifier": _synthetic(synthetic_classifier, smoke),
  }
  models["synthetic_ae"].eval.layers = LAYERS
  arg_img = "shapes3d,smoke" if smoke else "shapes3d"
  ae = _images(conv_ae.get_config(arg_img), smoke)
  mae = _images(vit_mae.get_config(arg_img + (",tiny" if smoke else "")),
                smoke)
  clf = _images(classifier.get_config("cnn," + arg_img), smoke)
  if smoke:
    ae.model = conv_ae_model.default_config("tiny", ae.model.latent_dim)
    mae.model = vit.default_config("tiny")
    clf.model.latent_dim = 16
  models.update(shapes3d_ae=ae, shapes3d_mae=mae, shapes3d_classifier=clf)
  c.models = ml_collections.ConfigDict(models)
  row = lambda label, dataset, model, source="": ml_collections.ConfigDict(
      dict(label=label, dataset=dataset, model=model, source=source,
           layer="latent"))
  c.rows = ml_collections.ConfigDict({
      "synthetic_ae": row("autoencoder", "synthetic", "synthetic_ae"),
      "synthetic_mae": row("masked autoencoder", "synthetic",
                           "synthetic_mae"),
      "synthetic_classifier": row("classifier", "synthetic",
                                  "synthetic_classifier"),
      "synthetic_ae_sizes": row("autoencoder small -> large", "synthetic",
                                "synthetic_ae_large", "synthetic_ae"),
      "shapes3d_ae": row("autoencoder", "shapes3d", "shapes3d_ae"),
      "shapes3d_mae": row("masked autoencoder (ViT)", "shapes3d",
                          "shapes3d_mae"),
      "shapes3d_classifier": row("classifier (CNN)", "shapes3d",
                                 "shapes3d_classifier"),
  })
  c.layers_model = "synthetic_ae"
  c.layers = LAYERS
  return c
