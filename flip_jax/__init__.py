"""flip_jax: FLIP (fine-grained alignment of ID-based CTR models and PLMs) in JAX."""

__version__ = "0.1.0"
