"""Masked-LM heads with a decoder tied to the word embeddings.

`MLMHead` is the shared BERT/RoBERTa head: dense H->H, activation, LayerNorm,
then logits = h @ E^T + bias, where E is the encoder's [V, H] word table. The
table is an argument rather than a parameter of the head, so tying holds by
construction (one array, gradients from both uses) and the head can sit next
to the encoder in any bigger model:

  logits = MLMHead(cfg, name="mlm_head")(
      hidden, self.plm.word_embedding_matrix())

HF names: BERT `cls.predictions.transform.{dense,LayerNorm}` +
`cls.predictions.bias`; RoBERTa `lm_head.{dense,layer_norm}` + `lm_head.bias`.
Ours are `dense`, `LayerNorm` and `bias` for both (models/plm/hf_names.py).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models.plm import bert
from flip_jax.models.plm import layers as plm_layers
from flip_jax.models.plm.config import PLMConfig

Dtype = Any


class MLMHead(nn.Module):
  """Transform + tied decoder of a masked LM.

  Attributes:
    config: the encoder's config (hidden size, vocab, activation, eps).
    dtype: compute dtype; logits are returned in float32.
    param_dtype: parameter storage dtype.
  """
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, word_embedding_matrix: jax.Array
               ) -> jax.Array:
    """Maps token states to vocabulary logits.

    Args:
      hidden: [..., H] token states (all positions or gathered ones).
      word_embedding_matrix: [V, H] encoder word table (tied decoder).

    Returns:
      float32 [..., V] logits.
    """
    cfg = self.config
    if word_embedding_matrix.shape != (cfg.vocab_size, cfg.hidden_size):
      raise ValueError(
          f"MLMHead: word_embedding_matrix {word_embedding_matrix.shape} !="
          f" ({cfg.vocab_size}, {cfg.hidden_size})")
    # The H->H kernel names only its input axis: two 'embed' names would map
    # one mesh axis twice.
    h = nn.Dense(cfg.hidden_size, dtype=self.dtype,
                 param_dtype=self.param_dtype,
                 kernel_init=plm_layers.normal_init(cfg.initializer_range,
                                              ("embed", None)),
                 bias_init=plm_layers.zeros_init(("embed",)), name="dense")(hidden)
    h = plm_layers.activation(cfg.hidden_act)(h)
    h = plm_layers.layer_norm(cfg, self.dtype, self.param_dtype, name="LayerNorm")(h)
    bias = self.param("bias", plm_layers.zeros_init(("vocab",)), (cfg.vocab_size,),
                      self.param_dtype)
    logits = jnp.einsum("...h,vh->...v", h,
                        word_embedding_matrix.astype(self.dtype))
    return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class PLMForMaskedLM(nn.Module):
  """Encoder (`encoder` subtree) + tied MLM head (`mlm_head` subtree).

  Attributes:
    config: architecture.
    dtype: compute dtype.
    param_dtype: parameter storage dtype.
    remat: per-layer rematerialisation of the encoder.
  """
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False

  def setup(self):
    self.encoder = bert.PLMEncoder(self.config, self.dtype, self.param_dtype,
                                   self.remat)
    self.mlm_head = MLMHead(self.config, self.dtype, self.param_dtype)

  def __call__(self, input_ids, attention_mask, token_type_ids=None, *,
               positions=None, deterministic: bool = True
               ) -> dict[str, jax.Array]:
    """Encodes and predicts tokens.

    Args:
      input_ids: int [B, L].
      attention_mask: [B, L] 1 on real tokens.
      token_type_ids: optional int [B, L].
      positions: optional int [B, P]; when given, logits are computed only at
        these positions (cheaper than all L when ~15% are masked).
      deterministic: disables dropout when True.

    Returns:
      The encoder dict plus 'logits': float32 [B, L, V] or [B, P, V].
    """
    out = self.encoder(input_ids, attention_mask, token_type_ids,
                       deterministic=deterministic)
    hidden = out["last_hidden_state"]
    if positions is not None:
      hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
    logits = self.mlm_head(hidden, self.encoder.word_embedding_matrix())
    return dict(out, logits=logits)
