"""ID-based CTR backbones (FLIP.md 3, 7).

    from flip_jax.models import ctr
    cfg = ctr.CTRConfig(name="dcnv2", num_features=N, num_fields=F)
    model = ctr.build(cfg)            # or ctr.CTRClassifier(cfg)
    ctr.rep_dim(cfg)                  # 384 for F = 8, e = 32
"""
from flip_jax.models.ctr.base import CTRModel
from flip_jax.models.ctr.classifier import CTRClassifier
from flip_jax.models.ctr.config import CTRConfig
from flip_jax.models.ctr.registry import CTR_MODELS, build, model_class, rep_dim
from flip_jax.models.ctr.regularization import (L2_PRESETS, flat_params,
                                                l2_coefficients, l2_penalty,
                                                preset, unmatched_patterns)

__all__ = [
    "CTRModel", "CTRClassifier", "CTRConfig", "CTR_MODELS", "build",
    "model_class", "rep_dim", "L2_PRESETS", "flat_params", "l2_coefficients",
    "l2_penalty", "preset", "unmatched_patterns",
]
