r"""ε between two or more embedding files of the same inputs (no factors).

    python -m experiments.compare a.npy b.npy --out=results/cmp
    python -m experiments.compare small.parquet base.parquet \
        --id_column=well_id --dims=pca --out=results/cmp
    python -m experiments.compare runs.npz:seed0 runs.npz:seed1

Prints compare.md; with --out also writes compare.json, compare.md and
compare_heatmap.png. See `nearid_jax.compare`.
"""
from absl import app
from absl import flags

from nearid_jax import align
from nearid_jax import cli
from nearid_jax import compare
from nearid_jax import compile_cache
from nearid_jax import distributed

_OUT = flags.DEFINE_string("out", None, "Output directory (optional).")
_KEY = flags.DEFINE_string("key", "embeddings",
                           ".npz array to read (or FILE.npz:ARRAY).")
_ID = flags.DEFINE_string("id_column", "id", "Id column of .csv/.parquet "
                          "files (and id array of .npz) to join rows on.")
_JOIN = flags.DEFINE_enum("join", "exact", compare.JOINS,
                          "exact: the files must hold the same ids; inner: "
                          "compare the ids all files share.")
_DIMS = flags.DEFINE_enum("dims", "pad", align.DIMS, "Different widths: "
                          "zero-pad the smaller, or PCA-reduce the larger.")
_KINDS = flags.DEFINE_list("kinds", list(compare.KINDS), "Map classes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the row split and ICA.")
_FIT = flags.DEFINE_float("fit_fraction", 0.5, "Share of rows maps are "
                          "fitted on; the rest evaluate them.")
_DIAM = flags.DEFINE_enum("diameter", "max", align.DIAMETERS,
                          "Diameter that ε divides by.")


def main(argv):
  files = argv[1:]
  if len(files) < 2:
    raise app.UsageError("give at least two embedding files.")
  compile_cache.enable()
  # Bad input ends in one `error:` line (cli.run_main).
  c = compare.run(files, _OUT.value, key_name=_KEY.value,
                  id_column=_ID.value, how=_JOIN.value, kinds=_KINDS.value,
                  dims=_DIMS.value, seed=_SEED.value,
                  fit_fraction=_FIT.value, diameter=_DIAM.value)
  if distributed.is_primary():
    print(compare.to_markdown(c), end="")


if __name__ == "__main__":
  cli.run_main(main)
