"""PyTorch twin of the SRP4CTR CTR model (`model.Srp4ctrModel`).

The backbone is the zoo's torch twin (`flip_jax.export.torch_backbones`,
built for F + F_x fields) fed the id embeddings plus the extra fields; DIN's
attention unit is `torch_layers.MLP`. The sequence side keeps the Flax
layouts (kernels [in, out], multi-head kernels [d, H, d_h], LayerNorm
``scale`` / ``bias``), so its state-dict keys are the Flax paths with dots
and its weights move unchanged (`export.export_rows`).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from flip_jax.export import torch_backbones
from flip_jax.export import torch_layers
from flip_jax.methods.srp4ctr import fgbert
from flip_jax.methods.srp4ctr import layers as flax_layers


def _zeros(*shape) -> nn.Parameter:
  return nn.Parameter(torch.zeros(*shape))


class LayerNormT(nn.Module):
  def __init__(self, d: int):
    super().__init__()
    self.scale, self.bias = _zeros(d), _zeros(d)

  def forward(self, x):
    return F.layer_norm(x, x.shape[-1:], self.scale, self.bias,
                        flax_layers.LN_EPS)


class DenseT(nn.Module):
  def __init__(self, d_in: int, d_out: int):
    super().__init__()
    self.kernel, self.bias = _zeros(d_in, d_out), _zeros(d_out)

  def forward(self, x):
    return x @ self.kernel + self.bias


class HeadsT(nn.Module):
  """d -> (H, d_h) (``to_heads``) or back, as `layers.HeadsDense`."""

  def __init__(self, b, to_heads: bool):
    super().__init__()
    hd = (b.heads, b.head_dim)
    self.to_heads = to_heads
    self.kernel = _zeros(*((b.hidden,) + hd if to_heads else hd
                           + (b.hidden,)))
    self.bias = _zeros(*(hd if to_heads else (b.hidden,)))

  def forward(self, x):
    eq = "...d,dhk->...hk" if self.to_heads else "...hk,hkd->...d"
    return torch.einsum(eq, x, self.kernel) + self.bias


class CrossLayerT(nn.Module):
  """`layers.CrossLayer`: attention to given K/V, then FFN (post-LN)."""

  def __init__(self, b, with_kv: bool = False):
    super().__init__()
    self.act = b.act
    self.query, self.out = HeadsT(b, True), HeadsT(b, False)
    if with_kv:
      self.key, self.value = HeadsT(b, True), HeadsT(b, True)
    self.ln_attn, self.ln_ffn = LayerNormT(b.hidden), LayerNormT(b.hidden)
    self.ffn_in, self.ffn_out = DenseT(b.hidden, b.mlp), DenseT(b.mlp,
                                                                b.hidden)

  def forward(self, x, k, v, mask):
    q = self.query(x)
    s = torch.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(q.shape[-1])
    keep = (mask > 0)[..., None, None, :]
    s = torch.where(keep, s, torch.full_like(s, -1e9))
    p = torch.softmax(s, -1) * keep
    a = torch.einsum("...hqk,...khd->...qhd", p, v)
    x = self.ln_attn(x + self.out(a))
    h = self.ffn_in(x)
    h = F.gelu(h) if self.act == "gelu" else torch.relu(h)
    return self.ln_ffn(x + self.ffn_out(h))


class TokenEmbeddingT(nn.Module):
  def __init__(self, cfg: fgbert.SeqConfig):
    super().__init__()
    self.cfg = cfg
    d = cfg.block.hidden
    self.names = [f"attr_{fgbert.attr_name(a)}" for a in cfg.attributes]
    for name, v in zip(self.names, cfg.vocab_sizes):
      setattr(self, name, _zeros(v, d))
    self.position = _zeros(cfg.max_length, d)
    self.ln = LayerNormT(d)

  def table(self, a: int):
    return getattr(self, self.names[a])

  def tokens(self, hist):
    x = sum(self.table(a)[hist[..., a]] for a in range(len(self.names)))
    return self.ln(x + self.position[:hist.shape[-2]])

  def target(self, target):
    return self.ln(sum(self.table(a)[target[..., i]]
                       for i, a in enumerate(self.cfg.item_attributes)))


class FGBertT(nn.Module):
  def __init__(self, cfg: fgbert.SeqConfig):
    super().__init__()
    self.embed = TokenEmbeddingT(cfg)
    self.num_layers = cfg.num_layers
    for l in range(cfg.num_layers):
      setattr(self, f"layers_{l}", CrossLayerT(cfg.block, with_kv=True))

  def forward(self, hist, mask):
    x, kvs = self.embed.tokens(hist), []
    for l in range(self.num_layers):
      layer = getattr(self, f"layers_{l}")
      k, v = layer.key(x), layer.value(x)
      kvs.append((k, v))
      x = layer(x, k, v, mask)
    return x, kvs


class QueryTransformerT(nn.Module):
  def __init__(self, b, num_queries: int, num_layers: int):
    super().__init__()
    self.queries = _zeros(num_queries, b.hidden)
    self.num_layers = num_layers
    for l in range(num_layers):
      setattr(self, f"layer_{l}", CrossLayerT(b, with_kv=True))

  def forward(self, states, mask):
    x = self.queries.expand(states.shape[:-2] + self.queries.shape)
    for l in range(self.num_layers):
      layer = getattr(self, f"layer_{l}")
      x = layer(x, layer.key(states), layer.value(states), mask)
    return x


class DINT(nn.Module):
  def __init__(self, seq: fgbert.SeqConfig, e: int, hidden, act: str):
    super().__init__()
    self.seq = seq
    self.names = [f"attr_{fgbert.attr_name(a)}" for a in seq.attributes]
    for name, v in zip(self.names, seq.vocab_sizes):
      setattr(self, name, _zeros(v, e))
    self.att = torch_layers.MLP(4 * e, hidden, act)
    self.att_out = nn.Linear(hidden[-1], 1)

  def keys(self, hist):
    return sum(getattr(self, n)[hist[..., a]]
               for a, n in enumerate(self.names))

  def forward(self, keys, mask, target):
    t = sum(getattr(self, self.names[a])[target[..., i]]
            for i, a in enumerate(self.seq.item_attributes))
    k = keys[:, None].expand(t.shape[:2] + keys.shape[1:])
    q = t[:, :, None].expand(k.shape)
    w = self.att_out(self.att(torch.cat([q, k, q - k, q * k], -1)))[..., 0]
    return torch.einsum("ucl,ucle->uce", w * mask[:, None], k)


class Srp4ctrTorch(nn.Module):
  """The CTR model (``model.ModelConfig``); eval-mode inference twin."""

  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg
    c = cfg.ctr
    self.ctr = torch_backbones.build_torch(dataclasses.replace(
        c, num_fields=c.num_fields + c.num_extra_fields, num_extra_fields=0))
    self.out_bias = _zeros(())
    if cfg.sequence == "fgbert":
      b, e = cfg.seq.block, c.embed_dim
      self.seq = FGBertT(cfg.seq)
      if cfg.cross_attention:
        for l in range(cfg.seq.num_layers):
          setattr(self, f"cross_{l}", CrossLayerT(b))
        self.interest_proj = DenseT(b.hidden, e)
      if cfg.num_queries:
        self.queries = QueryTransformerT(b, cfg.num_queries,
                                         cfg.query_layers)
        self.query_proj = DenseT(b.hidden, e)
    elif cfg.sequence == "din":
      self.din = DINT(cfg.seq, c.embed_dim, cfg.din_hidden, cfg.din_act)
    self.eval()

  def folded(self, batch):
    """hist [U, L, A], hist_mask [U, L], ids [U, C, F], target [U, C, A_i]
    -> logits [U, C]."""
    cfg = self.cfg
    ids, target = batch["ids"].long(), batch["target"].long()
    u, c = ids.shape[:2]
    extras = []
    if cfg.sequence == "fgbert":
      hist, mask = batch["hist"].long(), batch["hist_mask"]
      states, kvs = self.seq(hist, mask)
      if cfg.num_queries:
        q = self.query_proj(self.queries(states, mask))[:, None]
        extras.append(q.expand((u, c) + q.shape[2:]))
      if cfg.cross_attention:
        t = self.seq.embed.target(target)
        for l, (k, v) in enumerate(kvs):
          t = getattr(self, f"cross_{l}")(t, k, v, mask)
        extras.append(self.interest_proj(t)[:, :, None])
    elif cfg.sequence == "din":
      keys = self.din.keys(batch["hist"].long())
      extras.append(self.din(keys, batch["hist_mask"], target)[:, :, None])
    flat = ids.reshape(u * c, -1)
    emb = self.ctr.embedding(flat)
    if extras:
      extra = torch.cat(extras, 2)
      emb = torch.cat([emb, extra.reshape((u * c,) + extra.shape[2:])], 1)
    z = self.ctr.rep_logit(self.ctr.encode(emb))
    if self.ctr.use_linear:
      z = z + self.ctr.linear(flat)[..., 0].sum(-1)
    return (z + self.out_bias).reshape(u, c)

  def forward(self, batch):
    """One candidate per row -> logits [B]."""
    b = dict(batch)
    b["ids"], b["target"] = batch["ids"][:, None], batch["target"][:, None]
    return self.folded(b)[:, 0]
