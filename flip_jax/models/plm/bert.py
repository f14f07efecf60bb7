"""Post-LN BERT/RoBERTa encoder in Flax linen (FLIP.md section 4).

Submodule names mirror HF so the import/export table reads naturally:

  embeddings/{word,position,token_type}_embeddings/embedding   [rows, H]
  embeddings/LayerNorm/{scale,bias}
  encoder/layer_{i}/attention/{query,key,value}/kernel         [H, heads, kv]
  encoder/layer_{i}/attention/output/dense/kernel              [heads, kv, H]
  encoder/layer_{i}/attention/output/LayerNorm/{scale,bias}
  encoder/layer_{i}/intermediate/dense/kernel                  [H, mlp]
  encoder/layer_{i}/output/dense/kernel                        [mlp, H]
  encoder/layer_{i}/output/LayerNorm/{scale,bias}

Every parameter carries logical axis names (flip_jax/sharding.py) so the rules
table can shard `vocab`, `heads` and `mlp` over a tensor-parallel mesh axis.
`dtype` is the compute dtype; `param_dtype` the storage dtype. Softmax and
LayerNorm statistics always run in float32.

Optional inputs of `PLMEncoder` (ClickPrompt, CLICKPROMPT_SRP4CTR.md A4/A5);
none of them adds a parameter, and without them the encoder is unchanged:

* ``prefix``: per-layer (key, value) prefixes, each [B, heads, K, head_dim],
  prepended to the layer's text keys and values (not projected, no
  LayerNorm, no dropout); the padding bias gets K always-visible slots.
* ``position_offset``: shifts the text's position ids by K (what HF does
  with a K-long attention cache); text length + offset must fit the table.
* ``prompt_embeds``: [B, K, H] vectors prepended to the word embeddings
  (input-layer prompts); they take positions and are always visible.
* ``output_hidden_states``: also return every layer's output.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from flip_jax.models.plm.config import PLMConfig
from flip_jax.models.plm.layers import ACT_SPEC
from flip_jax.models.plm.layers import Dtype
from flip_jax.models.plm.layers import Encoder
from flip_jax.models.plm.layers import attention_bias
from flip_jax.models.plm.layers import dropout
from flip_jax.models.plm.layers import layer_norm
from flip_jax.models.plm.layers import normal_init


def position_ids_from_mask(attention_mask: jax.Array, cfg: PLMConfig,
                           offset: int = 0) -> jax.Array:
  """Absolute position ids for each token.

  BERT: offset..offset+L-1. RoBERTa: positions of real tokens count from
  pad_token_id + 1 + offset and every padded slot gets pad_token_id, i.e.
  (cumsum(mask) + offset) * mask + pad_token_id (HF derives the same from
  input_ids != pad, with offset = its cache length; deriving it from the
  mask keeps it right for any pad id).

  Args:
    attention_mask: [B, L] 1 on real tokens, 0 on padding.
    cfg: the encoder config.
    offset: static shift of the positions (the K prefix slots).

  Returns:
    int32 [B, L] position ids.
  """
  mask = attention_mask.astype(jnp.int32)
  if cfg.model_type == "roberta":
    if offset:
      return (jnp.cumsum(mask, axis=-1) + offset) * mask + cfg.pad_token_id
    return jnp.cumsum(mask, axis=-1) * mask + cfg.pad_token_id
  length = attention_mask.shape[-1]
  return jnp.broadcast_to(jnp.arange(offset, offset + length,
                                     dtype=jnp.int32), mask.shape)


def max_length(cfg: PLMConfig) -> int:
  """Longest sequence the position table supports (RoBERTa's is offset)."""
  if cfg.model_type == "roberta":
    return cfg.max_position_embeddings - cfg.pad_token_id - 1
  return cfg.max_position_embeddings


def _lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
  """Rows of `table` in its own (param) dtype.

  Gathering before any cast keeps the gradient a float32 scatter-add: a
  bfloat16 scatter-add has no native atomic on GPUs and, with the few ids
  that every prompt repeats, it took 80-90% of an H100 step.
  """
  return jnp.take(table, ids, axis=0)


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    std = cfg.initializer_range

    def embed(rows, names):
      return nn.Embed(rows, cfg.hidden_size, dtype=self.dtype,
                      param_dtype=self.param_dtype,
                      embedding_init=normal_init(std, names))

    self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"))
    self.position_embeddings = embed(cfg.max_position_embeddings,
                                     (None, "embed"))
    self.token_type_embeddings = embed(cfg.type_vocab_size, (None, "embed"))
    # HF's capitalised name, so the mapping table reads naturally.
    self.LayerNorm = layer_norm(  # pylint: disable=invalid-name
        cfg, self.dtype, self.param_dtype)
    self.dropout = dropout(cfg, cfg.hidden_dropout)

  def __call__(self, input_ids, attention_mask, token_type_ids, *,
               deterministic: bool, position_offset: int = 0,
               prompt_embeds=None):
    """Embeds ids [B, L]; with ``prompt_embeds`` [B, K, H] in front."""
    words = _lookup(self.word_embeddings.embedding, input_ids)
    if prompt_embeds is not None:
      # Input-layer prompts: always-visible slots with their own positions
      # (HF's inputs_embeds path) and token type 0.
      k = prompt_embeds.shape[1]
      words = jnp.concatenate([prompt_embeds.astype(words.dtype), words], 1)
      attention_mask = jnp.concatenate(
          [jnp.ones((attention_mask.shape[0], k), attention_mask.dtype),
           attention_mask], axis=1)
      token_type_ids = jnp.concatenate(
          [jnp.zeros((token_type_ids.shape[0], k), token_type_ids.dtype),
           token_type_ids], axis=1)
    positions = position_ids_from_mask(attention_mask, self.config,
                                       position_offset)
    tt_table = self.token_type_embeddings.embedding
    x = (words
         + _lookup(self.position_embeddings.embedding, positions)
         + jnp.einsum("blt,th->blh",
                      jax.nn.one_hot(token_type_ids, tt_table.shape[0],
                                     dtype=tt_table.dtype), tt_table))
    x = x.astype(self.dtype)
    x = self.LayerNorm(x)
    x = self.dropout(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ACT_SPEC)

  def word_matrix(self) -> jax.Array:
    """The [V, H] word embedding table (for the tied MLM decoder)."""
    return self.word_embeddings.embedding


def _check_prefix(prefix, cfg: PLMConfig, batch: int):
  """Validates per-layer prefixes; None for no prefix (or K = 0)."""
  if prefix is None:
    return None
  prefix = tuple(tuple(pair) for pair in prefix)
  if len(prefix) != cfg.num_layers or any(len(p) != 2 for p in prefix):
    raise ValueError(f"PLMEncoder: prefix must hold one (key, value) pair "
                     f"per layer ({cfg.num_layers})")
  k = prefix[0][0].shape[2] if prefix[0][0].ndim == 4 else -1
  want = (batch, cfg.num_heads, k, cfg.head_dim)
  for pair in prefix:
    for t in pair:
      if tuple(t.shape) != want or k < 0:
        raise ValueError(f"PLMEncoder: prefix tensors must be [batch, heads,"
                         f" K, head_dim] = {want}, got {tuple(t.shape)}")
  return prefix if k else None


class PLMEncoder(nn.Module):
  """BERT/RoBERTa encoder returning token states and the first-token state.

  Attributes:
    config: architecture (PLMConfig); dropout rates come from it.
    dtype: compute dtype (e.g. jnp.bfloat16).
    param_dtype: parameter storage dtype.
    remat: rematerialise each layer in the backward pass (saves memory).

  Dropout draws from the 'dropout' rng collection when deterministic=False.
  """
  config: PLMConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False

  def setup(self):
    self.embeddings = Embeddings(self.config, self.dtype, self.param_dtype)
    self.encoder = Encoder(self.config, self.dtype, self.param_dtype,
                           self.remat)

  def __call__(self, input_ids, attention_mask, token_type_ids=None, *,
               deterministic: bool = True, prefix=None,
               position_offset: int = 0, prompt_embeds=None,
               output_hidden_states: bool = False) -> dict[str, jax.Array]:
    """Encodes a padded batch.

    Args:
      input_ids: int [B, L] token ids.
      attention_mask: [B, L] 1 on real tokens, 0 on padding.
      token_type_ids: optional int [B, L]; zeros when None.
      deterministic: disables dropout when True.
      prefix: None, or one (key, value) pair per layer, each
        [B, num_heads, K, head_dim], prepended to that layer's text keys and
        values (always visible). K = 0 is the same as None.
      position_offset: static shift of the text's position ids (K, as HF
        shifts them after a K-long cache); length + offset must fit.
      prompt_embeds: None or [B, K, H] input-layer prompts prepended to the
        word embeddings; the outputs then have K + L positions.
      output_hidden_states: also return 'hidden_states', the embedding
        output and every layer's output (HF order).

    Returns:
      {'last_hidden_state': [B, L, H], 'cls': [B, H]} in the compute dtype
      (+ 'hidden_states', a tuple of num_layers + 1 such arrays).
    """
    cfg = self.config
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(
          f"PLMEncoder: input_ids {input_ids.shape} and attention_mask"
          f" {attention_mask.shape} must both be [batch, length]")
    prefix = _check_prefix(prefix, cfg, input_ids.shape[0])
    extra = 0 if prompt_embeds is None else prompt_embeds.shape[1]
    if input_ids.shape[1] + position_offset + extra > max_length(cfg):
      what = (f"length {input_ids.shape[1]}" if not position_offset + extra
              else f"length {input_ids.shape[1]} + {position_offset + extra}"
              " prompt positions")
      raise ValueError(
          f"PLMEncoder: {what} exceeds the {max_length(cfg)} positions this"
          f" {cfg.model_type} checkpoint supports")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if prompt_embeds is not None:
      if prompt_embeds.shape != (input_ids.shape[0], extra, cfg.hidden_size):
        raise ValueError(f"PLMEncoder: prompt_embeds {prompt_embeds.shape} "
                         f"must be [batch, K, {cfg.hidden_size}]")
      attention_mask = jnp.concatenate(
          [jnp.ones((input_ids.shape[0], extra), attention_mask.dtype),
           attention_mask], axis=1)
    x = self.embeddings(input_ids, attention_mask[:, extra:], token_type_ids,
                        deterministic=deterministic,
                        position_offset=position_offset,
                        prompt_embeds=prompt_embeds)
    key_mask = attention_mask
    if prefix is not None:
      key_mask = jnp.concatenate(
          [jnp.ones(prefix[0][0].shape[:1] + prefix[0][0].shape[2:3],
                    attention_mask.dtype), attention_mask], axis=1)
    out = self.encoder(x, attention_bias(key_mask, self.dtype),
                       deterministic=deterministic, prefix=prefix,
                       output_hidden_states=output_hidden_states)
    if output_hidden_states:
      x, hidden = out
      return {"last_hidden_state": x, "cls": x[:, 0], "hidden_states": hidden}
    return {"last_hidden_state": out, "cls": out[:, 0]}

  def word_embedding_matrix(self) -> jax.Array:
    """The [V, H] word table; pass it to `MLMHead` for the tied decoder."""
    return self.embeddings.word_matrix()
