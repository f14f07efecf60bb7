"""flip_jax.train."""
