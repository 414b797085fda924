from nearid_jax.data import cells
from nearid_jax.data import embeddings
from nearid_jax.data import errors
from nearid_jax.data import ground_truth
from nearid_jax.data import procedural
from nearid_jax.data import registry
from nearid_jax.data import tfds_sources
