"""Our TFDS builders (registered on import): MPI3D, Falcor3D, Isaac3D from a
manual download, and `materialize` for the procedural sets. All write
array_record without TensorFlow; see `base` for how.

Prepare a dataset (where the files are):
    python -m nearid_jax.data.builders mpi3d --config=complex \\
        --manual_dir=DIR --data_dir=~/tensorflow_datasets
    python -m nearid_jax.data.builders procedural shapes3d \\
        --data_dir=~/tensorflow_datasets [--num_examples=N --seed=0]
"""
from nearid_jax.data.builders.base import FactorBuilder
from nearid_jax.data.builders.falcor3d import Falcor3d
from nearid_jax.data.builders.isaac3d import Isaac3d
from nearid_jax.data.builders.mpi3d import Mpi3d
from nearid_jax.data.builders.mpi3d import Mpi3dConfig
from nearid_jax.data.builders.manual import prepare
from nearid_jax.data.builders.procedural import materialize

__all__ = ["FactorBuilder", "Falcor3d", "Isaac3d", "Mpi3d", "Mpi3dConfig",
           "materialize", "prepare"]
