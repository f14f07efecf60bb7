"""PyTorch twin of a finetuned ClickPrompt model with its PLM (prefix_add ...).

``ClickPromptTorch`` computes the forward pass of
``flip_jax.methods.clickprompt.model.ClickPromptModel`` in the PLM modes
(prefix_add, prefix, prompt_add, prompt, add, nlp_only): the CTR backbone
twin (``flip_jax.export.torch_backbones``; only its representation q is
used), the prompt generator, a Hugging Face ``AutoModel`` (BERT or RoBERTa)
run layer by layer with the per-layer key/value prefixes in front of each
layer's keys and values (HF encoders take no prefix, so the attention is
written here; every weight is HF's own submodule), the poolers, ``nlp_head``,
``ctr_head`` and α. ``ROWS`` / ``to_torch`` move the non-PLM weights.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from flip_jax.export import ctr_mapping
from flip_jax.export.torch_backbones import build_torch
from flip_jax.layout_hooks import Hook
from flip_jax.layout_hooks import IDENTITY
from flip_jax.layout_hooks import TRANSPOSE

# mode -> (uses q, uses the PLM, prompt kind, CTR logit, PLM logit); the
# same table as the Flax model's (kept here so export needs no jax model).
MODES = {
    "prefix_add": (True, True, "prefix", True, True),
    "prefix": (True, True, "prefix", False, True),
    "prompt_add": (True, True, "prompt", True, True),
    "prompt": (True, True, "prompt", False, True),
    "add": (True, True, None, True, True),
    "nlp_only": (False, True, None, False, True),
}
# A Dense-style kernel whose output axes are flattened: (in, *out) <-> torch
# Linear weight (prod(out), in); `cfg` is the Flax shape.
FLAT_KERNEL = Hook("flat_kernel", lambda a, cfg=None: a.reshape(a.shape[0],
                                                                 -1).T,
                   lambda a, cfg: a.T.reshape(cfg))
FLAT = Hook("flat", lambda a, cfg=None: a.reshape(-1),
            lambda a, cfg: a.reshape(cfg))


def rows(meta: Mapping[str, Any], ctr_cfg) -> list[tuple[str, str, Hook]]:
  """(flax path, torch key, hook) of every non-PLM weight of ``meta``."""
  uses_q, _, kind, ctr_logit, _ = MODES[meta["mode"]]
  out = []
  if uses_q:
    for f, t, h in ctr_mapping.backbone_rows(ctr_cfg):
      if f.startswith("params/") and f[len("params/"):] in _UNUSED_ZOO:
        continue
      out.append((f"params/ctr/{f.split('/', 1)[1]}", f"ctr.{t}", h))
  if kind == "prefix":
    out += [("params/prompt_generator/hidden/kernel",
             "prompt_generator.0.weight", TRANSPOSE),
            ("params/prompt_generator/hidden/bias", "prompt_generator.0.bias",
             IDENTITY),
            ("params/prompt_generator/out/kernel", "prompt_generator.2.weight",
             FLAT_KERNEL),
            ("params/prompt_generator/out/bias", "prompt_generator.2.bias",
             FLAT)]
  elif kind == "prompt":
    out += [("params/prompt_generator/out/kernel", "prompt_generator.weight",
             FLAT_KERNEL),
            ("params/prompt_generator/out/bias", "prompt_generator.bias",
             FLAT)]
  out += [("params/nlp_head/dense/kernel", "nlp_head.0.weight", TRANSPOSE),
          ("params/nlp_head/dense/bias", "nlp_head.0.bias", IDENTITY),
          ("params/nlp_head/out/kernel", "nlp_head.2.weight", TRANSPOSE),
          ("params/nlp_head/out/bias", "nlp_head.2.bias", IDENTITY)]
  if ctr_logit:
    out += [("params/ctr_head/kernel", "ctr_head.weight", TRANSPOSE),
            ("params/ctr_head/bias", "ctr_head.bias", IDENTITY)]
  if ctr_logit and meta["weighted_add"] and meta["alpha_learnable"]:
    out.append(("params/alpha", "alpha", IDENTITY))
  return out


# Zoo parts the twin backbone has but ClickPrompt never uses (its head is
# ctr_head on q): written as zeros.
_UNUSED_ZOO = ("linear/table", "head/kernel")


def to_torch(meta, ctr_cfg, flat_params: Mapping[str, np.ndarray],
             zero_keys: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """Flat Flax variables ('params/...') -> the twin's non-PLM state dict."""
  out = {t: np.ascontiguousarray(h.to_torch(np.asarray(flat_params[f],
                                                       np.float32), None))
         for f, t, h in rows(meta, ctr_cfg)}
  out.update({k: np.zeros(s, np.float32) for k, s in zero_keys.items()})
  return out


class ClickPromptTorch(nn.Module):
  """The finetuned model (a PLM mode) in PyTorch; see the module doc."""

  def __init__(self, meta: Mapping[str, Any], ctr_cfg, plm: nn.Module):
    super().__init__()
    self.meta = dict(meta)
    uses_q, _, kind, ctr_logit, _ = MODES[meta["mode"]]
    d = plm.config.hidden_size
    self.plm, self.kind, k = plm, kind, meta["num_prompt"]
    if uses_q:
      self.ctr = build_torch(ctr_cfg)
    final = meta["final_dim"]
    if kind == "prefix":
      self.prompt_generator = nn.Sequential(
          nn.Linear(final, d), nn.Tanh(),
          nn.Linear(d, k * 2 * plm.config.num_hidden_layers * d))
    elif kind == "prompt":
      self.prompt_generator = nn.Linear(final, k * d)
    self.nlp_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
    if ctr_logit:
      self.ctr_head = nn.Linear(meta["ctr_head_in"], 1)
    if ctr_logit and meta["weighted_add"] and meta["alpha_learnable"]:
      self.alpha = nn.Parameter(torch.zeros(()))

  def encode(self, input_ids, mask, prefix=None, prompts=None):
    """HF layers with prefixes / input prompts -> (hidden states, mask)."""
    cfg, emb = self.plm.config, self.plm.embeddings
    b = input_ids.shape[0]
    words = emb.word_embeddings(input_ids)
    if prompts is not None:
      words = torch.cat([prompts, words], 1)
      mask = torch.cat([torch.ones_like(mask[:, :1]).expand(
          b, prompts.shape[1]), mask], 1)
    offset = (self.meta["num_prompt"] if prefix is not None
              and self.meta["shift_positions"] else 0)
    if cfg.model_type == "roberta":
      pos = (torch.cumsum(mask, 1) + offset) * mask + cfg.pad_token_id
    else:
      pos = torch.arange(mask.shape[1]).expand(b, -1) + offset
    x = emb(inputs_embeds=words, position_ids=pos.long(),
            token_type_ids=torch.zeros_like(pos).long())
    keys_mask = mask if prefix is None else torch.cat(
        [torch.ones(b, prefix[0][0].shape[2], dtype=mask.dtype), mask], 1)
    bias = (1.0 - keys_mask[:, None, None, :].float()) * torch.finfo(
        torch.float32).min
    hidden = [x]
    n = cfg.num_attention_heads
    for i, layer in enumerate(self.plm.encoder.layer):
      sa = layer.attention.self
      split = lambda t: t.view(b, -1, n, t.shape[-1] // n).transpose(1, 2)
      q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
      if prefix is not None:
        k = torch.cat([prefix[i][0], k], 2)
        v = torch.cat([prefix[i][1], v], 2)
      scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
      ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(
          b, -1, cfg.hidden_size)
      a = layer.attention.output(ctx, x)
      x = layer.output(layer.intermediate(a), a)
      hidden.append(x)
    return hidden, mask

  def pool(self, hidden, mask):
    pooler = self.meta["pooler"]
    last = hidden[-1]
    if pooler == "cls":
      return last[:, 0]
    h = {"avg": last, "avg_first_last": (hidden[1] + last) / 2.0,
         "avg_top2": (hidden[-2] + last) / 2.0}[pooler]
    m = mask.float()[..., None]
    return (h * m).sum(1) / m.sum(1)

  def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """{'logit', 'ctr/logit', 'txt/logit'} of numpy / tensor inputs."""
    get = lambda k: torch.as_tensor(np.asarray(batch[k])).long()
    meta, cfg = self.meta, self.plm.config
    uses_q, _, kind, ctr_logit, _ = MODES[meta["mode"]]
    q = self.ctr.encode(self.ctr.embed(get("ids"))) if uses_q else None
    prefix = prompts = None
    if kind == "prefix":
      b, n = q.shape[0], cfg.num_attention_heads
      p = self.prompt_generator(q).view(
          b, meta["num_prompt"], 2 * cfg.num_hidden_layers, n,
          cfg.hidden_size // n).permute(2, 0, 3, 1, 4)   # [2L, B, N, K, D]
      prefix = [(p[2 * l], p[2 * l + 1])
                for l in range(cfg.num_hidden_layers)]
      vecs = p.permute(1, 3, 0, 2, 4).reshape(b, -1, cfg.hidden_size)
    elif kind == "prompt":
      prompts = self.prompt_generator(q).view(q.shape[0], meta["num_prompt"],
                                              cfg.hidden_size)
      vecs = prompts
    hidden, mask = self.encode(get("input_ids"), get("attention_mask"),
                               prefix, prompts)
    out = {"txt/logit": self.nlp_head(self.pool(hidden, mask))[:, 0]}
    if ctr_logit:
      usage = meta["prompt_usage"]
      feats = q if usage == "no" else (
          vecs.mean(1) if usage == "avg" else vecs.reshape(vecs.shape[0], -1))
      out["ctr/logit"] = self.ctr_head(feats)[:, 0]
      if meta["weighted_add"]:
        a = (self.alpha if meta["alpha_learnable"]
             else torch.tensor(meta["alpha_init"]))
        out["logit"] = a * out["ctr/logit"] + (1 - a) * out["txt/logit"]
      else:
        out["logit"] = out["ctr/logit"] + out["txt/logit"]
    else:
      out["logit"] = out["txt/logit"]
    return out
