"""flip_jax.models.ctr."""
