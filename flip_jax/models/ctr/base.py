"""`CTRModel`: the interface every ID backbone implements (FLIP.md 3.5).

A backbone maps global ids [B, F] to a representation r [B, D_r]
(`encode`, used by FLIP pretraining) and to a logit without the output bias
(`logit` / `__call__`, used by baselines and finetuning):

    z = linear_logit + w . r          (w: Dense(D_r, 1), no bias, `head`)

Submodules are defined in `setup`, and linen creates a submodule's params
only when it is first called, so ``model.init(..., method=model.encode)``
creates the encoder params only (``embedding`` + interaction/DNN); the
``linear`` table and the ``head`` appear only through `logit`/`__call__`.
Subclasses define `setup_encoder`, `encode` and `rep_dim_of`, and may
override `rep_logit` when their logit is not ``w . r`` (FM, DeepFM).

Extra fields: a method may give ``cfg.num_extra_fields`` dense field
embeddings ``extra`` [B, F_x, e] (SRP4CTR's query outputs); `embed`
appends them to the looked-up fields, so every interaction sees F + F_x
fields. They have no linear (first-order) term. Without them (the
default, ``num_extra_fields`` 0) nothing changes.
"""
from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers
from flip_jax.models.ctr import embedding
from flip_jax.models.ctr.config import CTRConfig


def dnn(cfg) -> nn.Module:
  """The deepctr DNN tower of a backbone (hidden widths, act, BN from cfg)."""
  return layers.MLP(cfg.dnn_hidden, cfg.dnn_act, cfg.dropout, cfg.dnn_use_bn,
                    dtype=cfg.jnp_dtype)


class CTRModel(nn.Module):
  """Base class; see the module docstring.

  Attributes:
    cfg: the frozen backbone config.
  """
  cfg: CTRConfig
  # Whether the logit has the first-order (linear table) term.
  use_linear: ClassVar[bool] = True

  def setup(self):
    cfg = self.cfg
    self.embedding = embedding.FeatureEmbedding(
        cfg.num_features, cfg.embed_dim, dtype=cfg.jnp_dtype)
    if self.use_linear:
      self.linear = embedding.LinearTable(cfg.num_features)
    self.head = self.make_head()
    self.setup_encoder()

  # ----- to be provided by subclasses -----
  def setup_encoder(self) -> None:
    """Defines the interaction / DNN submodules."""

  def encode(self, ids: jax.Array, *, deterministic: bool = True,
             extra: jax.Array | None = None) -> jax.Array:
    """ids [B, F] (+ extra [B, F_x, e]) -> representation r [B, D_r]."""
    raise NotImplementedError

  @classmethod
  def rep_dim_of(cls, cfg: CTRConfig) -> int:
    """D_r for a config (static)."""
    raise NotImplementedError

  def make_head(self) -> nn.Module | None:
    """The logit head `w`; None for models with a fixed head (FM)."""
    return layers.TorchDense(1, use_bias=False, axes=("hidden", None),
                             dtype=self.cfg.jnp_dtype)

  def rep_logit(self, rep: jax.Array) -> jax.Array:
    """w . r  -> [B]."""
    return self.head(rep)[..., 0]

  # ----- shared -----
  @property
  def rep_dim(self) -> int:
    return self.rep_dim_of(self.cfg)

  def embed(self, ids: jax.Array, extra: jax.Array | None = None
            ) -> jax.Array:
    """Checked lookup: ids [B, F] (+ extra) -> [B, F (+ F_x), e]."""
    embedding.check_ids(ids, self.cfg.num_fields)
    emb = self.embedding(ids)
    want = (ids.shape[0], self.cfg.num_extra_fields, self.cfg.embed_dim)
    if extra is None and not self.cfg.num_extra_fields:
      return emb
    if extra is None or tuple(extra.shape) != want:
      raise ValueError(f"ctr extra fields: expected shape {want}, got "
                       f"{None if extra is None else tuple(extra.shape)}")
    return jnp.concatenate([emb, extra.astype(emb.dtype)], axis=1)

  def linear_logit(self, ids: jax.Array) -> jax.Array:
    """First-order logit [B] (zeros for models without a linear part)."""
    if not self.use_linear:
      return jnp.zeros(ids.shape[:1], jnp.float32)
    return self.linear(ids)

  def logit(self, ids: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """z = linear_logit + w . r, without the output bias -> [B]."""
    return self(ids, deterministic=deterministic)["ctr/logit"]

  def __call__(self, ids: jax.Array, *, deterministic: bool = True,
               extra: jax.Array | None = None) -> dict[str, jax.Array]:
    rep = self.encode(ids, deterministic=deterministic, extra=extra)
    z = self.linear_logit(ids) + self.rep_logit(rep).astype(jnp.float32)
    return {"ctr/rep": rep, "ctr/logit": z}
