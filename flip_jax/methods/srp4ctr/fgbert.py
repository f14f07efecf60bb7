"""FG-BERT: the fine-grained sequence encoder and its pretraining (spec B2).

Token embedding (B7.1, [assumed]): the sum of one embedding per attribute
(item ID, genre, year, feedback, ...; `flip_jax.data.sequences`) plus a
learned position embedding, then LayerNorm and dropout. A target item is
embedded with the same tables (its item attributes, no position): the
shared input embedding of the uni cross-attention (B3).

Pretraining (B7.2): a masked position has every attribute replaced by MASK
and must predict each of them. One head per attribute (Dense + act +
LayerNorm, then scores against the attribute's embedding table, tied by
default, plus a bias): item IDs by sampled softmax or NCE over noise drawn
from the train-event item counts (FLIP's losses), the small attributes by a
full softmax. The loss is the weighted sum over attributes of the per-slot
means.

Param layout: ``seq/embed/{attr_<name>, position, ln}``,
``seq/layers_<l>/...`` (`layers.EncoderLayer`); pretraining adds
``heads_<a>/{dense, ln}`` and ``bias_<name>`` (and ``out_<name>`` untied).
"""
from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
from flax import linen as nn

from flip_jax import losses
from flip_jax import noise as noise_lib
from flip_jax.methods.srp4ctr import layers

ITEM_LOSSES = ("sampled", "nce", "full")


def attr_name(attribute: str) -> str:
  """A param-name-safe attribute name ('year:title' -> 'year_title')."""
  return re.sub(r"[^0-9A-Za-z_]", "_", attribute)


@dataclasses.dataclass(frozen=True)
class SeqConfig:
  """FG-BERT at the model boundary.

  Attributes:
    block: layer sizes (`layers.BlockConfig`).
    num_layers: transformer layers (B2: 2).
    attributes: token attributes, 'item' first.
    vocab_sizes: ids per attribute (reserved 0 / MASK 1 included).
    item_attributes: indices of the attributes a target item has.
    max_length: L, the window length.
  """
  block: layers.BlockConfig
  num_layers: int
  attributes: tuple[str, ...]
  vocab_sizes: tuple[int, ...]
  item_attributes: tuple[int, ...]
  max_length: int

  def __post_init__(self):
    for k in ("attributes", "vocab_sizes", "item_attributes"):
      object.__setattr__(self, k, tuple(getattr(self, k)))
    if len(self.attributes) != len(self.vocab_sizes):
      raise ValueError("SeqConfig: one vocab size per attribute")


class TokenEmbedding(nn.Module):
  """Sum of attribute embeddings (+ position) -> LayerNorm -> dropout."""
  cfg: SeqConfig

  def setup(self):
    b = self.cfg.block
    init = nn.with_logical_partitioning(nn.initializers.normal(b.init_std),
                                        ("vocab", "embed"))
    self.tables = [self.param(f"attr_{attr_name(a)}", init, (v, b.hidden),
                              jnp.float32)
                   for a, v in zip(self.cfg.attributes, self.cfg.vocab_sizes)]
    self.position = self.param("position", init,
                               (self.cfg.max_length, b.hidden), jnp.float32)
    self.ln = layers.layer_norm("ln")
    self.drop = nn.Dropout(b.dropout)

  def table(self, a: int):
    """The embedding table of attribute ``a`` [V_a, d]."""
    return self.tables[a]

  def _finish(self, x, deterministic):
    return self.drop(self.ln(x), deterministic=deterministic)

  def tokens(self, hist, *, deterministic: bool = True):
    """hist [..., L, A] -> [..., L, d]."""
    x = sum(jnp.take(t, hist[..., a], axis=0)
            for a, t in enumerate(self.tables))
    return self._finish(x + self.position[:hist.shape[-2]], deterministic)

  def target(self, target, *, deterministic: bool = True):
    """target [..., A_item] (item-attribute ids) -> [..., d]."""
    x = sum(jnp.take(self.tables[a], target[..., i], axis=0)
            for i, a in enumerate(self.cfg.item_attributes))
    return self._finish(x, deterministic)


class FGBert(nn.Module):
  """The bidirectional encoder; returns the states and every layer's K/V."""
  cfg: SeqConfig

  def setup(self):
    self.embed = TokenEmbedding(self.cfg)
    self.layers = [layers.EncoderLayer(self.cfg.block)
                   for _ in range(self.cfg.num_layers)]

  def __call__(self, hist, mask, *, deterministic: bool = True):
    """hist [U, L, A], mask [U, L] -> (states [U, L, d], [(K_l, V_l)]).

    (K_l, V_l) [U, L, H, d_h] are layer l's projections of its input S_l:
    what the uni cross-attention reads (computed once per user).
    """
    x = self.embed.tokens(hist, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    kvs = []
    for layer in self.layers:
      x, kv = layer.encode(x, mask, deterministic=deterministic)
      x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
      kvs.append(kv)
    return x, kvs


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """The pretraining model.

  Attributes:
    seq: the encoder.
    item_loss: 'sampled' (sampled softmax), 'nce' or 'full'.
    num_negatives: noise ids per masked slot (sampled / nce).
    tie_output: score against the input embedding tables (BERT4Rec).
    attribute_weights: loss weight per attribute.
  """
  seq: SeqConfig
  item_loss: str = "sampled"
  num_negatives: int = 100
  tie_output: bool = True
  attribute_weights: tuple[float, ...] = ()

  def __post_init__(self):
    if self.item_loss not in ITEM_LOSSES:
      raise ValueError(f"item_loss {self.item_loss!r}: {ITEM_LOSSES}")
    w = tuple(self.attribute_weights) or (1.0,) * len(self.seq.attributes)
    if len(w) != len(self.seq.attributes):
      raise ValueError("attribute_weights: one weight per attribute")
    object.__setattr__(self, "attribute_weights", w)


class Head(nn.Module):
  """BERT's prediction transform: Dense -> act -> LayerNorm."""
  cfg: layers.BlockConfig

  @nn.compact
  def __call__(self, h):
    h = layers.dense(self.cfg.hidden, self.cfg, ("embed", "mlp"), "dense")(h)
    return layers.layer_norm("ln")(layers.activation(self.cfg.act)(h))


class FGBertPretrainModel(nn.Module):
  """Multi-attribute masked prediction over FG-BERT."""
  config: PretrainConfig

  def setup(self):
    cfg = self.config
    seq = cfg.seq
    self.seq = FGBert(seq)
    self.heads = [Head(seq.block) for _ in seq.attributes]
    zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                         ("vocab",))
    self.biases = [self.param(f"bias_{attr_name(a)}", zeros, (v,),
                              jnp.float32)
                   for a, v in zip(seq.attributes, seq.vocab_sizes)]
    if not cfg.tie_output:
      init = nn.with_logical_partitioning(
          nn.initializers.normal(seq.block.init_std), ("vocab", "embed"))
      self.outputs = [self.param(f"out_{attr_name(a)}", init,
                                 (v, seq.block.hidden), jnp.float32)
                      for a, v in zip(seq.attributes, seq.vocab_sizes)]

  def masked_states(self, batch, *, deterministic: bool = True):
    """States at the masked slots [B, M, d]."""
    states, _ = self.seq(batch["mlm_hist"], batch["hist_mask"],
                         deterministic=deterministic)
    pos = batch["mlm_positions"]
    return jnp.take_along_axis(states, pos[..., None], axis=1)

  def output_table(self, a: int):
    if self.config.tie_output:
      return self.seq.embed.table(a)
    return self.outputs[a]

  def __call__(self, batch, consts, *, deterministic: bool = True,
               norms=None):
    """Loss and metrics of a masked batch.

    Args:
      batch: mlm_hist [B, L, A], hist_mask [B, L], mlm_positions [B, M],
        mlm_labels [B, M, A], mlm_weight [B, M] (0 = padding slot).
      consts: {'item_log_q' [V_item]}: the item noise distribution.
      deterministic: no dropout.
      norms: None, or the global batch's number of masked slots (a
        micro-batch then returns its share of the global loss).

    Returns:
      {'loss', '<attr>_loss', '<attr>_acc', 'masked'}.
    """
    cfg = self.config
    h = self.masked_states(batch, deterministic=deterministic)
    w, labels = batch["mlm_weight"], batch["mlm_labels"]
    out, total = {}, 0.0
    for a, attr in enumerate(cfg.seq.attributes):
      z = self.heads[a](h)
      table, bias, y = self.output_table(a), self.biases[a], labels[..., a]
      if a == 0 and cfg.item_loss != "full":
        log_q = consts["item_log_q"]
        noise = noise_lib.sample_noise(self.make_rng("noise"), log_q,
                                       y.shape + (cfg.num_negatives,))
        fn = (losses.nce_loss if cfg.item_loss == "nce"
              else losses.sampled_softmax_loss)
        loss, acc = fn(z, table, bias, y, noise, log_q, w, norms)
      else:
        loss, acc = losses.full_softmax_loss(z, table, bias, y, w, norms)
      name = attr_name(attr)
      out[f"{name}_loss"], out[f"{name}_acc"] = loss, acc
      total = total + cfg.attribute_weights[a] * loss
    out["loss"] = total
    out["masked"] = jnp.sum(w)
    return out
