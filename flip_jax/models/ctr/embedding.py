"""Global feature tables: the (N, e) embedding and the (N, 1) linear table.

FLIP uses one id space shared by all fields (FLIP.md 2.3): a sample's ids are
already global, so a lookup is a single gather.  Both tables are initialised
Normal(0, 1e-4) (deepctr-torch's ``init_std``) and carry the logical axis
names ("feature_vocab", ...) so a rules table can row-shard them over a mesh;
`jnp.take` on a row-sharded table returns the same values as unsharded.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models import layers

EMBED_INIT_STD = 1e-4


def check_ids(ids: jax.Array, num_fields: int) -> None:
  """Trace-time shape/dtype check of an id batch.

  Args:
    ids: candidate id array.
    num_fields: expected F.

  Raises:
    ValueError: not [B, F] or not integer.
  """
  if ids.ndim != 2 or ids.shape[1] != num_fields:
    raise ValueError(f"ctr ids: expected shape [batch, {num_fields}], got "
                     f"{tuple(ids.shape)}")
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"ctr ids: expected an integer dtype, got {ids.dtype}")


class FeatureEmbedding(nn.Module):
  """E[ids]: one (N, e) table indexed by global feature id.

  Attributes:
    num_features: N.
    embed_dim: e.
    init_std: std of the Normal init.
    dtype: dtype of the returned embeddings.
  """
  num_features: int
  embed_dim: int
  init_std: float = EMBED_INIT_STD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    """Returns the field embeddings [B, F, e]."""
    table = self.param(
        "table",
        nn.with_logical_partitioning(layers.normal(self.init_std),
                                     ("feature_vocab", "feature_embed")),
        (self.num_features, self.embed_dim), jnp.float32)
    return jnp.take(table, ids, axis=0).astype(self.dtype)


class LinearTable(nn.Module):
  """The first-order part: linear_logit = sum_f W_lin[ids[f]].

  Attributes:
    num_features: N.
    init_std: std of the Normal init.
  """
  num_features: int
  init_std: float = EMBED_INIT_STD

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    """Returns the linear logit [B] (float32)."""
    table = self.param(
        "table",
        nn.with_logical_partitioning(layers.normal(self.init_std),
                                     ("feature_vocab", None)),
        (self.num_features, 1), jnp.float32)
    return jnp.take(table, ids, axis=0)[..., 0].sum(axis=-1)
