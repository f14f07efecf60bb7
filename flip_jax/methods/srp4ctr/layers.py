"""Transformer pieces of SRP4CTR (spec B2-B4): post-LN layers that expose
their key/value projections, the uni cross-attention layer and the querying
transformer.

Param names inside a layer (shared by the torch twin, ``torch_model.py``):

  query, key, value   d -> (heads, d_h), kernels [d, H, d_h], bias [H, d_h]
  out                 (heads, d_h) -> d, kernel [H, d_h, d], bias [d]
  ln_attn             LayerNorm after the attention residual
  ffn_in, ffn_out     Dense d -> mlp -> d
  ln_ffn              LayerNorm after the feed-forward residual

A `CrossLayer` has the same names without ``key`` / ``value``: it attends
with K/V it is given (the pretrained encoder's, B3), so a pretrained
``EncoderLayer``'s subtree minus key/value initialises it. Scores, softmax
and LayerNorm statistics run in float32; ``dtype`` is the matmul dtype.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers as base_layers

LN_EPS = base_layers.TORCH_LN_EPS
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Sizes of one family of transformer layers (FG-BERT, queries).

  Attributes:
    hidden: d.
    heads: attention heads (divide d).
    mlp: feed-forward width.
    dropout: dropout on embeddings, sublayer outputs.
    attention_dropout: dropout on attention probabilities.
    act: feed-forward activation ('gelu' exact, 'relu').
    init_std: Normal std of every kernel and embedding.
    dtype: matmul dtype name.
  """
  hidden: int
  heads: int
  mlp: int
  dropout: float = 0.1
  attention_dropout: float = 0.1
  act: str = "gelu"
  init_std: float = 0.02
  dtype: str = "float32"

  def __post_init__(self):
    if self.hidden % self.heads:
      raise ValueError(f"heads={self.heads} must divide hidden={self.hidden}")
    if self.act not in ("gelu", "relu"):
      raise ValueError(f"act {self.act!r}: gelu|relu")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype {self.dtype!r}: {sorted(DTYPES)}")

  @property
  def head_dim(self) -> int:
    return self.hidden // self.heads

  @property
  def jnp_dtype(self) -> Any:
    return DTYPES[self.dtype]


def activation(name: str):
  return (lambda x: jax.nn.gelu(x, approximate=False)) if name == "gelu" \
      else jax.nn.relu


def _kernel(std, names):
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def dense(features: int, cfg: BlockConfig, axes, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=cfg.jnp_dtype, name=name,
                  kernel_init=_kernel(cfg.init_std, axes),
                  bias_init=_zeros((axes[1],)))


def layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=LN_EPS, dtype=jnp.float32, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                              ("embed",)),
      bias_init=_zeros(("embed",)))


class HeadsDense(nn.Module):
  """x [..., d] -> [..., H, d_h] (``to_heads``) or back (``from_heads``).

  Kernels keep their multi-axis shape, so each axis has its logical name.
  """
  cfg: BlockConfig
  to_heads: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    hd = (cfg.heads, cfg.head_dim)
    if self.to_heads:
      shape, names, out = (cfg.hidden,) + hd, ("embed", "heads", "kv"), hd
      eq, bias_names = "...d,dhk->...hk", ("heads", "kv")
    else:
      shape, names, out = hd + (cfg.hidden,), ("heads", "kv", "embed"), (
          cfg.hidden,)
      eq, bias_names = "...hk,hkd->...d", ("embed",)
    kernel = self.param("kernel", _kernel(cfg.init_std, names), shape,
                        jnp.float32)
    bias = self.param("bias", _zeros(bias_names), out, jnp.float32)
    dt = cfg.jnp_dtype
    return jnp.einsum(eq, x.astype(dt), kernel.astype(dt)) + bias.astype(dt)


def _heads(cfg: BlockConfig, name: str) -> HeadsDense:
  return HeadsDense(cfg, True, name=name)


def attend(q, k, v, mask, *, drop=None, deterministic: bool = True):
  """Masked softmax attention.

  Args:
    q: [..., Q, H, d_h]; k, v: [..., K, H, d_h] (leading dims broadcast).
    mask: [..., K] 1 = a real key. A query whose keys are all padding
      (an empty history) gets a zero output instead of an average of pads.
    drop, deterministic: an ``nn.Dropout`` on the probabilities (or None).

  Returns:
    [..., Q, H, d_h].
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  scores = jnp.einsum("...qhd,...khd->...hqk", q, k).astype(jnp.float32)
  keep = (mask > 0)[..., None, None, :]                    # [..., 1, 1, K]
  scores = jnp.where(keep, scores * scale, -1e9)
  probs = jax.nn.softmax(scores, axis=-1) * keep
  if drop is not None:
    probs = drop(probs, deterministic=deterministic)
  return jnp.einsum("...hqk,...khd->...qhd", probs.astype(v.dtype), v)


class CrossLayer(nn.Module):
  """Attention to given K/V, then the feed-forward sublayer (post-LN).

  x = LN_attn(x + out(Attn(x W_Q, K, V))); x = LN_ffn(x + FFN(x)).
  """
  cfg: BlockConfig

  def setup(self):
    cfg = self.cfg
    self.query = _heads(cfg, "query")
    self.out = HeadsDense(cfg, False, name="out")
    self.ln_attn = layer_norm("ln_attn")
    self.ffn_in = dense(cfg.mlp, cfg, ("embed", "mlp"), "ffn_in")
    self.ffn_out = dense(cfg.hidden, cfg, ("mlp", "embed"), "ffn_out")
    self.ln_ffn = layer_norm("ln_ffn")
    self.drop = nn.Dropout(cfg.dropout)
    self.attn_drop = nn.Dropout(cfg.attention_dropout)

  def __call__(self, x, k, v, mask, *, deterministic: bool = True):
    """x [..., Q, d] attends to k, v [..., K, H, d_h] (mask [..., K])."""
    cfg = self.cfg
    a = attend(self.query(x), k, v, mask, drop=self.attn_drop,
               deterministic=deterministic)
    h = self.drop(self.out(a), deterministic=deterministic)
    x = self.ln_attn((x + h).astype(jnp.float32))
    h = activation(cfg.act)(self.ffn_in(x))
    h = self.drop(self.ffn_out(h), deterministic=deterministic)
    return self.ln_ffn((x + h).astype(jnp.float32))


class EncoderLayer(CrossLayer):
  """A bidirectional self-attention layer whose K/V can be read out."""

  def setup(self):
    super().setup()
    self.key = _heads(self.cfg, "key")
    self.value = _heads(self.cfg, "value")

  def kv(self, states):
    """(K, V) [..., K, H, d_h] of ``states`` [..., K, d]."""
    return self.key(states), self.value(states)

  def encode(self, x, mask, *, deterministic: bool = True):
    """Self-attention layer: (new x, (K, V) of the input x)."""
    k, v = self.kv(x)
    return self(x, k, v, mask, deterministic=deterministic), (k, v)


class QueryTransformer(nn.Module):
  """N learnable queries cross-attending to the encoder outputs (B4).

  Each layer is an `EncoderLayer` used in cross mode: its own K/V of the
  behaviour states, the queries as Q. Target independent, so it runs once
  per user.
  """
  cfg: BlockConfig
  num_queries: int
  num_layers: int

  @nn.compact
  def __call__(self, states, mask, *, deterministic: bool = True):
    """states [U, L, d], mask [U, L] -> [U, N, d]."""
    q = self.param("queries", _kernel(self.cfg.init_std, (None, "embed")),
                   (self.num_queries, self.cfg.hidden), jnp.float32)
    x = jnp.broadcast_to(q, states.shape[:-2] + q.shape)
    for l in range(self.num_layers):
      layer = EncoderLayer(self.cfg, name=f"layer_{l}")
      k, v = layer.kv(states)
      x = layer(x, k, v, mask, deterministic=deterministic)
    return x
