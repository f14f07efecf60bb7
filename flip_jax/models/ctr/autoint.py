"""AutoInt backbone (FLIP.md 3.4).

deepctr-torch layout: each interacting layer has Q, K, V and residual
matrices of shape (e, e), initialised Normal(0, 0.05); heads split the last
axis (width e / heads); scores are *not* scaled by 1/sqrt(d) (unless
`cfg.att_scaling`); softmax over keys; residual on; ReLU on the output.  A
DNN (300, 300, 128) runs on x0 in parallel:

    r = [flatten(att_out) (F*e) ; DNN(x0) (128)]      D_r = F*e + 128
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers
from flip_jax.models.ctr.base import CTRModel, dnn
from flip_jax.models.ctr.config import CTRConfig


class InteractingLayer(nn.Module):
  """Multi-head self-attention over fields: [B, F, e] -> [B, F, e].

  Attributes:
    heads: number of heads (must divide e).
    use_res: add x @ W_res before the ReLU.
    scaling: divide scores by sqrt(e / heads).
    init_std: std of the Normal init of every matrix.
  """
  heads: int = 2
  use_res: bool = True
  scaling: bool = False
  init_std: float = 0.05

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, f, e = x.shape
    if e % self.heads:
      raise ValueError(
          f"InteractingLayer: heads={self.heads} must divide e={e}")
    d = e // self.heads

    def mat(name):
      return self.param(name, nn.with_logical_partitioning(
          layers.normal(self.init_std), ("feature_embed", "heads")),
                        (e, e), jnp.float32).astype(x.dtype)

    def split(t):                                            # [B, H, F, d]
      return t.reshape(b, f, self.heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(x @ mat(n)) for n in ("W_query", "W_key", "W_value"))
    scores = jnp.einsum("bhid,bhjd->bhij", q, k)
    if self.scaling:
      scores = scores / jnp.sqrt(jnp.asarray(d, scores.dtype))
    att = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhij,bhjd->bhid", att, v)
    out = out.transpose(0, 2, 1, 3).reshape(b, f, e)
    if self.use_res:
      out = out + x @ mat("W_res")
    return nn.relu(out)


class AutoInt(CTRModel):
  """AutoInt+: interacting layers and a parallel DNN."""

  def setup_encoder(self):
    cfg = self.cfg
    self.att = [InteractingLayer(cfg.att_heads, cfg.att_res, cfg.att_scaling,
                                 cfg.att_init_std, name=f"att_{i}")
                for i in range(cfg.att_layers)]
    self.dnn = dnn(cfg)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cfg.input_dim + cfg.dnn_hidden[-1]

  def encode(self, ids, *, deterministic=True, extra=None):
    emb = self.embed(ids, extra)                              # [B, F, e]
    x = emb
    for layer in self.att:
      x = layer(x)
    deep = self.dnn(emb.reshape(ids.shape[0], -1), deterministic=deterministic)
    return jnp.concatenate([x.reshape(ids.shape[0], -1), deep], axis=-1)
