"""The SRP4CTR CTR model, its ablations and DIN, with folded inference.

One module, ``Srp4ctrModel``; ``sequence`` picks what reaches the backbone
(a zoo model, DCNv2 by default) as extra fields of width e:

  fgbert  SRP4CTR (spec B3, B4, B7): FG-BERT encodes the history once per
          user; the querying transformer's N outputs (``num_queries``; 0 =
          the "without queries" ablation) and the uni cross-attention's
          target-aware interest vector (``cross_attention``; off = the
          "without cross-attention" ablation) are projected to e.
  din     DIN: target attention over the raw history embeddings (own
          tables of width e), weighted sum pooling -> one extra field.
  none    the backbone alone (no sequence knowledge).

Uni cross-attention (B3, [assumed] reading): t_0 = the shared input
embedding of the target item; for each pretrained layer l,
t_{l+1} = CrossLayer_l(t_l, K_l, V_l) with K_l = S_l W_K,l and V_l =
S_l W_V,l the encoder's own projections of its layer-l input (shared, not
copied: gradients reach them), and CrossLayer_l's query / output / FFN /
LayerNorms its own (initialised from pretrained layer l by the task).

Folding: ``user_side`` (encoder, K/V, queries; DIN's key embeddings) runs
once per user; ``candidate_side`` takes a candidate axis C, so a request of
one user and C candidates costs one encoder pass plus C cross-attentions
(O(L d) each) and C backbone passes. ``__call__`` is the unfolded form
(C = 1 per row); ``folded`` the request form.

Param layout: ``ctr/...`` (the backbone), ``out_bias``, ``seq/...``
(`fgbert.FGBert`), ``cross_<l>/...``, ``interest_proj``, ``queries/...``,
``query_proj``, ``din/...``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import layers
from flip_jax.models import ctr as ctr_lib
from flip_jax.models import layers as base_layers
from flip_jax.models.ctr import embedding

SEQUENCE_MODELS = ("fgbert", "din", "none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The CTR model at the model boundary.

  Attributes:
    ctr: the backbone, with ``num_extra_fields`` = ``num_extra_fields``.
    seq: FG-BERT's (fgbert) or the token attributes' (din) config.
    sequence: 'fgbert', 'din' or 'none'.
    cross_attention: the uni cross-attention block (fgbert).
    num_queries: N query tokens (fgbert; 0 = none).
    query_layers: layers of the querying transformer.
    din_hidden: DIN attention-unit widths; din_act its activation.
  """
  ctr: Any
  seq: Any = None
  sequence: str = "fgbert"
  cross_attention: bool = True
  num_queries: int = 8
  query_layers: int = 1
  din_hidden: tuple[int, ...] = (80, 40)
  din_act: str = "sigmoid"

  def __post_init__(self):
    object.__setattr__(self, "din_hidden", tuple(self.din_hidden))
    if self.sequence not in SEQUENCE_MODELS:
      raise ValueError(f"sequence {self.sequence!r}: {SEQUENCE_MODELS}")
    if self.sequence != "none" and self.seq is None:
      raise ValueError(f"sequence {self.sequence!r} needs a SeqConfig")
    if self.ctr.num_extra_fields != extra_fields(self):
      raise ValueError(f"ctr.num_extra_fields={self.ctr.num_extra_fields}, "
                       f"the model gives {extra_fields(self)}")


def extra_fields(cfg) -> int:
  """F_x: the dense fields the sequence side adds to the backbone."""
  if cfg.sequence == "fgbert":
    return cfg.num_queries + int(cfg.cross_attention)
  return int(cfg.sequence == "din")


class DIN(nn.Module):
  """Deep Interest Network's target attention (Zhou et al. 2018)."""
  seq: fgbert.SeqConfig
  embed_dim: int
  hidden: tuple[int, ...]
  act: str

  def setup(self):
    init = nn.with_logical_partitioning(
        base_layers.normal(embedding.EMBED_INIT_STD),
        ("feature_vocab", "feature_embed"))
    self.tables = [self.param(f"attr_{fgbert.attr_name(a)}", init,
                              (v, self.embed_dim), jnp.float32)
                   for a, v in zip(self.seq.attributes, self.seq.vocab_sizes)]
    self.att = base_layers.MLP(self.hidden, self.act)
    self.att_out = base_layers.TorchDense(1, axes=("hidden", None))

  def keys(self, hist):
    """History embeddings [U, L, e]: the sum of every attribute's."""
    return sum(jnp.take(t, hist[..., a], axis=0)
               for a, t in enumerate(self.tables))

  def __call__(self, keys, mask, target):
    """keys [U, L, e], mask [U, L], target [U, C, A_i] -> [U, C, e]."""
    t = sum(jnp.take(self.tables[a], target[..., i], axis=0)
            for i, a in enumerate(self.seq.item_attributes))
    k = jnp.broadcast_to(keys[:, None], t.shape[:2] + keys.shape[1:])
    q = jnp.broadcast_to(t[:, :, None], k.shape)
    z = jnp.concatenate([q, k, q - k, q * k], axis=-1)    # [U, C, L, 4e]
    w = self.att_out(self.att(z))[..., 0] * mask[:, None]  # [U, C, L]
    return jnp.einsum("ucl,ucle->uce", w, k)


class Srp4ctrModel(nn.Module):
  """SRP4CTR / DIN / backbone-alone CTR model (module docstring)."""
  config: ModelConfig

  def setup(self):
    cfg = self.config
    e = cfg.ctr.embed_dim
    self.ctr = ctr_lib.build(cfg.ctr)
    self.out_bias = self.param("out_bias", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ()), (), jnp.float32)
    if cfg.sequence == "fgbert":
      b = cfg.seq.block
      self.seq = fgbert.FGBert(cfg.seq)
      if cfg.cross_attention:
        self.cross = [layers.CrossLayer(b) for _ in range(cfg.seq.num_layers)]
        self.interest_proj = layers.dense(e, b, ("embed", "hidden"),
                                          "interest_proj")
      if cfg.num_queries:
        self.queries = layers.QueryTransformer(b, cfg.num_queries,
                                               cfg.query_layers)
        self.query_proj = layers.dense(e, b, ("embed", "hidden"),
                                       "query_proj")
    elif cfg.sequence == "din":
      self.din = DIN(cfg.seq, e, cfg.din_hidden, cfg.din_act)

  def user_side(self, batch, *, deterministic: bool = True):
    """What depends on the user only (run once per user): a dict."""
    cfg = self.config
    if cfg.sequence == "none":
      return {}
    hist, hist_mask = batch["hist"], batch["hist_mask"]
    user = {"mask": hist_mask}
    if cfg.sequence == "fgbert":
      states, kvs = self.seq(hist, hist_mask, deterministic=deterministic)
      if cfg.cross_attention:
        user["kv"] = kvs
      if cfg.num_queries:
        user["queries"] = self.query_proj(self.queries(
            states, hist_mask, deterministic=deterministic))    # [U, N, e]
    elif cfg.sequence == "din":
      user["keys"] = self.din.keys(hist)
    return user

  def candidate_side(self, user, ids, target, *, deterministic: bool = True):
    """ids [U, C, F], target [U, C, A_i] -> logits [U, C] (float32)."""
    cfg = self.config
    u, c = ids.shape[:2]
    extras = []
    if cfg.sequence == "fgbert" and cfg.num_queries:
      q = user["queries"][:, None]
      extras.append(jnp.broadcast_to(q, (u, c) + q.shape[2:]))
    if cfg.sequence == "fgbert" and cfg.cross_attention:
      t = self.seq.embed.target(target, deterministic=deterministic)
      for layer, (k, v) in zip(self.cross, user["kv"]):
        t = layer(t, k, v, user["mask"], deterministic=deterministic)
      extras.append(self.interest_proj(t)[:, :, None])         # [U, C, 1, e]
    if cfg.sequence == "din":
      extras.append(self.din(user["keys"], user["mask"], target)[:, :, None])
    extra = None
    if extras:
      extra = jnp.concatenate([x.astype(jnp.float32) for x in extras], 2)
      extra = extra.reshape((u * c,) + extra.shape[2:])
    out = self.ctr(ids.reshape(u * c, -1), deterministic=deterministic,
                   extra=extra)
    return (out["ctr/logit"] + self.out_bias).reshape(u, c)

  def interest(self, batch):
    """The uni cross-attention's output t_L [B, d] (before the projection;
    for tests and inspection)."""
    user = self.user_side(batch)
    t = self.seq.embed.target(batch["target"][:, None])
    for layer, (k, v) in zip(self.cross, user["kv"]):
      t = layer(t, k, v, user["mask"])
    return t[:, 0]

  def __call__(self, batch, *, deterministic: bool = True):
    """One candidate per row: {'logit' [B]}."""
    user = self.user_side(batch, deterministic=deterministic)
    logit = self.candidate_side(user, batch["ids"][:, None],
                                batch["target"][:, None],
                                deterministic=deterministic)
    return {"logit": logit[:, 0]}

  def folded(self, batch, *, deterministic: bool = True):
    """A request per user: hist [U, L, A], hist_mask [U, L], ids [U, C, F],
    target [U, C, A_i] -> {'logit' [U, C]}."""
    user = self.user_side(batch, deterministic=deterministic)
    return {"logit": self.candidate_side(user, batch["ids"], batch["target"],
                                         deterministic=deterministic)}
