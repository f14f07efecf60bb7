"""Other ID baselines of FLIP.md 7: DNN, WideDeep, PNN, xDeepFM, AFN.

Representations (the logit is always ``[linear +] w . r``):

* DNN:      r = DNN(x0); no linear part (a pure MLP).
* WideDeep: r = DNN(x0); logit = linear (wide) + w . r.
* PNN:      r = DNN([flatten(E) ; <e_i, e_j> for i < j]); no linear part
            (deepctr's inner-product PNN).
* xDeepFM:  r = [CIN(E) (sum(layers[:-1])/2 + layers[-1] with split-half) ;
            DNN(x0)]; the CIN and DNN heads of deepctr are one dense `w`.
* AFN:      r = DNN(flatten(LTL(E))) with the logarithmic transformation
            layer (ltl_hidden neurons, BatchNorm before/after when
            `cfg.afn_use_bn`; needs the mutable 'batch_stats' collection
            when training).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers
from flip_jax.models.ctr.base import CTRModel, dnn
from flip_jax.models.ctr.config import CTRConfig
from flip_jax.models.ctr.fm import pair_indices


class _DeepOnly(CTRModel):
  """Shared body: r = DNN(input features)."""

  def setup_encoder(self):
    cfg = self.cfg
    self.dnn = dnn(cfg)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cfg.dnn_hidden[-1]

  def features(self, emb: jax.Array) -> jax.Array:
    return emb.reshape(emb.shape[0], -1)

  def encode(self, ids, *, deterministic=True, extra=None):
    return self.dnn(self.features(self.embed(ids, extra)),
                    deterministic=deterministic)


class DNN(_DeepOnly):
  """Plain MLP on the concatenated embeddings."""
  use_linear = False


class WideDeep(_DeepOnly):
  """Wide (linear table) & Deep (MLP)."""


class PNN(_DeepOnly):
  """Inner-product PNN."""
  use_linear = False

  def features(self, emb):
    row, col = pair_indices(emb.shape[1])
    inner = (emb[:, row] * emb[:, col]).sum(axis=-1)          # [B, P]
    return jnp.concatenate([emb.reshape(emb.shape[0], -1), inner], axis=-1)


class CIN(nn.Module):
  """Compressed interaction network: [B, F, e] -> [B, featuremaps].

  Attributes:
    layer_sizes: feature maps per layer.
    split_half: feed half of each layer forward, the other half to the output.
    act: activation name.
  """
  layer_sizes: tuple[int, ...] = (256, 128)
  split_half: bool = True
  act: str = "relu"

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    fn = layers.activation(self.act)
    hidden, outputs = x0, []
    for i, size in enumerate(self.layer_sizes):
      z = jnp.einsum("bhd,bmd->bhmd", hidden, x0)
      z = z.reshape(z.shape[0], -1, z.shape[-1])              # [B, H*m, e]
      fan_in = z.shape[1]
      # A Conv1d with kernel 1 == a dense map over the channel axis.
      w = self.param(f"kernel_{i}", nn.with_logical_partitioning(
          layers.torch_uniform(fan_in), ("hidden_in", "hidden")),
                     (fan_in, size))
      b = self.param(f"bias_{i}", nn.with_logical_partitioning(
          layers.torch_uniform(fan_in), ("hidden",)), (size,))
      z = fn(jnp.einsum("bcd,cs->bsd", z, w.astype(z.dtype))
             + b.astype(z.dtype)[:, None])                    # [B, size, e]
      if self.split_half and i != len(self.layer_sizes) - 1:
        hidden, direct = z[:, :size // 2], z[:, size // 2:]
      else:
        hidden = direct = z
      outputs.append(direct)
    return jnp.concatenate(outputs, axis=1).sum(axis=-1)


def cin_dim(cfg: CTRConfig) -> int:
  if cfg.cin_split_half:
    return sum(cfg.cin_layers[:-1]) // 2 + cfg.cin_layers[-1]
  return sum(cfg.cin_layers)


class XDeepFM(CTRModel):
  """xDeepFM: linear + w . [CIN ; DNN]."""

  def setup_encoder(self):
    cfg = self.cfg
    self.cin = CIN(cfg.cin_layers, cfg.cin_split_half, cfg.cin_act)
    self.dnn = dnn(cfg)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cin_dim(cfg) + cfg.dnn_hidden[-1]

  def encode(self, ids, *, deterministic=True, extra=None):
    emb = self.embed(ids, extra)
    deep = self.dnn(emb.reshape(ids.shape[0], -1), deterministic=deterministic)
    return jnp.concatenate([self.cin(emb).astype(deep.dtype), deep], axis=-1)


class LogTransformLayer(nn.Module):
  """AFN's logarithmic transformation: [B, F, e] -> [B, e * hidden].

  Attributes:
    hidden: logarithmic neurons.
    use_bn: BatchNorm over the embedding channels before and after.
  """
  hidden: int = 256
  use_bn: bool = True

  @nn.compact
  def __call__(self, emb: jax.Array, *, deterministic: bool = True):
    f = emb.shape[1]
    x = jnp.log(jnp.clip(jnp.abs(emb), 1e-7, None)).transpose(0, 2, 1)
    bn = lambda name: nn.BatchNorm(
        use_running_average=deterministic, axis=1,
        momentum=layers.TORCH_BN_MOMENTUM, epsilon=layers.TORCH_BN_EPS,
        name=name)
    if self.use_bn:
      x = bn("bn_0")(x)                                       # [B, e, F]
    w = self.param("weights", nn.with_logical_partitioning(
        layers.normal(0.1), ("field", "hidden")), (f, self.hidden))
    b = self.param("biases", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ("hidden",)), (self.hidden,))
    x = jnp.exp(x @ w.astype(x.dtype) + b.astype(x.dtype))    # [B, e, H]
    if self.use_bn:
      x = bn("bn_1")(x)
    return x.reshape(x.shape[0], -1)


class AFN(_DeepOnly):
  """Adaptive factorisation network: linear + w . DNN(LTL(E))."""

  def setup_encoder(self):
    super().setup_encoder()
    self.ltl = LogTransformLayer(self.cfg.afn_ltl_hidden, self.cfg.afn_use_bn)

  def encode(self, ids, *, deterministic=True, extra=None):
    x = self.ltl(self.embed(ids, extra), deterministic=deterministic)
    return self.dnn(x, deterministic=deterministic)
