"""flip_jax.data."""
