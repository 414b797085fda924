"""nearid_jax."""
