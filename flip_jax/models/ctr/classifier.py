"""`CTRClassifier`: backbone + scalar output bias, for from-scratch training.

The backbone is the submodule ``ctr`` (param paths ``ctr/...``, the layout
FLIP finetuning reuses) and the bias is ``out_bias`` (init 0), deepctr's
PredictionLayer: p = sigmoid(z_ID + b_out).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models.ctr import registry
from flip_jax.models.ctr.config import CTRConfig


class CTRClassifier(nn.Module):
  """Returns {'ctr/rep', 'ctr/logit', 'logit'} with logit = ctr/logit + b."""
  cfg: CTRConfig

  def setup(self):
    self.ctr = registry.build(self.cfg)
    self.out_bias = self.param("out_bias", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ()), (), jnp.float32)

  def __call__(self, ids: jax.Array, *,
               deterministic: bool = True) -> dict[str, jax.Array]:
    out = dict(self.ctr(ids, deterministic=deterministic))
    out["logit"] = out["ctr/logit"] + self.out_bias
    return out
