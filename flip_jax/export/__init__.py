"""flip_jax.export."""
