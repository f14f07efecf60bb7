"""flip_jax.models.plm."""
