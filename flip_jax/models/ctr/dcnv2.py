"""Cross networks and the DCN / DCNv2 backbones (FLIP.md 3.2, 7).

* `CrossNetMix`: DCN-Mix (DCNv2 low-rank mixture of experts), FLIP's default.
  Per layer l: U_l, V_l (E, D, r), C_l (E, r, r), bias_l (D,) = 0.  The E
  gates, each Linear(D, 1) without bias, are one (D, E) kernel *shared by all
  layers*, as in the official ``CrossNetMix`` (justarter/FLIP,
  ``layers/interaction.py``).  U, V, C use PyTorch's Xavier-normal fans of a
  3-D slice: std sqrt(2/((D+E) r)) and sqrt(2/((r+E) r)).
* `CrossNetV2`: the full-rank DCNv2 matrix cross net (ClickPrompt's backbone):
  x_{l+1} = x0 * (W_l x_l + b_l) + x_l, W_l (D, D) Xavier-normal.
* `CrossNet`: DCN's vector cross net: x_{l+1} = x0 (x_l . w_l) + b_l + x_l.

Both models return r = [cross_out ; DNN(x0)] of size D + dnn_hidden[-1].
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers
from flip_jax.models.ctr.base import CTRModel, dnn
from flip_jax.models.ctr.config import CTRConfig


def mix_stds(d: int, num_experts: int, rank: int) -> tuple[float, float]:
  """(std of U and V, std of C) of `CrossNetMix` (torch Xavier-normal fans)."""
  return (math.sqrt(2.0 / ((d + num_experts) * rank)),
          math.sqrt(2.0 / ((rank + num_experts) * rank)))


def _param(module, name, std, shape, axes):
  init = layers.normal(std) if std else nn.initializers.zeros_init()
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      jnp.float32)


class CrossNetMix(nn.Module):
  """DCN-Mix cross network: x0 [B, D] -> x_L [B, D]."""
  num_layers: int = 2
  num_experts: int = 4
  rank: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    d, e, r = x0.shape[-1], self.num_experts, self.rank
    std_uv, std_c = mix_stds(d, e, r)
    gates = self.param("gates", nn.with_logical_partitioning(
        layers.torch_uniform(d), ("hidden", "expert")), (d, e), jnp.float32)
    gates = gates.astype(self.dtype)
    x0 = x0.astype(self.dtype)
    x = x0
    for l in range(self.num_layers):
      edr = ("expert", "hidden", "rank")
      u = _param(self, f"U_{l}", std_uv, (e, d, r), edr)
      v = _param(self, f"V_{l}", std_uv, (e, d, r), edr)
      c = _param(self, f"C_{l}", std_c, (e, r, r),
                 ("expert", "rank_in", "rank"))
      b = _param(self, f"bias_{l}", 0.0, (d,), ("hidden",))
      u, v, c, b = (t.astype(self.dtype) for t in (u, v, c, b))
      p = jax.nn.softmax(x @ gates, axis=-1)                  # [B, E]
      # V_l^T x for all experts as one matmul: [B, D] @ [D, E*r].
      h = x @ v.transpose(1, 0, 2).reshape(d, e * r)
      h = jnp.tanh(h.reshape(-1, e, r))                       # [B, E, r]
      h = jnp.tanh(jnp.einsum("eij,bej->bei", c, h))         # [B, E, r]
      # sum_e p_e x0 * (U_e h_e + b) == x0 * (sum_e U_e (p_e h_e) + b), the
      # sum being one matmul [B, E*r] @ [E*r, D] (softmax weights sum to 1).
      ph = (h * p[:, :, None]).reshape(-1, e * r)
      x = x0 * (ph @ u.transpose(0, 2, 1).reshape(e * r, d) + b) + x
    return x


class CrossNetV2(nn.Module):
  """Full-rank DCNv2 cross network: x0 [B, D] -> x_L [B, D]."""
  num_layers: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    d = x0.shape[-1]
    x0 = x0.astype(self.dtype)
    x = x0
    for l in range(self.num_layers):
      # Stored (in, out) = W_l^T; Xavier-normal of a square matrix is symmetric.
      w = _param(self, f"kernel_{l}", math.sqrt(1.0 / d), (d, d),
                 ("hidden_in", "hidden")).astype(self.dtype)
      b = _param(self, f"bias_{l}", 0.0, (d,), ("hidden",)).astype(self.dtype)
      x = x0 * (x @ w + b) + x
    return x


class CrossNet(nn.Module):
  """DCN vector cross network: x0 [B, D] -> x_L [B, D]."""
  num_layers: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    d = x0.shape[-1]
    x0 = x0.astype(self.dtype)
    x = x0
    for l in range(self.num_layers):
      # torch Xavier-normal on a (D, 1) slice.
      w = _param(self, f"kernel_{l}", math.sqrt(2.0 / (d + 1)), (d,),
                 ("hidden",)).astype(self.dtype)
      b = _param(self, f"bias_{l}", 0.0, (d,), ("hidden",)).astype(self.dtype)
      x = x0 * (x @ w)[:, None] + b + x
    return x


class DCNv2(CTRModel):
  """DCNv2: cross network (`cfg.cross_type` 'mix' or 'full') + parallel DNN."""

  def setup_encoder(self):
    cfg = self.cfg
    if cfg.cross_type == "mix":
      self.cross = CrossNetMix(cfg.cross_layers, cfg.num_experts, cfg.low_rank,
                               dtype=cfg.jnp_dtype)
    else:
      self.cross = CrossNetV2(cfg.cross_layers, dtype=cfg.jnp_dtype)
    self.dnn = dnn(cfg)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cfg.input_dim + cfg.dnn_hidden[-1]

  def encode(self, ids, *, deterministic=True, extra=None):
    x0 = self.embed(ids, extra).reshape(ids.shape[0], -1)            # [B, D]
    deep = self.dnn(x0, deterministic=deterministic)
    return jnp.concatenate([self.cross(x0), deep], axis=-1)


class DCN(DCNv2):
  """DCN (v1): vector cross network + parallel DNN."""

  def setup_encoder(self):
    cfg = self.cfg
    self.cross = CrossNet(cfg.cross_layers, dtype=cfg.jnp_dtype)
    self.dnn = dnn(cfg)


class DCNv2Full(DCNv2):
  """DCNv2 with the full-rank `CrossNetV2` whatever `cfg.cross_type` says."""

  def setup_encoder(self):
    cfg = self.cfg
    self.cross = CrossNetV2(cfg.cross_layers, dtype=cfg.jnp_dtype)
    self.dnn = dnn(cfg)
