"""The paper's experiments, one module each (run through `nearid_jax.reproduce`)."""
