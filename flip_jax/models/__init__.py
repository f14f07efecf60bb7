"""flip_jax.models."""
