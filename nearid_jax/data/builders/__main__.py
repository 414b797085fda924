"""Command line: prepare a manual-download dataset or materialise a
procedural one as array_record (no TensorFlow needed).

  python -m nearid_jax.data.builders mpi3d --config=complex \\
      --manual_dir=~/mpi3d --data_dir=~/tensorflow_datasets
  python -m nearid_jax.data.builders procedural dsprites \\
      --data_dir=~/tensorflow_datasets [--num_examples=100000 --seed=0]
"""
from __future__ import annotations

import argparse
import os

import jax


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m nearid_jax.data.builders")
  p.add_argument("dataset", help="mpi3d, falcor3d, isaac3d or procedural")
  p.add_argument("procedural_name", nargs="?",
                 help="with `procedural`: a procedural dataset name")
  p.add_argument("--config", default=None)
  p.add_argument("--manual_dir", default=None)
  p.add_argument("--data_dir", default="~/tensorflow_datasets")
  p.add_argument("--num_examples", type=int, default=None)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  data_dir = os.path.expanduser(a.data_dir)
  if a.dataset == "procedural":
    from nearid_jax.data import registry  # pylint: disable=g-import-not-at-top
    from nearid_jax.data.builders import procedural  # pylint: disable=g-import-not-at-top
    ds = registry.procedural(a.procedural_name)
    b = procedural.materialize(ds, data_dir, num_examples=a.num_examples,
                               key=jax.random.key(a.seed))
  else:
    from nearid_jax.data.builders import manual  # pylint: disable=g-import-not-at-top
    if not a.manual_dir:
      p.error("--manual_dir is required for " + a.dataset)
    b = manual.prepare(a.dataset, a.manual_dir, data_dir, a.config)
  print(f"prepared {b.name} in {b.data_dir}")


if __name__ == "__main__":
  main()
