"""Factorisation-machine family: FM, DeepFM and AFM (FLIP.md 3.3, 7).

Their logits are not ``linear + w . r`` with a free dense `w` by
construction, so each defines r and the head so that the logit is exactly
the published model (documented per class):

* FM:     r = FM bi-interaction vector 1/2[(sum_f e_f)^2 - sum_f e_f^2]
          (size e); logit = linear + sum(r).  The head is fixed (all ones),
          so FM has no ``head`` params.
* DeepFM: r = [FM (1) ; DNN(x0) (128)], D_r = 129 (as ``RecEncoder_DeepFM``,
          except that the linear logit is *not* folded into r[0], so that
          `encode` never touches the linear table); logit = linear + r[0] +
          w . r[1:], with `head` = Linear(128, 1) no bias.
* AFM:    r = attention-pooled pairwise products (size e); logit = linear +
          w . r, where `head` is AFM's ``projection_p`` (Xavier-normal).
"""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flip_jax.models import layers
from flip_jax.models.ctr.base import CTRModel, dnn
from flip_jax.models.ctr.config import CTRConfig


def fm_vector(emb: jax.Array) -> jax.Array:
  """[B, F, e] -> 1/2[(sum_f e_f)^2 - sum_f e_f^2]  [B, e]."""
  s = emb.sum(axis=1)
  return 0.5 * (s * s - (emb * emb).sum(axis=1))


def pair_indices(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
  """(row, col) of all field pairs i < j, in itertools order."""
  pairs = list(itertools.combinations(range(num_fields), 2))
  if not pairs:
    raise ValueError(
        f"pairwise interactions need >= 2 fields, got {num_fields}")
  row, col = zip(*pairs)
  return np.asarray(row), np.asarray(col)


class FM(CTRModel):
  """Factorisation machine: linear + pairwise term."""

  def make_head(self):
    return None

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cfg.embed_dim

  def encode(self, ids, *, deterministic=True, extra=None):
    return fm_vector(self.embed(ids, extra))

  def rep_logit(self, rep):
    return rep.sum(axis=-1)


class DeepFM(CTRModel):
  """DeepFM: linear + FM + w . DNN(x0)."""

  def setup_encoder(self):
    cfg = self.cfg
    self.dnn = dnn(cfg)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return 1 + cfg.dnn_hidden[-1]

  def encode(self, ids, *, deterministic=True, extra=None):
    emb = self.embed(ids, extra)                              # [B, F, e]
    fm = fm_vector(emb).sum(axis=-1, keepdims=True)           # [B, 1]
    deep = self.dnn(emb.reshape(ids.shape[0], -1), deterministic=deterministic)
    return jnp.concatenate([fm.astype(deep.dtype), deep], axis=-1)

  def rep_logit(self, rep):
    return rep[:, 0] + self.head(rep[:, 1:])[..., 0]


class AFMAttention(nn.Module):
  """AFM attention pooling over pairwise products.

  Attributes:
    factor: attention width A.
    dropout: dropout on the pooled vector.
  """
  factor: int = 8
  dropout: float = 0.0

  @nn.compact
  def __call__(self, emb: jax.Array, *, deterministic: bool = True):
    f, e = emb.shape[1], emb.shape[2]
    row, col = pair_indices(f)
    bi = emb[:, row] * emb[:, col]                            # [B, P, e]
    xavier = lambda a, b: layers.normal(math.sqrt(2.0 / (a + b)))
    w = self.param("W", nn.with_logical_partitioning(
        xavier(e, self.factor), ("feature_embed", "hidden")), (e, self.factor))
    b = self.param("b", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ("hidden",)), (self.factor,))
    h = self.param("h", nn.with_logical_partitioning(
        xavier(self.factor, 1), ("hidden", None)), (self.factor, 1))
    temp = nn.relu(bi @ w.astype(bi.dtype) + b.astype(bi.dtype))  # [B, P, A]
    score = jax.nn.softmax(temp @ h.astype(bi.dtype), axis=1)    # [B, P, 1]
    out = (score * bi).sum(axis=1)                                # [B, e]
    if self.dropout > 0:
      out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
    return out


class AFM(CTRModel):
  """Attentional FM: linear + p . attention_pool(pairwise products)."""

  def setup_encoder(self):
    self.attention = AFMAttention(self.cfg.afm_attention_factor,
                                  self.cfg.dropout)

  def make_head(self):
    e = self.cfg.embed_dim
    xavier = layers.normal(math.sqrt(2.0 / (e + 1)))
    return layers.TorchDense(1, use_bias=False, axes=("hidden", None),
                             kernel_init=xavier,
                             dtype=self.cfg.jnp_dtype)

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    return cfg.embed_dim

  def encode(self, ids, *, deterministic=True, extra=None):
    return self.attention(self.embed(ids, extra), deterministic=deterministic)
